"""``--engine vllm|transformers|auto`` for ``r1reward eval`` and ``r1reward serve``.

vLLM cannot be installed on the CPU build machine, so the vLLM path runs through the stand-in
``vllm`` package of ``tests/test_rollout_vllm.py`` (its ``LLM`` generates with the transformers
model it is handed, one request at a time). Greedy judgments are what the two engines share, so
the evaluator's record files must be byte-identical; the real-vLLM parity test at the end runs
only where vllm and CUDA are present.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_rollout_vllm import fake_vllm  # noqa: F401  (the stand-in vllm package, a fixture)

from r1reward import engines, rollout_vllm
from r1reward import evaluate as ev
from r1reward.data import write_pairs
from r1reward.models import load_model
from r1reward.prompt import build_messages
from r1reward.serve import Engine
from r1reward.toy.tiny_model import build_tiny_model
from r1reward.toy.world import make_pairs

HAS_GPU_VLLM = rollout_vllm.available() and torch.cuda.is_available()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    model = build_tiny_model(root / "tiny", seed=0)
    data = write_pairs(make_pairs(3, split="heldout"), root / "heldout.jsonl")
    return root, model, data


def _eval(model, data, out, engine, *extra):
    argv = [
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--engine",
        engine,
        "--k",
        "1,3",
        "--temperature",
        "0",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "8",
        "--seed",
        "1",
        "--quiet",
        *extra,
    ]
    return ev.main(argv)


# ------------------------------------------------------------------------- engine selection


def test_auto_is_transformers_without_cuda_and_vllm_with_both(fake_vllm, monkeypatch):  # noqa: F811
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engines.resolve_engine("auto") == "transformers"  # vllm importable, no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engines.resolve_engine("auto") == "vllm"
    assert engines.resolve_engine("transformers") == "transformers"
    with pytest.raises(ValueError, match="'sglang'.*auto, transformers, vllm"):
        engines.resolve_engine("sglang")


def test_reserve_gpu_sets_the_vllm_share_unless_the_user_did(monkeypatch):
    monkeypatch.setitem(rollout_vllm.ENGINE_OPTIONS, "gpu_memory_utilization", 0.3)
    monkeypatch.delenv(engines.GPU_SHARE_ENV, raising=False)
    engines.reserve_gpu("transformers", 0.85)
    assert rollout_vllm.ENGINE_OPTIONS["gpu_memory_utilization"] == 0.3
    engines.reserve_gpu("vllm", 0.85)
    assert rollout_vllm.ENGINE_OPTIONS["gpu_memory_utilization"] == 0.85
    monkeypatch.setenv(engines.GPU_SHARE_ENV, "0.5")
    engines.reserve_gpu("vllm", 0.7)
    assert rollout_vllm.ENGINE_OPTIONS["gpu_memory_utilization"] == 0.85  # the env value stands


@pytest.mark.skipif(rollout_vllm.available(), reason="vllm is installed here")
def test_eval_and_serve_with_vllm_missing_fail_in_one_line(setup, capsys):
    root, model, data = setup
    assert _eval(model, data, root / "no-vllm", "vllm") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install vllm" in err and "r1reward eval: error" in err
    from r1reward.serve import main as serve_main

    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--model", str(model), "--engine", "vllm"])
    assert exit_info.value.code == 2
    assert "pip install vllm" in capsys.readouterr().err


# ------------------------------------------------------------------------- eval


def test_eval_records_are_identical_through_vllm_and_transformers(setup, fake_vllm):  # noqa: F811
    root, model, data = setup
    assert _eval(model, data, root / "hf", "transformers") == 0
    assert not fake_vllm.built  # the transformers engine never touches vllm
    assert _eval(model, data, root / "vllm", "vllm") == 0
    (llm,) = fake_vllm.built  # one engine, built from the model folder
    assert llm.kwargs["model"] == str(model)
    assert llm.kwargs["gpu_memory_utilization"] == 0.85  # no --device-map: vLLM gets the GPU
    # 3 pairs x 2 orders, each a greedy judgment and 3 samples (temperature 0: greedy copies)
    assert len(llm.requests) == 3 * 2 * 2
    hf = (root / "hf" / ev.RESULTS_FILE).read_bytes()
    assert hf == (root / "vllm" / ev.RESULTS_FILE).read_bytes()
    assert len(hf.splitlines()) == 3 * 2 * (1 + 3)
    config = json.loads((root / "vllm" / "config.json").read_text())
    assert config["sampler"]["engine"] == "vllm"  # a resume cannot mix engines' samples
    assert "engine" not in json.loads((root / "hf" / "config.json").read_text())["sampler"]


# ------------------------------------------------------------------------- serve


def _convs():
    pairs = make_pairs(2, split="heldout")
    return [build_messages(p.question, p.response_1, p.response_2, images=p.images) for p in pairs]


def test_serve_generates_chat_and_judgments_on_the_chosen_engine(setup, fake_vllm):  # noqa: F811
    _, path, _ = setup
    model, processor = load_model(path)
    convs = _convs()
    kw = dict(batch_size=2, reward_max_tokens=8, seed=0)
    hf = Engine(model, processor, "tiny", engine="transformers", **kw)
    try:
        chat_hf = hf._chat_batch(convs, 2, 0.0, 1.0, 8, seed=3)
        verdicts_hf = hf.verdicts.judge(convs, k=1, greedy=True, seed=3)
        reward_hf = hf.sampler.sample(convs, k=1, greedy=True, seed=3)
    finally:
        hf.close()
    assert not fake_vllm.built
    vl = Engine(model, processor, "tiny", engine="vllm", **kw)
    try:
        chat_vl = vl._chat_batch(convs, 2, 0.0, 1.0, 8, seed=3)
        assert len(fake_vllm.built) == 1
        n_chat = len(fake_vllm.built[0].requests)
        verdicts_vl = vl.verdicts.judge(convs, k=1, greedy=True, seed=3)
        reward_vl = vl.sampler.sample(convs, k=1, greedy=True, seed=3)
    finally:
        vl.close()
    assert n_chat == len(convs)
    assert len(fake_vllm.built[0].requests) == 3 * len(convs)  # chat, verdicts, reward: all vLLM
    assert chat_vl == chat_hf
    assert reward_vl == reward_hf
    assert [[v.text for v in g] for g in verdicts_vl] == [[v.text for v in g] for g in verdicts_hf]
    for a, b in zip(verdicts_vl, verdicts_hf, strict=True):  # same text -> same probabilities
        assert [v.p_first for v in a] == pytest.approx([v.p_first for v in b])


# ------------------------------------------------------------------------- real vLLM


@pytest.mark.skipif(not HAS_GPU_VLLM, reason="needs the vllm package and a CUDA GPU")
def test_real_vllm_eval_matches_transformers_greedy(setup):
    """On a GPU with vLLM: greedy judgments of the tiny model agree between the engines.

    Both load the model in float32 on the GPU; tokens may differ where two logits are within
    float rounding, so the check is on most records, not all.
    """
    root, model, data = setup
    common = ("--k", "1", "--device-map", "cuda:0")
    assert _eval(model, data, root / "gpu-hf", "transformers", *common) == 0
    assert _eval(model, data, root / "gpu-vllm", "vllm", *common) == 0
    hf = ev.load_records(root / "gpu-hf" / ev.RESULTS_FILE)
    vl = ev.load_records(root / "gpu-vllm" / ev.RESULTS_FILE)
    assert len(hf) == len(vl) > 0
    same = sum(a["text"] == b["text"] for a, b in zip(hf, vl, strict=True))
    assert same >= 0.9 * len(hf)
