"""End-to-end: the tiny Qwen2.5-VL model judges toy pairs through ``r1reward eval``."""

from __future__ import annotations

import json

import pytest

from r1reward import evaluate as ev
from r1reward.data import write_pairs
from r1reward.toy.tiny_model import build_tiny_model
from r1reward.toy.world import make_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    model = build_tiny_model(root / "tiny")
    data = write_pairs(make_pairs(2, split="heldout"), root / "heldout.jsonl")
    return root, model, data


def cli(model, data, out, *extra):
    argv = [
        "--model",
        str(model),
        "--data",
        str(data),
        "--k",
        "1,2",
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        "--seed",
        "1",
        "--quiet",
        *extra,
    ]
    return ev.main(argv)


def test_tiny_model_through_the_cli_and_resume_reproduces_the_samples(setup, capsys):
    root, model, data = setup
    out = root / "full"
    assert cli(model, data, out) == 0
    assert "| **overall** | 4 |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"pairs": 2, "units": 4, "samples_per_unit": 2}
    assert summary["sampler"]["sampler"] == "model"
    recs = ev.load_records(out / "results.jsonl")
    assert len(recs) == 4 * 3
    texts = {(r["pair_id"], r["order"], r["sample"]): r["text"] for r in recs}
    assert len(set(texts.values())) > 1  # sampling produced different texts
    # every record's stored verdict is what the parser reads from its text
    from r1reward.prompt import parse_judgment

    assert all(parse_judgment(r["text"]).answer == r["answer"] for r in recs)

    # interrupted run: keep only the first chunk (2 units x 3 judgments), then resume
    cut = root / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((out / "config.json").read_text())
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (cut / "results.jsonl").write_text("".join(lines[:6]) + lines[6][:25])  # + a torn line
    with pytest.warns(UserWarning, match="torn"):
        assert cli(model, data, cut) == 0
    resumed = ev.load_records(cut / "results.jsonl")
    assert len(resumed) == len(recs)
    assert {(r["pair_id"], r["order"], r["sample"]): r["text"] for r in resumed} == texts
    assert json.loads((cut / "summary.json").read_text()) == summary
