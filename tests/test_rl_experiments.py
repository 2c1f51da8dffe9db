"""The book's seeded RL grids (r1reward.chapters.experiments): runs side by side in worker
processes equal the same runs one after the other, and a finished run is reused only while its
resolved recipe is unchanged."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml

from r1reward.chapters import experiments as rx
from r1reward.train.rl import read_metrics

VOLATILE = {"seconds", "samples_per_s"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


def _write_recipe(path, tiny, lr: float) -> str:
    recipe = {
        "name": "grid-test",
        "model": {"path": str(tiny), "dtype": "float32", "lora": None, "quantization": None},
        "data": {"source": "toy", "train_pairs": 8, "seed": 0, "image_size": 56},
        "rl": {
            "algo": "stable-reinforce",
            "steps": 2,
            "prompts_per_step": 2,
            "mini_batch_size": 2,
            "micro_batch_size": 1,
            "ppo_epochs": 1,
            "lr": lr,
            "max_new_tokens": 8,
            "rollout_batch_size": 2,
            "save_every": 0,
            "seed": 0,
            "progress": True,
            "init_model": None,
            "pre_clip": None,
            "advantage_filter": None,
        },
    }
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _metrics(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_metrics(run)]


def test_parallel_grid_equals_serial_and_reuses_finished_runs(tiny, tmp_path):
    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny, lr=1e-3)
    jobs = (["stable-reinforce", "reinforce++"], [0])
    serial = rx.run_grid(recipe, *jobs, tmp_path / "serial", init_model=tiny)
    parallel = rx.run_grid(recipe, *jobs, tmp_path / "parallel", init_model=tiny, workers=2)
    assert list(serial) == list(parallel) == [("stable-reinforce", 0), ("reinforce++", 0)]
    for key in serial:
        a, b = _metrics(serial[key]), _metrics(parallel[key])
        assert len(a) == 2 and a == b, key
    assert _metrics(serial[("stable-reinforce", 0)]) != _metrics(serial[("reinforce++", 0)])

    # a finished run with the same resolved recipe is returned as it is ...
    log = parallel[("reinforce++", 0)] / "metrics.jsonl"
    before = log.stat().st_mtime_ns
    again = rx.run_grid(recipe, ["reinforce++"], [0], tmp_path / "parallel", init_model=tiny)
    assert again[("reinforce++", 0)] == parallel[("reinforce++", 0)]
    assert log.stat().st_mtime_ns == before
    # ... but editing the recipe file (same name, same overrides) trains it again
    _write_recipe(tmp_path / "recipe.yaml", tiny, lr=2e-3)
    rx.run_grid(recipe, ["reinforce++"], [0], tmp_path / "parallel", init_model=tiny)
    stamp = json.loads((parallel[("reinforce++", 0)] / "variant.json").read_text())
    assert stamp["resolved"]["rl"]["lr"] == 2e-3
    assert log.stat().st_mtime_ns != before


def test_workers_must_be_positive(tiny, tmp_path):
    with pytest.raises(ValueError, match="workers=0"):
        rx.run_grid(
            _write_recipe(tmp_path / "r.yaml", tiny, 1e-3),
            ["reinforce++"],
            [0],
            tmp_path / "runs",
            init_model=tiny,
            workers=0,
        )


def test_accuracy_by_groups_greedy_judgments(tmp_path):
    from r1reward.toy.world import make_pairs

    pairs = make_pairs(3, split="heldout")
    rows = []
    for p, verdicts in zip(pairs, [(True, True), (True, False), (False, False)]):
        for order, ok in zip(("chosen-first", "chosen-second"), verdicts):
            rows.append({"pair_id": p.id, "order": order, "sample": "greedy", "correct": ok})
            rows.append({"pair_id": p.id, "order": order, "sample": 0, "correct": not ok})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    by_pair = {p.id: ok for p, ok in zip(pairs, (1.0, 0.5, 0.0))}
    for key in ("difficulty", "task"):
        got = rx.accuracy_by(tmp_path, pairs, key)
        assert sum(n for _, n in got.values()) == 6
        for value, (acc, n) in got.items():
            members = [p for p in pairs if (getattr(p, key, None) or p.meta[key]) == value]
            assert n == 2 * len(members)
            assert acc == pytest.approx(sum(by_pair[p.id] for p in members) / len(members))
    both = rx.accuracy_by(tmp_path, pairs, ("task", "difficulty"))
    for (task, level), (acc, n) in both.items():
        members = [p for p in pairs if p.meta["task"] == task and p.difficulty == level]
        assert n == 2 * len(members)
        assert acc == pytest.approx(sum(by_pair[p.id] for p in members) / len(members))
    assert sum(n for _, n in both.values()) == 6
    with pytest.raises(ValueError, match="no greedy judgment"):
        rx.accuracy_by(tmp_path, make_pairs(1, split="train"), "difficulty")


def test_analysis_breakdown_checks_each_judgment_in_its_order(tmp_path):
    from r1reward.toy import world as toy

    pairs = toy.make_pairs(2, split="heldout")
    rows = []
    for p in pairs:
        for order in ("chosen-first", "chosen-second"):
            shown_right = 1 if order == "chosen-first" else 2
            # the analysis of the pair as shown: the right one in one order, a wrong one in the other
            r1, r2 = (p.chosen, p.rejected) if order == "chosen-first" else (p.rejected, p.chosen)
            q = dataclasses.replace(p, response_1=r1, response_2=r2, preferred=shown_right)
            verdict = shown_right if order == "chosen-first" else 3 - shown_right
            text = f"<think>{toy.teacher_analysis(q, verdict)}</think><answer>{verdict}</answer>"
            rows.append({"pair_id": p.id, "order": order, "sample": "greedy", "text": text})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = rx.analysis_breakdown(tmp_path, pairs)
    # every analysis is the teacher's, so its steps follow; half argue for the wrong response
    assert got == {
        "observation_right": 0.5,
        "marks_follow_observation": 1.0,
        "verdict_follows_marks": 1.0,
        "accuracy": 0.5,
        "n": 4,
    }
    with pytest.raises(ValueError, match="no greedy judgment"):
        rx.analysis_breakdown(tmp_path, toy.make_pairs(1, split="train"))


def test_evaluate_runs_keeps_each_pair_set_in_its_own_folder(tiny, tmp_path):
    from r1reward.evaluate import load_records
    from r1reward.toy.world import make_pairs

    recipe = _write_recipe(tmp_path / "recipe.yaml", tiny, lr=1e-3)
    runs = rx.run_grid(recipe, ["stable-reinforce"], [0], tmp_path / "runs", init_model=tiny)
    stream = make_pairs(4, split="heldout")
    first, fresh = stream[:2], stream[2:]
    a = rx.evaluate_runs(runs, first, max_new_tokens=8)
    b = rx.evaluate_runs(runs, fresh, max_new_tokens=8, tag="fresh")
    run = runs[("stable-reinforce", 0)]
    for folder, pairs in ((run / "heldout-2", first), (run / "fresh-2", fresh)):
        seen = {r["pair_id"] for r in load_records(folder / "results.jsonl")}
        assert seen == {p.id for p in pairs}
    assert [r["seed"] for r in a + b] == [0, 0]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in a + b)


def test_heldout_accuracy_remakes_a_cached_evaluation_made_with_other_settings(tiny, tmp_path):
    """A chapter's cached evaluation folder made with other settings (here: another batch size,
    as after an upgrade) is evaluated anew instead of failing the chapter, greedy only by default."""
    from r1reward.evaluate import load_records
    from r1reward.toy.world import make_pairs

    pairs = make_pairs(2, split="heldout")
    first = rx.heldout_accuracy(tiny, pairs, tmp_path / "eval", max_new_tokens=8, batch_size=4)
    again = rx.heldout_accuracy(tiny, pairs, tmp_path / "eval", max_new_tokens=8, batch_size=2)
    config = json.loads((tmp_path / "eval" / "config.json").read_text())
    assert config["batch_size"] == 2 and config["samples_per_unit"] == 0
    assert {r["sample"] for r in load_records(tmp_path / "eval" / "results.jsonl")} == {"greedy"}
    assert again["accuracy"] == first["accuracy"] and math.isnan(again["sampled_accuracy"])


def test_voting_eval_draws_the_same_samples_anywhere_and_reads_them_back(
    tiny, tmp_path, monkeypatch
):
    """Chapters 6 and 11 share one Voting@K evaluation (chapter 11 reads chapter 6's folder):
    that is only sound if the call is deterministic and a finished folder is read, not redrawn."""
    from r1reward.chapters import artifacts
    from r1reward.toy.world import make_pairs

    pairs = make_pairs(2, seed=0, split="heldout")
    first = rx.voting_eval(tiny, pairs, tmp_path / "a", k_max=6, max_new_tokens=6, progress=False)
    again = rx.voting_eval(tiny, pairs, tmp_path / "b", k_max=6, max_new_tokens=6, progress=False)
    records = (tmp_path / "a" / "results.jsonl").read_text()
    assert records == (tmp_path / "b" / "results.jsonl").read_text()
    assert first == again
    assert len(records.splitlines()) == 2 * 2 * (1 + 6)  # pairs x orders x (greedy + k_max)
    # a finished folder is read back: its records are neither redrawn nor appended to
    before = (tmp_path / "a" / "results.jsonl").stat().st_mtime_ns
    assert rx.voting_eval(tiny, pairs, tmp_path / "a", k_max=6, max_new_tokens=6) == first
    assert (tmp_path / "a" / "results.jsonl").stat().st_mtime_ns == before
    assert (tmp_path / "a" / "results.jsonl").read_text() == records

    monkeypatch.setenv("R1REWARD_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = artifacts.voting_dir("ci", tmp_path / "sft-abc", 8)
    assert folder == tmp_path / "artifacts" / "ci" / "rl-runs" / "sft-abc-voting-8"
