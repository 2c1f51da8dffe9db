"""Two-process SFT on CPU (torch.distributed over gloo, launched like ``accelerate launch`` /
``torchrun``): curation runs once, the model is saved once through the trainer's accelerator, and
it equals what one process saves when it holds the whole global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from r1reward.models import build_tiny_model, load_model
from r1reward.recipes import load_recipe
from r1reward.train import sft


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


def _recipe(tiny, batch_size: int) -> dict:
    return load_recipe("toy-ci", [f"model.path={tiny}", "data.train_pairs=8", "sft.max_steps=2",
                                  f"sft.batch_size={batch_size}", "sft.lr=1e-2",
                                  "sft.logging_steps=1"])


def test_two_processes_save_what_one_process_saves(tiny, tmp_path):
    # one process, global batch 4
    one = tmp_path / "one"
    sft.train_sft(_recipe(tiny, 4), out_dir=one)
    # two processes, 2 each: the same global batch
    yml = tmp_path / "two.yaml"
    yml.write_text(yaml.safe_dump(_recipe(tiny, 2)))
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "r1reward.cli", "sft", "--recipe", str(yml),
           "--out", str(two)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((two / sft.SUMMARY_NAME).read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    # curated once: one record per pair (a second curator would have appended its own)
    lines = (two / "curated.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(x)["id"] for x in lines})
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    base = {k.replace("model.language_model.", "model."): v  # the saved names of the text model
            for k, v in load_file(str(tiny / "model.safetensors")).items()}
    moved = [k for k in a if k in base and not torch.equal(a[k], base[k])]
    assert moved  # training did change the weights, so the equality is not trivial
    model, _ = load_model(two)  # the saved folder loads as a model
    assert sum(p.numel() for p in model.parameters()) > 0
