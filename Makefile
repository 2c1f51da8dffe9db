# r1reward: the two commands a newcomer runs are `make book` and `make test`.
# Both do all set-up on a fresh machine: a .venv, torch (CPU 2.13.0 unless TORCH_SPEC says
# otherwise or a torch is already importable in the venv), the package with its extras, and the
# book's offline assets (plotly.js, MathJax, the ipywidgets manager) from the installed packages
# and the npm registry.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?=
EXTRAS ?= book,dev
STAMP := $(VENV)/.r1reward-installed
JOBS ?= 2

.PHONY: help install test test-unit test-notebooks test-book book clean lint

help:
	@echo "make book   install everything, execute every chapter on the toy model (cpu profile), build _build/html"
	@echo "make test   install everything, run pytest, the notebooks (ci profile, nbmake) and the book build with -W"
	@echo "make lint   ruff check"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then \
	  echo "installing $(TORCH_SPEC) (from TORCH_SPEC)"; $(PY) -m pip install -q "$(TORCH_SPEC)"; \
	elif $(PY) -c "import torch" 2>/dev/null; then \
	  echo "torch already importable: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "installing torch==2.13.0 (CPU) first"; $(PY) -m pip install -q "torch==2.13.0"; \
	fi
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .

test-unit: install
	$(PY) -m pytest -q tests

test-notebooks: install
	R1REWARD_PROFILE=ci $(PY) -m pytest -q --nbmake notebooks

test: test-unit test-notebooks

book: install

clean:
	rm -rf _build
