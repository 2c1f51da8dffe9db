"""The collapse lab's summaries: learning-rate sensitivity, the grid table, the Markdown report,
the separation criterion and the run a chapter shows step by step.

They read the rows of ``lab.jsonl`` (:data:`r1reward.lab.ROW_FIELDS`) and nothing else, so a
finished lab can be summarised without the trainer; :mod:`r1reward.lab` runs the grid and
re-exports these names.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CHANCE",
    "finite",
    "grid_table",
    "lr_sensitivity",
    "mean_finite",
    "separates",
    "showcase",
    "summary_markdown",
]

#: The accuracy a run with no usable model is given in the sensitivity (a coin flip): Wortsman
#: et al. cap a diverged run's loss at the loss of the initial model; a judge has a natural floor
#: instead, chance.
CHANCE = 0.5


def finite(x: Any) -> bool:
    """True for an int or float that is neither NaN nor infinite."""
    return isinstance(x, int | float) and math.isfinite(x)


def mean_finite(xs: Sequence[float]) -> float:
    xs = [x for x in xs if finite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def lr_sensitivity(rows: Sequence[dict], metric: str = "heldout_accuracy") -> dict[str, float]:
    """Learning-rate sensitivity of each variant (Wortsman et al. 2023, Sec. 3.2, for a quality
    to maximise): the mean over the swept learning rates of the shortfall from the variant's best
    learning rate, ``mean_lr[best - max(acc(lr), chance)]``, with ``acc(lr)`` the mean over seeds.
    Flooring at :data:`CHANCE` plays the part of their cap at the initial loss: a run that broke
    counts as a coin flip, however it broke. 0 means the result does not depend on the learning
    rate over the sweep; larger is more sensitive."""
    by: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {}).setdefault(float(r["lr"]), []).append(r[metric])
    out = {}
    for variant, per_lr in by.items():
        acc = {
            lr: max(mean_finite(v), CHANCE) if finite(mean_finite(v)) else CHANCE
            for lr, v in per_lr.items()
        }
        best = max(acc.values())
        out[variant] = sum(best - a for a in acc.values()) / len(acc)
    return out


def grid_table(
    rows: Sequence[dict], metric: str = "heldout_accuracy"
) -> dict[str, dict[float, tuple]]:
    """``{variant: {lr: (mean, sd, n_seeds, n_collapsed)}}`` of ``metric`` over seeds."""
    by: dict[str, dict[float, list[dict]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {}).setdefault(float(r["lr"]), []).append(r)
    out: dict[str, dict[float, tuple]] = {}
    for variant, per_lr in by.items():
        out[variant] = {}
        for lr, rs in sorted(per_lr.items()):
            vals = [r[metric] for r in rs if finite(r[metric])]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            out[variant][lr] = (
                mean_finite(vals),
                sd,
                len(rs),
                sum(bool(r["collapsed"]) for r in rs),
            )
    return out


def summary_markdown(rows: Sequence[dict], info: dict | None = None) -> str:
    """The lab's Markdown report: held-out accuracy (mean ± sd over seeds; ``†k``: k seeds
    collapsed) per variant and learning rate, the learning-rate sensitivity, and the settings."""
    info = dict(info or {})
    table = grid_table(rows)
    lrs = sorted({float(r["lr"]) for r in rows})
    sens = lr_sensitivity(rows)
    lines = ["# Collapse lab", ""]
    if info:
        lines += [", ".join(f"{k}: {v}" for k, v in info.items()), ""]
    lines += [
        "Held-out greedy accuracy (%, both answer orders), mean ± sd over seeds; "
        "†k: k seeds collapsed.",
        "",
    ]
    lines.append("| variant | " + " | ".join(f"lr {lr:.0e}" for lr in lrs) + " | LR sensitivity |")
    lines.append("|---|" + "---:|" * (len(lrs) + 1))
    for variant, per in table.items():
        cells = []
        for lr in lrs:
            if lr not in per:
                cells.append("")
                continue
            m, sd, _, nc = per[lr]
            cells.append(f"{100 * m:.1f} ± {100 * sd:.1f}" + (f" †{nc}" if nc else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {100 * sens[variant]:.1f} |")
    collapsed = [r for r in rows if r["collapsed"]]
    lines += ["", f"{len(collapsed)} of {len(rows)} runs collapsed."]
    for r in collapsed:
        lines.append(
            f"- {r['variant']} lr {r['lr']:.0e} seed {r['seed']}: step {r['collapse_step']} "
            f"({r['collapse_reason']})"
        )
    return "\n".join(lines) + "\n"


def separates(
    rows: Sequence[dict],
    reference_accuracy: float,
    *,
    broken: str = "reinforce++",
    stable: str = "stable-reinforce",
    min_seeds: int = 2,
    drop: float = 0.10,
) -> list[float]:
    """The learning rates at which ``broken`` *failed* in at least ``min_seeds`` seeds while
    ``stable`` failed in none, a run failing when it collapsed (:func:`collapse_step`) or its
    held-out accuracy fell ``drop`` or more below ``reference_accuracy`` (the cold-start model's).
    This is the issue's criterion for "a regime in which Reinforce++ breaks and StableReinforce
    holds", fixed before the grid ran."""

    def failed(r: dict) -> bool:
        return bool(r["collapsed"]) or r["heldout_accuracy"] <= reference_accuracy - drop

    out = []
    for lr in sorted({float(r["lr"]) for r in rows}):
        b = [r for r in rows if r["variant"] == broken and float(r["lr"]) == lr]
        s = [r for r in rows if r["variant"] == stable and float(r["lr"]) == lr]
        if b and s and sum(map(failed, b)) >= min_seeds and not any(map(failed, s)):
            out.append(lr)
    return out


def showcase(
    rows: Sequence[dict], *, broken: str = "reinforce++", stable: str = "stable-reinforce"
) -> tuple[dict, dict | None]:
    """The ``broken`` run to show step by step and the ``stable`` run with the same learning rate
    and seed (None when the grid has none). Among the ``broken`` runs that collapsed it is the one
    whose twin held out longest after it (a twin that never collapsed counts as collapsing after
    the last step), the earlier collapse breaking ties: the contrast the chapter is about. When
    none collapsed, the run with the largest PPO ratio."""
    cands = [r for r in rows if r["variant"] == broken]
    if not cands:
        raise ValueError(f"no {broken} run in the lab")

    def twin_of(r: dict) -> dict | None:
        return next(
            (
                t
                for t in rows
                if t["variant"] == stable and t["lr"] == r["lr"] and t["seed"] == r["seed"]
            ),
            None,
        )

    def margin(r: dict) -> tuple[float, int]:
        t = twin_of(r)
        held = float("inf") if t is None or not t["collapsed"] else t["collapse_step"]
        if held == float("inf") and t is not None:
            held = t["steps_done"] + 1
        return (held - r["collapse_step"] if held != float("inf") else -1.0, -r["collapse_step"])

    hit = [r for r in cands if r["collapsed"]]
    pick = (
        max(hit, key=margin)
        if hit
        else max(cands, key=lambda r: r["max_ratio"] if finite(r["max_ratio"]) else -1.0)
    )
    return pick, twin_of(pick)
