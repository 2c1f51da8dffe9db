"""Scoring modes (strict / official), prompt styles and one-line CLI errors of ``r1reward eval``,
on fixtures in the published schemas; the official numbers are computed here by hand."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from r1reward import evaluate as ev
from r1reward.data import DataError, load
from r1reward.data.fixtures import write_fixtures
from r1reward.evaluate import cli as eval_cli
from r1reward.prompt import build_prompt


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp("published"))


def scripted(pairs, plan):
    """A judge that behaves per pair as ``plan[index]`` says, in whichever order it is shown:
    right / wrong / one (always '1') / unp (no verdict) / unp-cf (no verdict when the chosen
    response is shown first, else right)."""

    def fn(conv, _sample, _seed):
        text = conv[0]["content"][-1]["text"]
        (i,) = [k for k, p in enumerate(pairs) if p.chosen in text and p.rejected in text]
        chosen_first = text.index(pairs[i].chosen) < text.index(pairs[i].rejected)
        right = 1 if chosen_first else 2
        answer = {
            "right": right,
            "wrong": 3 - right,
            "one": 1,
            "unp": None,
            "unp-cf": None if chosen_first else right,
        }[plan[i]]
        return "no verdict" if answer is None else f"<think>x</think><answer>{answer}</answer>"

    return ev.FunctionSampler(fn, name="scripted")


def run(pairs, plan, out, **kw):
    return ev.evaluate(
        scripted(pairs, plan), pairs, ks=(1,), out_dir=out, progress=False, scoring="official", **kw
    )


def test_vl_rewardbench_official_leaves_unparseable_out_of_the_denominator(fx, tmp_path):
    pairs = load(fx["vl-rewardbench-hub"]["path"])
    # hallucination: RLAIF-V-14, RLHF-V-7, hallucination_pair-1003; reasoning: mathverse_21,
    # mmmu_5; general: wildvision-battle-3, LRVInstruction-...
    plan = ["right", "wrong", "unp", "right", "unp", "wrong", "right"]
    s = run(pairs, plan, tmp_path, orders="chosen-first")
    off = s["official"]["vl-rewardbench"]
    # by hand (cal.py): hallucination 1 right / 2 parsed, reasoning 1/1, general 1/2
    assert off["by_category"]["hallucination"] == {"accuracy": 0.5, "n": 2}
    assert off["by_category"]["reasoning"] == {"accuracy": 1.0, "n": 1}
    assert off["by_category"]["general"] == {"accuracy": 0.5, "n": 2}
    assert off["overall"] == pytest.approx(3 / 5)
    assert off["macro"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert off["unparseable_excluded"] == 2 and off["n"] == 7
    # strict counts the two unparseable judgments as wrong
    assert s["overall"]["greedy"] == pytest.approx(3 / 7)
    assert s["scoring"] == "official" and s["orders"] == "chosen-first"
    md = (tmp_path / "summary.md").read_text()
    assert "Scoring: **official**" in md and "Scoring: **strict** in this table" in md
    assert "| vl-rewardbench | **overall** | 7 | 60.00 | - |" in md
    assert "chosen-first (the paper's protocol" in md
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["official"] == s["official"] and saved["scoring"] == "official"


def test_mm_rlhf_official_accuracy_and_acc_plus_per_category(fx, tmp_path):
    pairs = load(fx["mm-rlhf-rewardbench"]["path"])
    assert [p.category for p in pairs] == ["mcq", "mcq", "long", "short", "short", "safety"] + [
        "video"
    ] * 2
    plan = ["right", "wrong", "right", "right", "right", "unp", "right", "right"]
    off = run(pairs, plan, tmp_path, orders="chosen-first")["official"]["mm-rlhf-rewardbench"]
    # by hand (get_acc.py): 6 of 8 right (unparseable is wrong); groups right: long, short, video
    assert off["overall"] == pytest.approx(6 / 8)
    assert off["acc_plus"] == pytest.approx(3 / 5) and off["n_groups"] == 5
    cats = off["by_category"]
    assert cats["mcq"] == {"accuracy": 0.5, "acc_plus": 0.0, "n": 2, "n_groups": 1}
    assert cats["short"] == {"accuracy": 1.0, "acc_plus": 1.0, "n": 2, "n_groups": 1}
    assert cats["safety"] == {"accuracy": 0.0, "acc_plus": 0.0, "n": 1, "n_groups": 1}
    assert cats["video"]["acc_plus"] == 1.0
    assert off["unparseable_counted_wrong"] == 1


def test_multimodal_rewardbench_official_flips_a_seeded_coin_for_unparseable(fx, tmp_path):
    pairs = load(fx["multimodal-rewardbench"]["path"])
    plan = ["unp", "right", "unp", "one", "unp-cf", "wrong", "right"]
    s = run(pairs, plan, tmp_path, orders="both")
    off = s["official"]["multimodal-rewardbench"]
    # random.seed(123): the five unparseable units, in unit order (pair, then chosen-first /
    # chosen-second), draw 0.052 -> 1, 0.087 -> 1, 0.407 -> 1, 0.108 -> 1, 0.901 -> 2
    rng = random.Random(123)
    assert [round(rng.random(), 3) for _ in range(5)] == [0.052, 0.087, 0.407, 0.108, 0.901]
    # p0: cf right (1), cs wrong (1); p1: 2 right; p2: cf right, cs wrong; p3 ('1'): cf right;
    # p4: cf flip 2 = wrong, cs right; p5: 0; p6: 2  -> 8 right of 14
    assert off["unparseable_coin_flips"] == 5
    assert off["overall"] == pytest.approx(8 / 14)
    assert off["by_category"]["safety/bias"] == {"accuracy": 0.5, "n": 2}
    assert off["by_category"]["correctness"] == {"accuracy": 0.5, "n": 2}
    assert off["by_category"]["knowledge"] == {"accuracy": 1.0, "n": 2}
    assert s["overall"]["greedy"] == pytest.approx(6 / 14)  # strict: unparseable is wrong


def test_sources_without_an_official_script_say_so(tmp_path, fx):
    info = fx["r1-reward-rl"]
    pairs = load(info["path"], image_root=info["image_root"])
    s = run(pairs, ["right"] * len(pairs), tmp_path)
    assert s["official"] == {
        "r1-reward-rl": {"script": None, "note": "no official script for 'r1-reward-rl' pairs"}
    }


def test_default_strict_run_keeps_its_config_and_records(tmp_path, fx):
    """Strict with the paper prompt writes the same config keys as before (old folders resume)."""
    pairs = load(fx["vl-rewardbench"]["path"])
    ev.evaluate(ev.ConstantSampler(), pairs, ks=(1,), out_dir=tmp_path, progress=False)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config) == {
        "samples_per_unit",
        "orders",
        "seed",
        "batch_size",
        "video_frames",
        "sampler",
    }
    rec = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert set(rec) == {"pair_id", "order", "category", "sample", "answer", "correct"} | {
        "well_formed",
        "text",
    }
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scoring"] == "strict" and "official" not in summary
    assert summary["prompt_style"] == "paper"


# ----------------------------------------------------------------------------- the CLI


class _Recorder:
    """Stands in for ModelSampler: records the prompt texts, always answers '1'."""

    prompts: list[str] = []

    def __init__(self, *_a, **_kw) -> None:
        pass

    def sample(self, conversations, *, k, greedy, seed=None):
        for conv in conversations:
            _Recorder.prompts.append(conv[0]["content"][-1]["text"])
        return [[ev.ALWAYS_ONE] * (1 if greedy else k) for _ in conversations]

    def describe(self):
        return {"sampler": "recorder"}


@pytest.fixture()
def no_model(monkeypatch):
    """``--model NAME`` loads nothing: load_model returns placeholders, generation is recorded."""
    monkeypatch.setattr(eval_cli, "load_model", lambda name, **kw: (None, None))
    monkeypatch.setattr(eval_cli, "ModelSampler", _Recorder)
    _Recorder.prompts = []
    return _Recorder


def test_released_checkpoint_gets_the_released_layout_by_name(fx, tmp_path, no_model, capsys):
    data = str(fx["vl-rewardbench"]["path"])
    out = tmp_path / "r1"
    argv = ["--model", "yifanzhang114/R1-Reward", "--data", data, "--k", "1", "--quiet"]
    assert ev.main([*argv, "--out", str(out), "--limit", "1"]) == 0
    pair = load(data)[0]
    first = build_prompt(pair.question, pair.chosen, pair.rejected, style="released")
    assert no_model.prompts[0] == first
    assert json.loads((out / "summary.json").read_text())["prompt_style"] == "released"
    assert "prompt style 'released'" in capsys.readouterr().err
    # another model keeps the paper's layout; --prompt-style overrides
    no_model.prompts = []
    argv2 = ["--model", "some/other", "--data", data, "--k", "1", "--quiet", "--limit", "1"]
    assert ev.main([*argv2, "--out", str(tmp_path / "o")]) == 0
    assert no_model.prompts[0] == build_prompt(pair.question, pair.chosen, pair.rejected)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_non_zero_and_keeps_what_out_holds(fx, tmp_path, no_model, capsys):
    src = Path(fx["vl-rewardbench-github"]["path"])
    data = tmp_path / "vl"
    shutil.copytree(src.parent, data)
    (data / "images" / "reasoning_tasks" / "mmmu_5.jpg").unlink()  # the 5th pair's image
    out = tmp_path / "out"
    argv = ["--model", "m", "--data", str(data / "data.jsonl"), "--k", "1", "--quiet"]
    argv += ["--batch-size", "2", "--out", str(out)]
    assert ev.main(argv) == 2
    err = _one_line_error(capsys)
    assert "data.jsonl, line 5, id 'mmmu_5': image file not found" in err
    kept = (out / "results.jsonl").read_text()
    assert len(kept.splitlines()) == 2 * 4 * 2  # 4 pairs x 2 orders x (greedy + 1 sample)
    assert ev.main(argv) == 2  # again: the same line, and nothing written is lost
    _one_line_error(capsys)
    assert (out / "results.jsonl").read_text() == kept
    with pytest.raises(DataError, match="mmmu_5"):
        ev.main([*argv, "--debug"])

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"a": 1}\n')
    broken = tmp_path / "broken.jsonl"
    lines = (src).read_text().splitlines()
    broken.write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    cases = {
        empty: "empty.jsonl: no records",
        unknown: "unknown.jsonl: cannot tell the format",
        broken: "broken.jsonl, line 2: malformed JSON",
        tmp_path / "missing.jsonl": "missing.jsonl: file not found",
    }
    for path, expected in cases.items():
        code = ev.main(["--model", "const:1", "--data", str(path), "--out", str(out), "--quiet"])
        assert code == 2
        assert expected in _one_line_error(capsys)
    assert (out / "results.jsonl").read_text() == kept


def test_help_examples_run_as_printed(tmp_path, monkeypatch, capsys):
    """Every ``r1reward eval`` example of ``--help`` parses; those that need no model folder run
    as printed after the ``r1reward toy`` example (the tiny-model ones: test_evaluate_e2e)."""
    import shlex

    from r1reward.toy import cli as toy_cli

    epilog = ev.build_parser().epilog
    lines = [ln.strip() for ln in epilog.splitlines() if ln.strip().startswith("r1reward ")]
    assert lines[0].startswith("r1reward toy ") and any("--model tiny" in ln for ln in lines)
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line)[2:]
        if line.startswith("r1reward toy "):
            assert toy_cli.main(argv) == 0
        elif line.startswith("r1reward eval "):
            ev.build_parser().parse_args(argv)
            if "const:" in line:
                assert ev.main(argv) == 0, line
    capsys.readouterr()
    paper = json.loads((tmp_path / "runs/const-paper/summary.json").read_text())
    both = json.loads((tmp_path / "runs/const/summary.json").read_text())
    assert paper["overall"]["greedy"] == 1.0 and both["overall"]["greedy"] == 0.5


def test_a_missing_video_names_file_line_and_id(fx, tmp_path):
    src = Path(fx["mm-rlhf-rewardbench"]["path"]).parent
    data = tmp_path / "mm"
    shutil.copytree(src, data)
    text = (data / "mm_rlhf_rewardbench.jsonl").read_text().replace(str(src), str(data))
    (data / "mm_rlhf_rewardbench.jsonl").write_text(text)
    shutil.rmtree(data / "mm_rlhf_media" / "video")
    pairs = load(data / "mm_rlhf_rewardbench.jsonl")
    with pytest.raises(
        DataError, match=r"mm_rlhf_rewardbench\.jsonl, line 7, id '400042_6205145#0'"
    ):
        run(pairs, ["right"] * len(pairs), tmp_path / "out", orders="chosen-first", batch_size=2)
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 6 * 2
