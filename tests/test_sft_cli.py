"""``r1reward sft`` / ``scalar`` fail early and clearly, and SFT resumes from its checkpoints:
a missing model or data path is refused before any curation, a used ``--out`` is refused without
``--resume`` / ``--overwrite``, ``--resume`` with nothing to resume is an error, and a resumed run
continues from ``checkpoint-N`` with the resolved recipe saved beside the model."""

from __future__ import annotations

import json

import pytest
import yaml

from r1reward.toy.tiny_model import build_tiny_model
from r1reward.train import scalar, sft


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


def test_paths_and_used_out_are_checked_before_curation(tmp_path, capsys, monkeypatch):
    def no_curation(*a, **k):
        raise AssertionError("curation ran before the checks")

    monkeypatch.setattr("r1reward.curation.curate", no_curation)
    out = str(tmp_path / "out")
    assert sft.main(["--recipe", "toy-ci", "--out", out, "model.path=./no/such/model"]) == 2
    assert "model.path: ./no/such/model: no such model folder" in capsys.readouterr().err
    assert sft.main(["--recipe", "toy-ci", "--out", out, "data.source=missing.jsonl"]) == 2
    assert "data.source: missing.jsonl: no such file" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / sft.SUMMARY_NAME).write_text("{}")
    assert sft.main(["--recipe", "toy-ci", "--out", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert scalar.main(["--recipe", "toy-ci", "--out", out]) == 2  # the same rule for scalar
    assert "--overwrite" in capsys.readouterr().err


def test_resume_continues_from_the_last_checkpoint(tiny, tmp_path, capsys):
    out = tmp_path / "sft"
    common = [
        "--recipe",
        "toy-ci",
        "--out",
        str(out),
        f"model.path={tiny}",
        "data.train_pairs=8",
        "sft.batch_size=4",
        "sft.save_steps=1",
    ]
    assert sft.main([*common, "--resume"]) == 2  # nothing to resume yet
    assert "nothing to resume" in capsys.readouterr().err
    assert sft.main([*common, "sft.max_steps=1", "sft.report_to=[]"]) == 0
    assert (out / "checkpoint-1").is_dir()
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["sft"]["max_steps"] == 1 and saved["model"]["path"] == str(tiny)
    assert sft.main([*common, "sft.max_steps=2"]) == 2  # a used --out without --resume
    capsys.readouterr()
    assert sft.main([*common, "sft.max_steps=2", "--resume"]) == 0
    summary = json.loads((out / sft.SUMMARY_NAME).read_text())
    assert summary["steps"] == 2 and summary["resumed_from"].endswith("checkpoint-1")
    steps = [r["step"] for r in sft.read_log(out) if "loss" in r]
    assert steps == [1, 2]  # step 1 logged by the first run, step 2 by the resumed one
