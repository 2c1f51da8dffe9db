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
# Processes for the unit tests (pytest-xdist; each test file stays in one process, so its
# module fixtures are built once; every process runs torch on one thread, tests/conftest.py).
JOBS ?= 2

JB := $(VENV)/bin/jupyter-book
# Warnings are errors (-W), broken references too (-n); --keep-going reports them all first.
BOOK_FLAGS := --all -W -n --keep-going
# The ci-profile book goes to its own output folder, so ci-profile outputs never end up in the
# cpu-profile book of `make book` (nor, with execute_notebooks: cache, in its execution cache,
# which lives under the output folder).
CI_BOOK := _build/ci
# The ci book is built from a copy of the book's sources (CI_SRC, git-ignored; not under _build/,
# where nbmake collects nothing) whose notebooks test-notebooks executed (nbmake --overwrite writes
# the outputs into the copy, never into notebooks/), left unexecuted by the build: make test runs
# each ci chapter once instead of twice.
CI_SRC := ci-book

.PHONY: help install vendor chromium ci-src test test-unit test-notebooks test-notebooks-gpu test-book \
	test-browser book clean lint lab

help:
	@echo "make book   install everything, execute every chapter on the toy model (cpu profile), build _build/html"
	@echo "make test   install everything, run pytest, the notebooks (ci profile and the gpu profile on the tiny"
	@echo "            stand-in, nbmake), the book build with -W from the chapters nbmake executed"
	@echo "            (ci profile, into $(CI_BOOK)) and the headless-Chromium test of the built pages"
	@echo "make lint   ruff check and ruff format --check (part of make test)"
	@echo "make lab    JupyterLab on notebooks/ with the widgets extension (PROFILE=cpu; gpu on a workstation)"

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

# Lint and format (ruff format is the house style; CI fails on an unformatted file).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# JupyterLab on the chapters, with R1REWARD_PROFILE set for every kernel it starts (cpu by
# default; `make lab PROFILE=gpu` on a workstation). Installs the `lab` extra on first use and
# lists the lab extensions first, so the widgets extension (jupyterlab_widgets) is seen to be there.
PROFILE ?= cpu
LAB_FLAGS ?=
lab: install
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -q -e ".[lab]"
	$(VENV)/bin/jupyter labextension list
	R1REWARD_PROFILE=$(PROFILE) $(VENV)/bin/jupyter lab --notebook-dir=notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_FLAGS)

# plotly.js (from the installed plotly), MathJax 3, RequireJS and the ipywidgets HTML manager
# (from the npm registry, pinned) into book/_static/vendor/; idempotent.
vendor: install
	$(PY) tools/vendor_assets.py

# Debian's chromium for the browser test (no browser download); skipped where it is installed.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  echo "chromium: $$(command -v chromium || command -v chromium-browser)"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	elif command -v sudo >/dev/null 2>&1; then \
	  sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
	  echo "chromium is not installed and apt-get needs root: the browser test will be skipped"; \
	fi

test-unit: install
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile -m "not browser" tests

# A fresh copy of the book's sources; its _config.yml leaves the chapters (notebooks/) as nbmake
# executed them and still executes the Markdown pages with code cells (book/full_scale.md).
ci-src: vendor
	rm -rf $(CI_SRC) && mkdir -p $(CI_SRC)
	cp -r _config.yml _toc.yml book notebooks $(CI_SRC)/
	sed -i 's/^  execute_notebooks: cache$$/&\n  exclude_patterns: ["notebooks\/*"]/' $(CI_SRC)/_config.yml
	grep -q '^  exclude_patterns: \["notebooks/\*"\]$$' $(CI_SRC)/_config.yml

test-notebooks: ci-src
	R1REWARD_PROFILE=ci $(PY) -m pytest -q --nbmake --overwrite $(CI_SRC)/notebooks

# Every chapter's `gpu` branch, on CPU: R1REWARD_GPU_STANDIN=tiny gives the gpu profile the tiny
# model with the ci recipe and the ci artifacts (r1reward.profile.gpu_standin), so after
# test-notebooks this mostly reads caches and runs only what the gpu branches size differently.
test-notebooks-gpu: install
	R1REWARD_PROFILE=gpu R1REWARD_GPU_STANDIN=tiny $(PY) -m pytest -q --nbmake notebooks

test-book: test-notebooks
	R1REWARD_PROFILE=ci $(JB) build $(CI_SRC) $(BOOK_FLAGS) --path-output $(CI_BOOK)

test-browser: test-book chromium
	R1REWARD_BOOK_HTML=$(CI_BOOK)/_build/html $(PY) -m pytest -q -m browser tests/test_book_browser.py

test: lint test-unit test-notebooks test-notebooks-gpu test-book test-browser

book: vendor
	R1REWARD_PROFILE=cpu $(JB) build . $(BOOK_FLAGS)
	@echo "The book: _build/html/index.html"

clean:
	rm -rf _build $(CI_SRC)
