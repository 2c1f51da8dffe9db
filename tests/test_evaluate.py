"""Tests for r1reward.evaluate: orders, voting rules, metrics, resumable results, CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1reward import evaluate as ev
from r1reward.data import PreferencePair

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def make_pairs(n: int, *, categories=("general", "hallucination", "reasoning"), groups=None):
    """Text-only pairs whose good response contains 'GOOD'; preferred alternates 1/2."""
    pairs = []
    for i in range(n):
        good, bad = f"GOOD answer {i}", f"bad answer {i}"
        preferred = 1 + (i % 2)
        r1, r2 = (good, bad) if preferred == 1 else (bad, good)
        meta = {"group": groups[i]} if groups else {}
        pairs.append(
            PreferencePair(
                id=f"p{i:03d}",
                question=f"question {i}?",
                response_1=r1,
                response_2=r2,
                preferred=preferred,
                category=categories[i % len(categories)],
                meta=meta,
            )
        )
    return pairs


def shown(conv) -> tuple[str, str]:
    """(Response 1, Response 2) as displayed in a Table-1 prompt."""
    text = conv[0]["content"][-1]["text"]
    r1 = text.split("###### [Response 1]:\n", 1)[1].split("\n###### [Response 2]:", 1)[0]
    r2 = text.split("###### [Response 2]:\n", 1)[1].split("\n###### **Output", 1)[0]
    return r1, r2


def answer(n: int | None) -> str:
    if n is None:
        return "I cannot decide."
    return f"<think>Response {n} is better.</think><answer>{n}</answer>"


def noisy_judge(conv, index, seed) -> str:
    """Deterministic per (prompt, sample, seed): right 60 %, wrong 30 %, unparseable 10 %."""
    r1, r2 = shown(conv)
    right = 1 if "GOOD" in r1 else 2
    h = hashlib.sha256(f"{r1}|{r2}|{index}|{seed}".encode()).digest()[0] % 10
    if h < 6:
        return answer(right)
    if h < 9:
        return answer(3 - right)
    return answer(None)


def record(pid, order, sample, ans, category="c", group=None):
    rec = {"pair_id": pid, "order": order, "sample": sample, "answer": ans, "category": category}
    if group is not None:
        rec["group"] = group
    return rec


def unit_records(pid, order, greedy, samples, **kw):
    out = [record(pid, order, "greedy", greedy, **kw)]
    out += [record(pid, order, i, a, **kw) for i, a in enumerate(samples)]
    return out


CF, CS = ev.CHOSEN_FIRST, ev.CHOSEN_SECOND


# ------------------------------------------------------------------------------------------
# voting and deterministic rules
# ------------------------------------------------------------------------------------------


def test_vote_majority_ignores_unparseable():
    assert ev.vote([1, 1, 2]) == (1, False)
    assert ev.vote([2, None, None, 2, 1]) == (2, False)
    assert ev.vote([None, None]) == (None, False)
    assert ev.vote([]) == (None, False)


def test_vote_tie_is_flagged_and_broken_only_when_asked():
    assert ev.vote([1, 2]) == (None, True)
    assert ev.vote([1, 2, None], tiebreak=2) == (2, True)
    assert ev.vote([1, 2], tiebreak=1) == (1, True)
    # no parseable vote is not a tie, and the tiebreak does not apply
    assert ev.vote([None], tiebreak=1) == (None, False)


def test_hash_verdict_and_random_orders_are_deterministic_and_mixed():
    ids = [f"id{i}" for i in range(200)]
    firsts = [ev.unit_orders(i, "random", seed=0) for i in ids]
    assert firsts == [ev.unit_orders(i, "random", seed=0) for i in ids]
    n_first = sum(o == (CF,) for o in firsts)
    assert 60 < n_first < 140  # both layouts occur
    assert {ev.hash_verdict(i) for i in ids} == {1, 2}
    assert ev.unit_orders("x", "both") == (CF, CS)
    assert ev.unit_orders("x", "chosen-first") == (CF,)
    with pytest.raises(ValueError, match="orders must be one of"):
        ev.unit_orders("x", "chosen-last")


# ------------------------------------------------------------------------------------------
# the always-"1" judge exposes the reference's layout
# ------------------------------------------------------------------------------------------


def test_always_one_scores_100_chosen_first_and_50_in_both_orders(tmp_path):
    pairs = make_pairs(12)
    s_cf = ev.evaluate(
        ev.ConstantSampler(),
        pairs,
        ks=(1, 5),
        orders="chosen-first",
        out_dir=tmp_path / "cf",
        progress=False,
    )
    assert s_cf["overall"]["greedy"] == 1.0
    assert s_cf["overall"]["voting@5"] == 1.0
    assert s_cf["counts"]["units"] == 12

    s_both = ev.evaluate(
        ev.ConstantSampler(),
        pairs,
        ks=(1, 5),
        orders="both",
        out_dir=tmp_path / "both",
        progress=False,
    )
    assert s_both["counts"] == {"pairs": 12, "units": 24, "samples_per_unit": 5}
    for name in ("greedy", "voting@1", "voting@5", "any@5"):
        assert s_both["overall"][name] == 0.5
    assert s_both["position_bias"]["greedy"] == 1.0
    assert s_both["position_bias"]["samples"] == 1.0
    assert s_both["swap_consistency"]["greedy"] == 0.0
    assert s_both["well_formed"] == {"greedy": 1.0, "samples": 1.0}
    assert s_both["by_order"][CF]["greedy"] == 1.0
    assert s_both["by_order"][CS]["greedy"] == 0.0
    md = (tmp_path / "both" / "summary.md").read_text()
    assert "| **overall** | 24 | 50.00 |" in md
    assert json.loads((tmp_path / "both" / "summary.json").read_text()) == s_both

    s_rand = ev.evaluate(
        ev.ConstantSampler(),
        pairs,
        ks=(1,),
        orders="random",
        out_dir=tmp_path / "rand",
        progress=False,
    )
    n_first = sum(ev.unit_orders(p.id, "random") == (CF,) for p in pairs)
    assert s_rand["overall"]["greedy"] == pytest.approx(n_first / 12)


def test_a_judge_that_reads_the_responses_is_consistent(tmp_path):
    def oracle(conv, index, seed):
        r1, _ = shown(conv)
        return answer(1 if "GOOD" in r1 else 2)

    s = ev.evaluate(
        ev.FunctionSampler(oracle), make_pairs(6), ks=(1, 3), out_dir=tmp_path, progress=False
    )
    assert s["overall"]["greedy"] == 1.0
    assert s["position_bias"]["greedy"] == 0.5
    assert s["swap_consistency"]["greedy"] == 1.0
    assert s["swap_consistency"]["greedy_both_right"] == 1.0


def test_no_ks_draws_only_the_greedy_judgment(tmp_path):
    calls = []

    def oracle(conv, index, seed):
        calls.append(seed)
        r1, _ = shown(conv)
        return answer(1 if "GOOD" in r1 else 2)

    s = ev.evaluate(
        ev.FunctionSampler(oracle), make_pairs(4), ks=(), out_dir=tmp_path, progress=False
    )
    recs = ev.load_records(tmp_path / ev.RESULTS_FILE)
    assert {r["sample"] for r in recs} == {ev.GREEDY} and len(recs) == 8  # 4 pairs x 2 orders
    assert len(calls) == 8  # nothing sampled beside the greedy judgments
    assert s["overall"]["greedy"] == 1.0 and not any(k.startswith("voting@") for k in s["overall"])


# ------------------------------------------------------------------------------------------
# metrics from records
# ------------------------------------------------------------------------------------------


def test_voting_tie_broken_by_greedy_then_by_hash_and_counted():
    recs = []
    # unit A: samples tie 1-1, greedy right (1 in chosen-first) -> vote right
    recs += unit_records("a", CF, 1, [1, 2])
    # unit B: samples tie, greedy wrong -> vote wrong
    recs += unit_records("b", CF, 2, [2, 1])
    # unit C: samples tie, greedy unparseable -> hash rule
    recs += unit_records("c", CF, None, [1, 2])
    s = ev.summarize(recs, ks=(1, 2))
    assert s["ties"] == {"voting@1": 0, "voting@2": 3}
    hashed_right = ev.hash_verdict(f"c|{CF}") == 1
    assert s["overall"]["voting@2"] == pytest.approx((1 + 0 + hashed_right) / 3)
    assert s["overall"]["greedy"] == pytest.approx(1 / 3)
    # voting@1 is the first sample alone
    assert s["overall"]["voting@1"] == pytest.approx(2 / 3)


def test_any_correct_and_unparseable_counted_as_wrong():
    recs = []
    recs += unit_records("a", CS, None, [None, None, 2])  # right answer is 2
    recs += unit_records("b", CS, 1, [1, 1, 1])
    recs += unit_records("c", CS, None, [None, None, None])
    s = ev.summarize(recs, ks=(1, 3))
    assert s["overall"]["greedy"] == 0.0  # unparseable greedy is wrong, not "2"
    assert s["overall"]["any@1"] == 0.0
    assert s["overall"]["any@3"] == pytest.approx(1 / 3)
    assert s["overall"]["voting@3"] == pytest.approx(1 / 3)  # a: single parseable vote says 2
    assert s["unparseable"]["greedy"] == pytest.approx(2 / 3)
    assert s["unparseable"]["greedy_count"] == 2
    assert s["unparseable"]["samples_count"] == 5
    assert s["unparseable"]["samples"] == pytest.approx(5 / 9)
    # position bias only counts parseable verdicts: greedy had one "1"
    assert s["position_bias"]["greedy"] == 1.0
    assert s["position_bias"]["samples"] == pytest.approx(3 / 4)


def test_category_macro_differs_from_micro():
    recs = []
    for i in range(4):  # category big: 4 units, all right
        recs += unit_records(f"b{i}", CF, 1, [1], category="big")
    recs += unit_records("s0", CF, 2, [2], category="small")  # category small: 1 unit, wrong
    s = ev.summarize(recs, ks=(1,))
    assert s["overall"]["greedy"] == pytest.approx(4 / 5)
    assert s["macro"]["greedy"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["by_category"]["big"]["n"] == 4
    assert s["by_category"]["small"]["greedy"] == 0.0


def test_acc_plus_needs_every_pair_and_order_of_a_group():
    recs = []
    # group g1: two pairs, both orders right -> counts
    for pid in ("g1a", "g1b"):
        recs += unit_records(pid, CF, 1, [1], group="g1")
        recs += unit_records(pid, CS, 2, [2], group="g1")
    # group g2: one unit wrong -> fails
    recs += unit_records("g2a", CF, 1, [1], group="g2")
    recs += unit_records("g2a", CS, 1, [2], group="g2")  # greedy wrong, sample right
    recs += unit_records("g2b", CF, 1, [1], group="g2")
    recs += unit_records("g2b", CS, 2, [2], group="g2")
    s = ev.summarize(recs, ks=(1,))
    assert s["acc_plus"]["n_groups"] == 2
    assert s["acc_plus"]["greedy"] == 0.5
    assert s["acc_plus"]["voting@1"] == 1.0
    assert s["overall"]["greedy"] == pytest.approx(7 / 8)
    assert s["swap_consistency"]["n_pairs"] == 4
    assert s["swap_consistency"]["greedy"] == pytest.approx(3 / 4)


def test_acc_plus_through_evaluate_from_meta_group(tmp_path):
    pairs = make_pairs(4, groups=["x", "x", "y", "y"])
    s = ev.evaluate(
        ev.ConstantSampler(),
        pairs,
        ks=(1,),
        orders="chosen-first",
        out_dir=tmp_path,
        progress=False,
    )
    assert s["acc_plus"] == {"n_groups": 2, "greedy": 1.0, "voting@1": 1.0, "any@1": 1.0}
    s2 = ev.evaluate(
        ev.ConstantSampler(), pairs, ks=(1,), orders="both", out_dir=tmp_path / "b", progress=False
    )
    assert s2["acc_plus"]["greedy"] == 0.0


def test_summarize_refuses_incomplete_units():
    recs = unit_records("a", CF, 1, [1, 1])
    with pytest.raises(ValueError, match="Voting@5 needs 5"):
        ev.summarize(recs, ks=(1, 5))
    with pytest.raises(ValueError, match="no greedy record"):
        ev.summarize(recs[1:], ks=(1,))


# ------------------------------------------------------------------------------------------
# resumable results
# ------------------------------------------------------------------------------------------


class Crash(RuntimeError):
    pass


class CrashingSampler(ev.FunctionSampler):
    """noisy_judge that raises on its `fail_at`-th sampling call."""

    def __init__(self, fail_at: int):
        super().__init__(noisy_judge, name="noisy")
        self.calls = 0
        self.fail_at = fail_at

    def sample(self, conversations, *, k, greedy, seed=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Crash("injected")
        return super().sample(conversations, k=k, greedy=greedy, seed=seed)


def keys_of(path: Path) -> list[tuple]:
    return [(r["pair_id"], r["order"], r["sample"]) for r in ev.load_records(path)]


def run(out, pairs, sampler=None):
    return ev.evaluate(
        sampler or ev.FunctionSampler(noisy_judge, name="noisy"),
        pairs,
        ks=(1, 3, 5),
        out_dir=out,
        batch_size=4,
        progress=False,
    )


def test_interrupted_then_resumed_equals_uninterrupted_and_torn_line_is_cut(tmp_path):
    pairs = make_pairs(10)  # 20 units -> 5 chunks of 4
    ref = run(tmp_path / "ref", pairs)
    assert 0.3 < ref["overall"]["greedy"] < 0.9  # a non-trivial summary to compare

    out = tmp_path / "resumed"
    with pytest.raises(Crash):  # two chunks done (2 calls each), crash in the third
        run(out, pairs, CrashingSampler(fail_at=6))
    results = out / "results.jsonl"
    assert len(keys_of(results)) == 2 * 4 * 6
    # a kill in the middle of a write leaves a torn last line
    with open(results, "a") as fh:
        fh.write('{"pair_id": "p009", "order": "chosen-fi')

    resumed_sampler = CrashingSampler(fail_at=-1)
    with pytest.warns(UserWarning, match="torn last line"):
        resumed = run(out, pairs, resumed_sampler)
    assert resumed_sampler.calls == 2 * 3  # only the three unfinished chunks were generated
    assert resumed == ref
    keys = keys_of(results)
    assert len(keys) == len(set(keys)) == 20 * 6
    # a third run generates nothing and writes nothing
    idle = CrashingSampler(fail_at=-1)
    assert run(out, pairs, idle) == ref
    assert idle.calls == 0
    assert len(keys_of(results)) == 20 * 6


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_evaluate import make_pairs, noisy_judge
    from r1reward import evaluate as ev

    calls = 0
    def judge(conv, index, seed):
        return noisy_judge(conv, index, seed)

    class KillSampler(ev.FunctionSampler):
        def sample(self, conversations, **kw):
            global calls
            calls += 1
            if calls == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().sample(conversations, **kw)

    ev.evaluate(KillSampler(judge, name="noisy"), make_pairs(10), ks=(1, 3, 5),
                out_dir={out!r}, batch_size=4, progress=False)
    """
)


def test_killed_process_resumes_to_the_same_summary(tmp_path):
    pairs = make_pairs(10)
    ref = run(tmp_path / "ref", pairs)
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), kill_at=5, out=str(out))
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not (out / "summary.json").exists()
    assert len(keys_of(out / "results.jsonl")) == 2 * 4 * 6  # two whole chunks survived
    assert run(out, pairs) == ref
    keys = keys_of(out / "results.jsonl")
    assert len(keys) == len(set(keys)) == 20 * 6


def test_resume_with_other_settings_is_refused(tmp_path):
    pairs = make_pairs(2)
    run(tmp_path, pairs)
    with pytest.raises(ValueError, match="other settings"):
        ev.evaluate(
            ev.FunctionSampler(noisy_judge, name="noisy"),
            pairs,
            ks=(1, 7),
            out_dir=tmp_path,
            batch_size=4,
            progress=False,
        )


def test_duplicate_ids_and_damaged_results_are_errors(tmp_path):
    pairs = make_pairs(2)
    with pytest.raises(ValueError, match="appears twice"):
        run(tmp_path / "dup", pairs + pairs[:1])
    out = tmp_path / "bad"
    run(out, pairs)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(ValueError, match=r"results.jsonl:2: not a judgment record"):
        run(out, pairs)


# ------------------------------------------------------------------------------------------
# judge_pair (shared with the reward service)
# ------------------------------------------------------------------------------------------


def test_judge_pair_maps_swapped_verdicts_back():
    def oracle(conv, index, seed):
        r1, _ = shown(conv)
        return answer(1 if "GOOD" in r1 else 2)

    j = ev.judge_pair(ev.FunctionSampler(oracle), "q?", "bad", "GOOD", k=3)
    assert j.answers == [2] * 6
    assert j.orders == ["as-given"] * 3 + ["swapped"] * 3
    assert (j.verdict, j.tie, j.p_1) == (2, False, 0.0)
    assert j.votes == {"1": 0, "2": 6, "unparseable": 0}
    assert j.well_formed_rate == 1.0
    assert j.analyses[0] == "Response 2 is better."

    c = ev.judge_pair(ev.ConstantSampler(), "q?", "bad", "GOOD", k=1)
    assert (c.verdict, c.tie, c.p_1) == (None, True, 0.5)  # position bias cancels out
    one = ev.judge_pair(ev.ConstantSampler(), "q?", "bad", "GOOD", k=1, both_orders=False)
    assert (one.verdict, one.p_1) == (1, 1.0)


# ------------------------------------------------------------------------------------------
# CLI on the real benchmark metadata: the always-"1" judge exposes the chosen-first layout
# ------------------------------------------------------------------------------------------


def test_cli_always_one_on_vl_rewardbench(benchmarks_dir, tmp_path, capsys):
    data = str(benchmarks_dir / "vl_rewardbench.jsonl")
    common = ["--model", "const:1", "--data", data, "--format", "vl-rewardbench", "--k", "1,3"]
    assert (
        ev.main(common + ["--orders", "chosen-first", "--out", str(tmp_path / "cf"), "--quiet"])
        == 0
    )
    cf = json.loads((tmp_path / "cf" / "summary.json").read_text())
    assert cf["overall"]["greedy"] == 1.0
    # the official category split (not the reference's case-sensitive 484/448/318)
    assert {c: b["n"] for c, b in cf["by_category"].items()} == {
        "general": 183,
        "hallucination": 749,
        "reasoning": 318,
    }
    assert ev.main(common + ["--orders", "both", "--out", str(tmp_path / "both"), "--quiet"]) == 0
    both = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert both["overall"]["greedy"] == 0.5
    assert both["macro"]["voting@3"] == 0.5
    assert both["position_bias"]["greedy"] == 1.0
    assert "| **overall** | 2500 | 50.00 |" in capsys.readouterr().out


def test_cli_mm_rlhf_acc_plus_groups(benchmarks_dir, tmp_path):
    data = str(benchmarks_dir / "mm_rlhf_rewardbench.jsonl")
    argv = ["--model", "const:2", "--data", data, "--k", "1", "--orders", "both", "--quiet"]
    assert ev.main(argv + ["--out", str(tmp_path)]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["counts"]["pairs"] == 170
    assert s["acc_plus"]["n_groups"] == 46
    assert s["acc_plus"]["greedy"] == 0.0
    assert s["position_bias"]["greedy"] == 0.0  # always "2"


def test_cli_rejects_bad_k_and_const(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.main(["--model", "const:1", "--data", "x", "--out", str(tmp_path), "--k", "0,5"])
    assert "positive integers" in capsys.readouterr().err


def test_accuracy_vs_k_curve_matches_summaries():
    recs = unit_records("a", CF, 2, [2, 1, 1, 2, 1]) + unit_records("b", CS, 2, [1, 1, 2, 2, 2])
    curve = ev.accuracy_vs_k(recs, 5)
    assert curve["k"] == [1, 2, 3, 4, 5]
    assert curve["greedy"] == 0.5
    assert curve["any"] == [0.0, 0.5, 1.0, 1.0, 1.0]
    # a: votes 2 | 2,1 tie->greedy 2 | 1 | tie->2 | 1 ; right is 1 -> 0,0,1,0,1
    # b: 1 | 1 | 1 | tie->greedy 2 | 2 ; right is 2 -> 0,0,0,1,1
    assert curve["voting"] == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert curve["ties"] == [0, 1, 0, 2, 0]
    assert all(
        curve["voting"][k - 1] == ev.summarize(recs, ks=(k,))["overall"][f"voting@{k}"]
        for k in curve["k"]
    )


def test_parent_categories_roll_up_multimodal_rewardbench_labels():
    recs = unit_records("m", CF, 1, [1], category="reasoning/math")
    recs += unit_records("c", CF, 2, [2], category="reasoning/coding")
    recs += unit_records("g", CF, 1, [1], category="general")
    s = ev.summarize(recs, ks=(1,))
    assert set(s["by_category"]) == {"reasoning/math", "reasoning/coding", "general"}
    assert s["by_parent_category"] == {
        "reasoning": {"n": 2, "greedy": 0.5, "voting@1": 0.5, "any@1": 0.5}
    }
    assert s["macro"]["greedy"] == pytest.approx(2 / 3)  # over the three finest labels
