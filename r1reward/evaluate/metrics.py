"""The metrics of an evaluation, from its judgment records (the rules of :mod:`r1reward.evaluate`).

:func:`summarize` turns records into accuracy per slice (overall, macro over categories, per
category, per parent category, per order, acc+ per group) for greedy, Voting@K and Any-correct@K,
and the diagnostics a single-order evaluation hides: unparseable and well-formed shares, position
bias and swap consistency. :func:`accuracy_vs_k` is the test-time scaling curve,
:func:`layout_report` the bias summary in percent.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from r1reward.evaluate.voting import CHOSEN_FIRST, CHOSEN_SECOND, GREEDY, hash_verdict, vote

__all__ = ["accuracy_vs_k", "layout_report", "metric_names", "summarize"]

UnitId = tuple[str, str]  # (pair_id, order)


@dataclass
class _Unit:
    pair_id: str
    order: str
    category: str
    group: str | None
    greedy: int | None = None
    has_greedy: bool = False
    samples: dict[int, int | None] = field(default_factory=dict)
    well_formed: dict[str, bool] = field(default_factory=dict)  # sample key -> Table-1 format


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def metric_names(ks: Sequence[int]) -> list[str]:
    """``greedy``, then ``voting@K`` and ``any@K`` for each K: the columns of every block."""
    return ["greedy"] + [f"voting@{k}" for k in ks] + [f"any@{k}" for k in ks]


def summarize(
    records: Iterable[dict[str, Any]],
    *,
    ks: Sequence[int] = (1, 5, 15),
    units: Iterable[tuple[str, str]] | None = None,
    skipped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics of the module docstring, from judgment records.

    Args:
        records: dicts with ``pair_id``, ``order``, ``sample`` (``"greedy"`` or an index),
            ``answer`` (1/2/None, as displayed), ``category`` (a ``"parent/child"`` label, as
            Multimodal RewardBench's ``reasoning/math``, is also rolled up into ``parent``) and
            ``group``.
        ks: the K of Voting@K / Any-correct@K; each must be <= the samples stored per unit.
        units: restrict to these (pair_id, order); default every unit in ``records``.
        skipped: reported as is (e.g. video pairs without a video reader).

    Returns:
        A JSON-ready dict: ``overall``, ``macro``, ``by_category``, ``by_parent_category``,
        ``by_order``, ``acc_plus`` (when groups exist), ``ties``, ``unparseable``,
        ``well_formed`` (share in the exact Table-1 format, when records carry it),
        ``position_bias``, ``swap_consistency``, ``counts``, ``skipped``.

    Raises:
        ValueError: a unit lacks its greedy record or some of the first ``max(ks)`` samples.
    """
    ks = sorted({int(k) for k in ks})
    wanted = None if units is None else {(str(p), str(o)) for p, o in units}
    table = _collect_units(records, wanted)
    kmax = max(ks) if ks else 0
    names = metric_names(ks)
    per_unit, verdicts, ties = _score_units(table, ks)
    all_uids = sorted(table)
    summary: dict[str, Any] = {
        "ks": ks,
        "counts": {
            "pairs": len({u[0] for u in all_uids}),
            "units": len(all_uids),
            "samples_per_unit": kmax,
        },
        **_slices(table, per_unit, names),
        "ties": {name: ties[name] for name in names if name.startswith("voting@")},
    }
    acc_plus = _acc_plus(table, per_unit, names)
    if acc_plus is not None:
        summary["acc_plus"] = acc_plus
    summary.update(_answer_diagnostics(table, kmax))
    summary["swap_consistency"] = _swap_consistency(verdicts, ks)
    summary["skipped"] = skipped or {"count": 0}
    return summary


def _collect_units(
    records: Iterable[dict[str, Any]], wanted: set[UnitId] | None
) -> dict[UnitId, _Unit]:
    """The records gathered per unit (only the ``wanted`` ones when given, all of them there)."""
    table: dict[UnitId, _Unit] = {}
    for rec in records:
        uid = (str(rec["pair_id"]), str(rec["order"]))
        if wanted is not None and uid not in wanted:
            continue
        unit = table.get(uid)
        if unit is None:
            unit = table[uid] = _Unit(
                pair_id=uid[0],
                order=uid[1],
                category=str(rec.get("category") or "all"),
                group=rec.get("group"),
            )
        answer = rec.get("answer")
        answer = answer if answer in (1, 2) else None
        if rec["sample"] == GREEDY:
            unit.greedy = answer
            unit.has_greedy = True
        else:
            unit.samples[int(rec["sample"])] = answer
        if "well_formed" in rec:
            unit.well_formed[str(rec["sample"])] = bool(rec["well_formed"])
    if wanted is not None and set(table) != wanted:
        missing = sorted(wanted - set(table))[:5]
        raise ValueError(f"no records for units {missing} (of {len(wanted - set(table))})")
    return table


def _score_units(
    table: dict[UnitId, _Unit], ks: Sequence[int]
) -> tuple[dict[UnitId, dict[str, bool]], dict[UnitId, dict[str, int | None]], Counter]:
    """Per unit, whether each metric is right and the verdict it gave; ties broken per Voting@K.

    The tie rule: the unit's greedy verdict when parseable, else :func:`hash_verdict` of
    ``"{pair_id}|{order}"``.
    """
    kmax = max(ks) if ks else 0
    per_unit: dict[UnitId, dict[str, bool]] = {}
    verdicts: dict[UnitId, dict[str, int | None]] = {}
    ties: Counter = Counter()
    for uid, unit in table.items():
        if not unit.has_greedy:
            raise ValueError(f"unit {uid}: no greedy record")
        if any(i not in unit.samples for i in range(kmax)):
            have = len(unit.samples)
            raise ValueError(f"unit {uid}: {have} samples stored, Voting@{kmax} needs {kmax}")
        right = 1 if unit.order == CHOSEN_FIRST else 2
        got: dict[str, bool] = {"greedy": unit.greedy == right}
        said: dict[str, int | None] = {"greedy": unit.greedy}
        for k in ks:
            first = [unit.samples[i] for i in range(k)]
            tiebreak = unit.greedy if unit.greedy is not None else hash_verdict("|".join(uid))
            verdict, tie = vote(first, tiebreak=tiebreak)
            ties[f"voting@{k}"] += int(tie)
            got[f"voting@{k}"] = verdict == right
            said[f"voting@{k}"] = verdict
            got[f"any@{k}"] = any(a == right for a in first)
        per_unit[uid] = got
        verdicts[uid] = said
    return per_unit, verdicts, ties


def _block(
    per_unit: dict[UnitId, dict[str, bool]], uids: Sequence[UnitId], names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy of each metric over ``uids``, with their number ``n``."""
    out: dict[str, Any] = {"n": len(uids)}
    for name in names:
        out[name] = _mean([float(per_unit[u][name]) for u in uids])
    return out


def _slices(
    table: dict[UnitId, _Unit], per_unit: dict[UnitId, dict[str, bool]], names: Sequence[str]
) -> dict[str, Any]:
    """``overall``, ``macro`` (mean over categories), ``by_category``, ``by_parent_category``
    (the ``parent`` of ``parent/child`` labels) and ``by_order`` blocks, in that order."""
    all_uids = sorted(table)
    by_cat: dict[str, list] = defaultdict(list)
    by_parent: dict[str, list] = defaultdict(list)
    by_order: dict[str, list] = defaultdict(list)
    for uid in all_uids:
        unit = table[uid]
        by_cat[unit.category].append(uid)
        by_order[unit.order].append(uid)
        if "/" in unit.category:
            by_parent[unit.category.split("/", 1)[0]].append(uid)
    by_category = {c: _block(per_unit, u, names) for c, u in sorted(by_cat.items())}
    macro: dict[str, Any] = {"n_categories": len(by_category)}
    for name in names:
        macro[name] = _mean([b[name] for b in by_category.values() if b[name] is not None])
    return {
        "overall": _block(per_unit, all_uids, names),
        "macro": macro,
        "by_category": by_category,
        "by_parent_category": {c: _block(per_unit, u, names) for c, u in sorted(by_parent.items())},
        "by_order": {o: _block(per_unit, u, names) for o, u in sorted(by_order.items())},
    }


def _acc_plus(
    table: dict[UnitId, _Unit], per_unit: dict[UnitId, dict[str, bool]], names: Sequence[str]
) -> dict[str, Any] | None:
    """acc+: a group is right only when every unit of every pair in it is right (None: no
    groups)."""
    groups: dict[str, list] = defaultdict(list)
    for uid in sorted(table):
        if table[uid].group:
            groups[str(table[uid].group)].append(uid)
    if not groups:
        return None
    acc_plus: dict[str, Any] = {"n_groups": len(groups)}
    for name in names:
        acc_plus[name] = _mean([float(all(per_unit[u][name] for u in g)) for g in groups.values()])
    return acc_plus


def _share_one(answers: Sequence[int | None]) -> float | None:
    """Share of "1" among the parseable answers (position bias; 0.5 is unbiased)."""
    parsed = [a for a in answers if a is not None]
    return _mean([float(a == 1) for a in parsed])


def _answer_diagnostics(table: dict[UnitId, _Unit], kmax: int) -> dict[str, Any]:
    """``well_formed``, ``unparseable`` and ``position_bias`` of the greedy verdicts and of the
    first ``kmax`` samples of every unit."""
    all_uids = sorted(table)
    greedy_answers = [table[u].greedy for u in all_uids]
    sample_answers = [a for u in all_uids for i, a in table[u].samples.items() if i < kmax]
    wf_greedy = [u.well_formed[GREEDY] for u in table.values() if GREEDY in u.well_formed]
    wf_samples = [
        ok
        for u in table.values()
        for key, ok in u.well_formed.items()
        if key != GREEDY and int(key) < kmax
    ]
    return {
        "well_formed": {
            "greedy": _mean([float(x) for x in wf_greedy]),
            "samples": _mean([float(x) for x in wf_samples]),
        },
        "unparseable": {
            "greedy": _mean([float(a is None) for a in greedy_answers]),
            "greedy_count": sum(a is None for a in greedy_answers),
            "samples": _mean([float(a is None) for a in sample_answers]),
            "samples_count": sum(a is None for a in sample_answers),
        },
        "position_bias": {
            "greedy": _share_one(greedy_answers),
            "samples": _share_one(sample_answers),
        },
    }


def _swap_consistency(verdicts: dict[UnitId, dict[str, int | None]], ks: Sequence[int]) -> dict:
    """Over pairs judged in both orders, the share whose verdicts name the same underlying
    response (an unparseable verdict is inconsistent), and the share right in both."""
    both = [
        p
        for p in sorted({u[0] for u in verdicts})
        if (p, CHOSEN_FIRST) in verdicts and (p, CHOSEN_SECOND) in verdicts
    ]
    swap: dict[str, Any] = {"n_pairs": len(both)}
    if both:
        for name in ["greedy"] + [f"voting@{k}" for k in ks]:
            consistent = []
            both_right = []
            for p in both:
                a, b = verdicts[(p, CHOSEN_FIRST)][name], verdicts[(p, CHOSEN_SECOND)][name]
                consistent.append(float(a is not None and b is not None and a + b == 3))
                both_right.append(float(a == 1 and b == 2))
            swap[name] = _mean(consistent)
            swap[f"{name}_both_right"] = _mean(both_right)
    return swap


def accuracy_vs_k(
    records: Iterable[dict[str, Any]], max_k: int, *, units: Iterable[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The test-time scaling curve (the shape of the paper's Figure 4) from stored records.

    Returns:
        ``{"k": [1..max_k], "voting": [...], "any": [...], "ties": [...], "greedy": float,
        "summary": <summarize() with ks=1..max_k>}``; accuracies are fractions over units.
    """
    ks = list(range(1, int(max_k) + 1))
    s = summarize(records, ks=ks, units=units)
    return {
        "k": ks,
        "voting": [s["overall"][f"voting@{k}"] for k in ks],
        "any": [s["overall"][f"any@{k}"] for k in ks],
        "ties": [s["ties"][f"voting@{k}"] for k in ks],
        "greedy": s["overall"]["greedy"],
        "summary": s,
    }


def layout_report(summary: dict[str, Any]) -> dict[str, float]:
    """What a single-order evaluation hides, in percent (NaN where nothing was measured).

    From a ``summarize``/``evaluate`` summary of a run in both orders: greedy accuracy when only
    the chosen-first half is counted (the reference's layout), greedy accuracy over both orders,
    position bias (share of "1") and swap consistency.
    """

    def pct(value: Any) -> float:
        return float("nan") if value is None else 100.0 * float(value)

    first = summary["by_order"].get(CHOSEN_FIRST, {})
    return {
        "accuracy, chosen-first layout only %": pct(first.get("greedy")),
        "accuracy, both orders %": pct(summary["overall"]["greedy"]),
        "position bias %": pct(summary["position_bias"]["greedy"]),
        "swap consistency %": pct(summary["swap_consistency"].get("greedy")),
    }
