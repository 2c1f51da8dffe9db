"""The Markdown report of an evaluation (percent tables by slice, then the bias diagnostics), and
the paper's own numbers to quote beside it."""

from __future__ import annotations

import math
from typing import Any

from r1reward.evaluate.metrics import metric_names
from r1reward.evaluate.voting import CHOSEN_FIRST

__all__ = ["PAPER_RESULTS", "summary_markdown"]

#: R1-Reward 7B as reported by the paper (arXiv 2505.02835), accuracy in percent: greedy
#: decoding and Voting@15 (its test-time scaling results). Quoted for context only: the book's toy
#: numbers are not comparable to them (another model, another task).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "VL-RewardBench (overall)": {"greedy": 71.92, "voting@15": 76.46},
    "Multimodal RewardBench (overall)": {"greedy": 82.2, "voting@15": 83.3},
    "MM-RLHF-RewardBench (acc)": {"greedy": 80.59, "voting@15": 86.47},
    "MM-RLHF-RewardBench (acc+)": {"greedy": 54.35},
}


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}"


def summary_markdown(summary: dict[str, Any], title: str | None = "Evaluation") -> str:
    """A Markdown report: accuracy table (percent) by slice, then the bias diagnostics.

    ``title=None`` leaves out the heading (for display inside a notebook chapter).
    """
    ks = summary["ks"]
    names = metric_names(ks)
    header = "| slice | n | " + " | ".join(names) + " |"
    rule = "|---|---:|" + "---:|" * len(names)
    rows = [f"# {title}", ""] if title else []
    if "scoring" in summary:  # written by evaluate(); a bare summarize() has no such keys
        after = (
            "; each benchmark's **official** numbers follow below"
            if summary.get("official")
            else ""
        )
        rows += [
            f"Scoring: **strict** in this table (every unit counts, unparseable is wrong){after}."
            f" Orders: {_ORDER_LABELS.get(summary.get('orders'), summary.get('orders'))}."
            f" Prompt style: {summary.get('prompt_style', 'paper')}.",
            "",
        ]
    rows += ["Accuracy (%) per unit (pair x order).", "", header, rule]

    def row(label: str, block: dict[str, Any], n: Any) -> str:
        return f"| {label} | {n} | " + " | ".join(_pct(block.get(m)) for m in names) + " |"

    rows.append(row("**overall**", summary["overall"], summary["overall"]["n"]))
    rows.append(row("macro (categories)", summary["macro"], summary["macro"]["n_categories"]))
    for cat, block in summary["by_category"].items():
        rows.append(row(f"category: {cat}", block, block["n"]))
    for parent, block in summary.get("by_parent_category", {}).items():
        rows.append(row(f"category group: {parent}/*", block, block["n"]))
    for order, block in summary["by_order"].items():
        rows.append(row(f"order: {order}", block, block["n"]))
    if "acc_plus" in summary:
        rows.append(row("acc+ (groups)", summary["acc_plus"], summary["acc_plus"]["n_groups"]))
    un, pb, sw = summary["unparseable"], summary["position_bias"], summary["swap_consistency"]
    wf = summary.get("well_formed", {})
    rows += [
        "",
        "| diagnostic | value |",
        "|---|---:|",
        f"| unparseable greedy (%) | {_pct(un['greedy'])} ({un['greedy_count']}) |",
        f"| unparseable samples (%) | {_pct(un['samples'])} ({un['samples_count']}) |",
        f"| well formed greedy / samples (%) | {_pct(wf.get('greedy'))} /"
        f" {_pct(wf.get('samples'))} |",
        f"| position bias greedy: share of '1' (%) | {_pct(pb['greedy'])} |",
        f"| position bias samples: share of '1' (%) | {_pct(pb['samples'])} |",
    ]
    if sw.get("n_pairs"):
        rows.append(
            f"| swap consistency greedy (%), {sw['n_pairs']} pairs | {_pct(sw['greedy'])} |"
        )
        if ks:
            k = max(ks)
            rows.append(f"| swap consistency voting@{k} (%) | {_pct(sw[f'voting@{k}'])} |")
    for name, n in summary["ties"].items():
        rows.append(f"| ties broken in {name} | {n} |")
    sk = summary.get("skipped") or {}
    rows.append(f"| pairs skipped | {sk.get('count', 0)} |")
    for why, n in (sk.get("reasons") or {}).items():
        rows.append(f"| skipped: {why} | {n} |")
    rows += _official_markdown(summary.get("official"))
    return "\n".join(rows) + "\n"


_ORDER_LABELS = {
    "both": "both (each pair judged with the chosen response first and second)",
    "random": "random (one order per pair, by a hash of its id)",
    CHOSEN_FIRST: "chosen-first (the paper's protocol: the chosen response always shown as"
    " Response 1)",
}


def _official_markdown(official: dict[str, Any] | None) -> list[str]:
    """The ``official`` scoring block as Markdown rows (greedy verdicts, percent)."""
    if not official:
        return []
    rows = ["", "Scoring: **official** (greedy verdicts scored by each benchmark's own rules).", ""]
    rows += ["| benchmark | slice | n | accuracy | acc+ |", "|---|---|---:|---:|---:|"]
    for bench, block in official.items():
        if block.get("script") is None:
            rows.append(f"| {bench} | {block.get('note', '')} | - | - | - |")
            continue
        rows.append(
            f"| {bench} | **overall** | {block['n']} | {_pct(block['overall'])} |"
            f" {_pct(block.get('acc_plus'))} |"
        )
        if "macro" in block:
            rows.append(
                f"| {bench} | macro | {len(block['by_category'])} | {_pct(block['macro'])} | - |"
            )
        for cat, b in block["by_category"].items():
            rows.append(
                f"| {bench} | category: {cat} | {b['n']} | {_pct(b['accuracy'])} |"
                f" {_pct(b.get('acc_plus'))} |"
            )
        for key in ("unparseable_excluded", "unparseable_counted_wrong", "unparseable_coin_flips"):
            if key in block:
                rows.append(f"| {bench} | {key.replace('_', ' ')} | {block[key]} | | |")
        rows.append(f"| {bench} | script | {block['script']} | | |")
    return rows


# --------------------------------------------------------------------------------------------
# The evaluator
