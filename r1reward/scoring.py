"""Scoring modes of ``r1reward eval``: ``strict`` (this project's) and ``official`` (each benchmark's).

``strict`` is :func:`r1reward.evaluate.summarize`: every unit (pair x order) counts, an
unparseable judgment is wrong, acc+ over all groups. It is the right way to measure a judge.

``official`` reproduces what each benchmark's own scoring script would print for the same greedy
verdicts, so the numbers can be set beside published tables (the paper's Tables 2-4 used them,
with the chosen response always shown first: ``--orders chosen-first``):

``vl-rewardbench*`` -- the benchmark's ``cal.py``
    An unparseable judgment ("doesntMatch") is left out of the denominator. Per category
    (general / hallucination / reasoning): right / (right + wrong); overall: all right / all
    (right + wrong); macro: the mean of the three category accuracies.
``mm-rlhf-rewardbench`` -- the ``get_acc.py`` shipped with the reference implementation
    Unparseable is wrong (its inference script writes rewards ``[0, 1]`` then). Accuracy per
    category and overall over all pairs; acc+ per question id (a group counts when every one of
    its pairs is right), overall and per category: a category's acc+ divides the right groups
    whose first matching category (in the order mcq, long, short, safety, video) is it, by the
    groups with any pair in it.
``multimodal-rewardbench`` -- Meta's ``scripts/2_get_accuracy.py``
    An unparseable judgment becomes a coin flip: ``random.seed(123)`` once, then one
    ``random.random() < 0.5`` (Response 1) per unparseable judgment, in the order the judgments
    are scored (the units' order: data order, each pair's orders in turn). Accuracy overall
    (``all``) and per category (``safety/bias`` ... as the reader splits them).

Other sources (the toy world, ``pairs`` files, R1-Reward-RL) have no official script: their
``official`` block says so and carries no numbers.

With ``--orders both`` every judgment is a row of the official computation (both layouts
count); with ``--orders chosen-first`` the rows are exactly the reference protocol's.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["SCORING_MODES", "OFFICIAL_SCRIPTS", "official_scores", "benchmark_of"]

SCORING_MODES = ("strict", "official")

#: Benchmark -> the script whose rules ``official`` reproduces.
OFFICIAL_SCRIPTS = {
    "vl-rewardbench": "VL-RewardBench cal.py (unparseable left out of the denominator)",
    "mm-rlhf-rewardbench": "MM-RLHF-RewardBench get_acc.py (unparseable wrong; acc+ per category)",
    "multimodal-rewardbench": "Multimodal RewardBench 2_get_accuracy.py (unparseable: coin flip, seed 123)",
}

_MM_RLHF_ORDER = ("mcq", "long", "short", "safety", "video")


def benchmark_of(source: str) -> str | None:
    """The benchmark a pair's ``source`` belongs to (``vl-rewardbench-hub`` -> ``vl-rewardbench``)."""
    if source.startswith("vl-rewardbench"):
        return "vl-rewardbench"
    return source if source in OFFICIAL_SCRIPTS else None


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _vl(rows: list[dict[str, Any]]) -> dict[str, Any]:
    right: dict[str, int] = defaultdict(int)
    judged: dict[str, int] = defaultdict(int)
    dropped = 0
    for r in rows:
        if r["answer"] is None:
            dropped += 1
            continue
        judged[r["category"]] += 1
        right[r["category"]] += int(r["correct"])
    cats = sorted(judged)
    by_cat = {c: {"accuracy": _ratio(right[c], judged[c]), "n": judged[c]} for c in cats}
    accs = [b["accuracy"] for b in by_cat.values() if b["accuracy"] is not None]
    return {
        "overall": _ratio(sum(right.values()), sum(judged.values())),
        "macro": sum(accs) / len(accs) if accs else None,
        "by_category": by_cat,
        "n": len(rows),
        "unparseable_excluded": dropped,
    }


def _mm_rlhf(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_cat: dict[str, list[bool]] = defaultdict(list)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(bool(r["correct"]))
        groups[r["group"] or r["pair_id"]].append(r)
    group_right = {g: all(r["correct"] for r in rs) for g, rs in groups.items()}
    out_cats: dict[str, Any] = {}
    for c in sorted(by_cat):
        member = [g for g, rs in groups.items() if any(r["category"] == c for r in rs)]
        first = [
            g
            for g in member
            if next((k for k in _MM_RLHF_ORDER if any(r["category"] == k for r in groups[g])), c)
            == c
        ]
        out_cats[c] = {
            "accuracy": _ratio(sum(by_cat[c]), len(by_cat[c])),
            "acc_plus": _ratio(sum(group_right[g] for g in first), len(member)),
            "n": len(by_cat[c]),
            "n_groups": len(member),
        }
    return {
        "overall": _ratio(sum(bool(r["correct"]) for r in rows), len(rows)),
        "acc_plus": _ratio(sum(group_right.values()), len(groups)),
        "by_category": out_cats,
        "n": len(rows),
        "n_groups": len(groups),
        "unparseable_counted_wrong": sum(r["answer"] is None for r in rows),
    }


def _mmrb(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rng = random.Random(123)
    by_cat: dict[str, list[bool]] = defaultdict(list)
    flips = 0
    hits: list[bool] = []
    for r in rows:
        answer = r["answer"]
        if answer is None:
            answer = 1 if rng.random() < 0.5 else 2
            flips += 1
        ok = answer == r["right"]
        hits.append(ok)
        by_cat[r["category"]].append(ok)
    return {
        "overall": _ratio(sum(hits), len(hits)),
        "by_category": {
            c: {"accuracy": _ratio(sum(v), len(v)), "n": len(v)} for c, v in sorted(by_cat.items())
        },
        "n": len(rows),
        "unparseable_coin_flips": flips,
    }


_SCORERS = {"vl-rewardbench": _vl, "mm-rlhf-rewardbench": _mm_rlhf, "multimodal-rewardbench": _mmrb}


def official_scores(
    records: Iterable[dict[str, Any]],
    units: Sequence[tuple[str, str]],
    sources: dict[str, str],
) -> dict[str, Any]:
    """Each benchmark's official numbers from the greedy judgment records.

    Args:
        records: ``results.jsonl`` records (``pair_id, order, sample, answer, correct, category,
            group``); only ``sample == "greedy"`` is read.
        units: the (pair_id, order) units in scoring order (data order, orders in turn).
        sources: pair id -> the pair's ``source`` (its format name).

    Returns:
        ``{benchmark: {"script": ..., "overall": ..., "by_category": ..., ...}}`` with fractions in
        [0, 1]; a source without an official script maps to ``{"script": None, "note": ...}``.
    """
    greedy = {(r["pair_id"], r["order"]): r for r in records if r.get("sample") == "greedy"}
    rows_by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unknown: set[str] = set()
    for uid in units:
        rec = greedy[uid]
        bench = benchmark_of(sources.get(uid[0], ""))
        if bench is None:
            unknown.add(sources.get(uid[0], "") or "unknown")
            continue
        answer = rec.get("answer") if rec.get("answer") in (1, 2) else None
        rows_by[bench].append(
            {
                "pair_id": uid[0],
                "answer": answer,
                "right": 1 if uid[1] == "chosen-first" else 2,
                "correct": bool(rec.get("correct")),
                "category": str(rec.get("category") or ""),
                "group": rec.get("group"),
            }
        )
    out: dict[str, Any] = {}
    for bench, rows in rows_by.items():
        out[bench] = {"script": OFFICIAL_SCRIPTS[bench], **_SCORERS[bench](rows)}
    for source in sorted(unknown):
        out[source] = {"script": None, "note": f"no official script for {source!r} pairs"}
    return out
