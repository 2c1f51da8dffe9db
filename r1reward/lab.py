"""The collapse lab: where Reinforce++ breaks and StableReinforce holds, measured as a grid.

Large-model training instabilities can be reproduced in small models by pushing the settings
that drive them (Wortsman et al. 2023, *Small-scale proxies for large-scale Transformer training
instabilities*, arXiv 2309.14322): sweep the learning rate over orders of magnitude, plot the
final quality against it, and summarise each method by its **learning-rate sensitivity**. The
lab does that for RL of the reward model (paper Sec. 3.1: Reinforce++ collapses late in training,
when nearly every sample is right and batch normalisation turns the few wrong ones into
``-sqrt(B-1)``-sized advantages).

The grid is declared in the recipe's ``lab:`` section (:func:`lab_section`) *before* any run, and
every variant gets the same data, seeds, batch and steps; only the algorithm switches differ.
One call, :func:`run_lab`, trains every (variant, learning rate, seed) from the same cold-start
model, evaluates each final model on held-out pairs in both answer orders (the evaluator of
chapter 6) and writes

- ``lab.jsonl`` -- one line per run (:data:`ROW_FIELDS`);
- ``summary.md`` -- held-out accuracy by variant x learning rate, collapses and each variant's
  learning-rate sensitivity.

Each run lives in its own folder under ``runs/`` and is reused when complete (same resolved
recipe), so a killed lab reruns only what is missing. The CLI is ``r1reward lab``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1reward.chapters import artifacts
from r1reward.chapters.experiments import VARIANTS, heldout_accuracy, run_jobs, run_variant
from r1reward.curation import select_hard
from r1reward.data.jsonl import read_jsonl
from r1reward.data.markers import read_marker, write_marker
from r1reward.lab_report import (
    CHANCE,
    finite,
    grid_table,
    lr_sensitivity,
    mean_finite,
    separates,
    showcase,
    summary_markdown,
)
from r1reward.models import load_model
from r1reward.profile import quiet_libraries
from r1reward.prompt import pair_messages, parse_judgment
from r1reward.recipes import load_recipe
from r1reward.recipes.config import LabSection
from r1reward.rollout import generate
from r1reward.train.rl import ALGO_PRESETS, read_metrics
from r1reward.train.rl_metrics import collapse_reason

__all__ = [
    "CHANCE",
    "grid_table",
    "ROW_FIELDS",
    "collapse_step",
    "late_regime_pairs",
    "lab_section",
    "lr_sensitivity",
    "run_dir",
    "run_lab",
    "read_lab",
    "regime_pairs",
    "separates",
    "showcase",
    "summary_markdown",
]


#: The fields of one ``lab.jsonl`` line, in order.
ROW_FIELDS = (
    "variant",
    "lr",
    "seed",
    "steps_done",
    "heldout_accuracy",
    "heldout_well_formed",
    "heldout_length",
    "position_bias",
    "collapsed",
    "collapse_step",
    "collapse_reason",
    "params_finite",
    "max_ratio",
    "nonfinite_ratios",
    "filtered_fraction_max",
    "filtered_fraction_mean",
    "adv_min",
    "kl_mean",
    "train_accuracy_first",
    "train_accuracy_last",
    "well_formed_min",
    "length_max_mean",
    "seconds",
)


def lab_section(section: dict | None, *, source: str = "recipe") -> LabSection:
    """The ``lab:`` section of a recipe (:class:`r1reward.recipes.config.LabSection`: the declared
    grid and the run shape, every variant the same), checked for the lab once: keys and types as
    the recipe declares them, then known variants, a known regime, at least one variant, learning
    rate and seed, learning rates as floats and seeds as integers.

    Raises:
        ValueError: one line naming ``lab.<key>`` and what was expected.
    """
    cfg = LabSection.from_dict(section, source=source)
    cfg.lrs = [float(x) for x in cfg.lrs]
    cfg.seeds = [int(x) for x in cfg.seeds]
    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad:
        raise ValueError(
            f"{source} lab.variants: unknown {bad}; expected some of {sorted(VARIANTS)}"
        )
    if cfg.regime not in ("late", "hard", "all"):
        raise ValueError(f"{source} lab.regime={cfg.regime!r}: expected 'late', 'hard' or 'all'")
    if not cfg.lrs or not cfg.seeds or not cfg.variants:
        raise ValueError(f"{source} lab: variants, lrs and seeds must each name at least one value")
    return cfg


# --------------------------------------------------------------------------------------------
# What "collapsed" means, once
# --------------------------------------------------------------------------------------------


def collapse_step(
    records: Sequence[dict],
    max_new_tokens: int,
    *,
    min_well_formed: float = 0.5,
    length_fraction: float = 0.9,
) -> tuple[int | None, str | None]:
    """The first RL step at which a run collapsed, and why; ``(None, None)`` if it never did.

    A step counts as collapsed by :func:`r1reward.train.rl_metrics.collapse_reason` (the one definition,
    which the trainer's ``rl.stop_on_collapse`` uses too): its parameters are no longer finite,
    fewer than ``min_well_formed`` of its sampled judgments are well formed, or their mean length
    reaches ``length_fraction * max_new_tokens`` (the paper's collapse: "loss NaN, length hits the
    maximum", Sec. 3.1). ``records`` are the trainer's ``metrics.jsonl`` lines."""
    for rec in records:
        why = collapse_reason(
            rec, max_new_tokens, min_well_formed=min_well_formed, length_fraction=length_fraction
        )
        if why is not None:
            return int(rec["step"]), why
    return None, None


# --------------------------------------------------------------------------------------------
# The late-training regime: pairs the cold-start model already gets right
# --------------------------------------------------------------------------------------------


def late_regime_pairs(
    model_path: str | Path,
    candidates: Sequence[Any],
    out_file: str | Path,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[Any]:
    """The ``candidates`` that ``model_path`` judges right greedily in *both* answer orders.

    RL on them starts where the paper's collapse happens (Sec. 3.1): nearly every sampled judgment
    is right, the reward variance is small, and batch normalisation gives the few wrong samples
    advantages near ``-sqrt(B-1)``. The chosen ids and counts are cached in ``out_file`` (JSON);
    a second call with the same candidates only reads it."""
    out_file = Path(out_file)
    key = {
        "model": str(model_path),
        "candidates": [p.id for p in candidates],
        "max_new_tokens": int(max_new_tokens),
    }
    cached = read_marker(out_file)
    if cached is not None and cached.get("key") == key:
        keep = set(cached["ids"])
        return [p for p in candidates if p.id in keep]
    model, processor = load_model(str(model_path))
    shown = [q for p in candidates for q in (p, p.swap())]
    convs = [pair_messages(q) for q in shown]
    outs = generate(
        model,
        processor,
        convs,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    right = [parse_judgment(o[0].text).answer == q.preferred for o, q in zip(outs, shown)]
    keep_ids = [p.id for i, p in enumerate(candidates) if right[2 * i] and right[2 * i + 1]]
    info = {
        "key": key,
        "ids": keep_ids,
        "n_candidates": len(candidates),
        "n_kept": len(keep_ids),
        "greedy_accuracy": sum(right) / max(1, len(right)),
    }
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_marker(out_file, info)
    keep = set(keep_ids)
    return [p for p in candidates if p.id in keep]


# --------------------------------------------------------------------------------------------
# One run: train (cached), evaluate (cached), one row
# --------------------------------------------------------------------------------------------


def run_name(variant: str, lr: float, seed: int) -> str:
    return f"{variant}-lr{lr:.0e}-seed{seed}"


def _variant_overrides(cfg: LabSection, variant: str, lr: float) -> list[str]:
    algo = next(o.split("=", 1)[1] for o in VARIANTS[variant] if o.startswith("rl.algo="))
    k = int(ALGO_PRESETS[algo]["samples_per_prompt"])
    if cfg.samples_per_step % k:
        raise ValueError(
            f"lab.samples_per_step={cfg.samples_per_step} is not a multiple of "
            f"{variant}'s {k} samples per prompt"
        )
    return [
        *(f"rl.{k_}={json.dumps(v)}" for k_, v in cfg.rl.items()),
        f"rl.steps={cfg.steps}",
        f"rl.prompts_per_step={cfg.samples_per_step // k}",
        f"rl.lr={lr!r}",
        "rl.save_every=0",
        "rl.progress=false",
        *(
            (
                f"rl.stop_on_collapse={cfg.stop_after_collapsed}",
                f"rl.collapse_min_well_formed={cfg.collapse_min_well_formed!r}",
                f"rl.collapse_length_fraction={cfg.collapse_length_fraction!r}",
            )
            if cfg.stop_after_collapsed
            else ()
        ),
    ]


def _run_one(
    recipe: str,
    variant: str,
    lr: float,
    seed: int,
    root: str,
    init_model: str,
    overrides: tuple,
    pairs: list,
    heldout: list,
    cfg_dict: dict,
) -> dict:
    """Train one grid cell (cached in its folder), evaluate it (cached) and return its row."""
    quiet_libraries()
    cfg = lab_section(cfg_dict)
    name = run_name(variant, lr, seed)
    row_file = Path(root) / name / "lab_row.json"
    t0 = time.perf_counter()
    ovr = [*overrides, *_variant_overrides(cfg, variant, lr)]
    path = run_variant(
        recipe, variant, seed, root, init_model=init_model, overrides=ovr, pairs=pairs, name=name
    )
    eval_key = {"heldout": [p.id for p in heldout], "greedy_only": True}
    cached = read_marker(row_file)
    if cached is not None and cached.get("eval_key") == eval_key:
        return cached["row"]
    recs = read_metrics(path)
    summary = json.loads((path / "summary.json").read_text())
    resolved = json.loads((path / "variant.json").read_text())["resolved"]
    max_new = int(resolved["rl"]["max_new_tokens"])
    step, reason = collapse_step(
        recs,
        max_new,
        min_well_formed=cfg.collapse_min_well_formed,
        length_fraction=cfg.collapse_length_fraction,
    )
    params_ok = all(r["params_finite"] for r in recs)
    row: dict[str, Any] = {
        "variant": variant,
        "lr": lr,
        "seed": seed,
        "steps_done": len(recs),
        "collapsed": step is not None,
        "collapse_step": step,
        "collapse_reason": reason,
        "params_finite": params_ok,
        "max_ratio": max(
            (r["max_ratio"] for r in recs if finite(r["max_ratio"])), default=float("nan")
        ),
        "nonfinite_ratios": int(sum(r["nonfinite_ratios"] for r in recs)),
        "filtered_fraction_max": max((r["filtered_fraction"] for r in recs), default=0.0),
        "filtered_fraction_mean": mean_finite([r["filtered_fraction"] for r in recs]),
        "adv_min": min((r["adv_min"] for r in recs if finite(r["adv_min"])), default=float("nan")),
        "kl_mean": mean_finite([r["kl"] for r in recs]),
        "train_accuracy_first": recs[0]["accuracy"] if recs else float("nan"),
        "train_accuracy_last": recs[-1]["accuracy"] if recs else float("nan"),
        "well_formed_min": min((r["well_formed"] for r in recs), default=float("nan")),
        "length_max_mean": max((r["length_mean"] for r in recs), default=float("nan")),
    }
    if summary.get("final") and params_ok:
        res = heldout_accuracy(
            path / "final", heldout, path / f"heldout-{len(heldout)}", max_new_tokens=max_new
        )
        row.update(
            heldout_accuracy=res["accuracy"],
            heldout_well_formed=res["well_formed"],
            heldout_length=res["length"],
            position_bias=res["position_bias"],
        )
    else:
        # no usable model (non-finite weights): every judgment unparseable, which the strict
        # evaluator of chapter 6 counts as wrong
        row.update(
            heldout_accuracy=0.0,
            heldout_well_formed=0.0,
            heldout_length=float("nan"),
            position_bias=float("nan"),
        )
    row["seconds"] = time.perf_counter() - t0
    row = {k: row[k] for k in ROW_FIELDS}
    write_marker(row_file, {"eval_key": eval_key, "row": row})
    return row


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


def regime_pairs(
    cfg: LabSection,
    init_model: str | Path,
    train_pairs: Sequence[Any],
    out_dir: str | Path,
    *,
    max_new_tokens: int,
) -> list[Any]:
    """The pairs every run of the lab trains on, by ``cfg.regime``: ``late`` -- the first
    ``cfg.candidate_pairs`` that ``init_model`` judges right in both orders
    (:func:`late_regime_pairs`, cached in ``out_dir/regime-late.json``); ``hard`` -- those the
    teacher needed two tries or more for; ``all`` -- all of them."""
    if cfg.regime == "late":
        pairs = late_regime_pairs(
            init_model,
            list(train_pairs)[: cfg.candidate_pairs],
            Path(out_dir) / "regime-late.json",
            max_new_tokens=max_new_tokens,
        )
    elif cfg.regime == "hard":
        pairs = select_hard(train_pairs, min_difficulty=2)
    else:
        pairs = list(train_pairs)
    if not pairs:
        why = (
            f"{init_model} judged none of the first {cfg.candidate_pairs} training pairs right in "
            "both orders (is it a trained cold-start model?)"
            if cfg.regime == "late"
            else "no training pair has a difficulty of 2 or more"
            if cfg.regime == "hard"
            else "no training pairs were given"
        )
        raise ValueError(f"lab regime {cfg.regime!r}: no training pairs: {why}")
    return pairs


def run_lab(
    recipe: str,
    out_dir: str | Path,
    *,
    init_model: str | Path,
    train_pairs: Sequence[Any],
    heldout: Sequence[Any],
    overrides: Sequence[str] = (),
    workers: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run the recipe's declared ``lab:`` grid and return its rows (also ``lab.jsonl``).

    Args:
        recipe: recipe name or path; its ``lab:`` section declares the grid, its ``rl:`` section
            the rest of every run's settings.
        out_dir: gets ``runs/<variant>-lr<lr>-seed<s>/`` (each an ordinary RL run folder, reused
            when complete), ``regime-late.json``, ``lab.jsonl`` and ``summary.md``.
        init_model: the cold-start model every run starts from.
        train_pairs: the training pairs (e.g. curated toy pairs); the ``late`` regime keeps the
            first ``lab.candidate_pairs`` that ``init_model`` judges right in both orders, the
            ``hard`` regime those the teacher needed two tries or more for.
        heldout: the held-out pairs; the first ``lab.heldout_pairs`` are judged in both orders.
        overrides: dotted recipe overrides (``lab.lrs=[1e-4]``, ``rl.max_new_tokens=64``).
        workers: processes side by side (one torch thread each); default ``lab.workers``.
    """
    quiet_libraries()
    resolved = load_recipe(recipe, overrides)
    cfg = lab_section(resolved.get("lab"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    max_new = int(resolved["rl"]["max_new_tokens"])
    pairs = regime_pairs(cfg, init_model, train_pairs, out, max_new_tokens=max_new)
    held = list(heldout)[: cfg.heldout_pairs]
    cells = [(v, lr, s) for v in cfg.variants for lr in cfg.lrs for s in cfg.seeds]
    jobs = [
        (
            str(recipe),
            v,
            lr,
            s,
            str(out / "runs"),
            str(init_model),
            tuple(overrides),
            list(pairs),
            held,
            dataclasses.asdict(cfg),
        )
        for v, lr, s in cells
    ]
    rows = run_jobs(_run_one, jobs, workers or cfg.workers, "lab runs", progress=progress)
    tmp = out / "lab.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(out / "lab.jsonl")
    info = {
        "regime": cfg.regime,
        "train_pairs": len(pairs),
        "heldout_pairs": len(held),
        "recipe_lr": float(resolved["rl"]["lr"]),
    }
    (out / "summary.md").write_text(summary_markdown(rows, info))
    return rows


def read_lab(out_dir: str | Path) -> list[dict]:
    """The rows of ``out_dir/lab.jsonl``."""
    path = Path(out_dir) / "lab.jsonl"
    return list(read_jsonl(path))


def run_dir(out_dir: str | Path, row: dict) -> Path:
    """The folder of one lab run (its ``metrics.jsonl``, ``final/``, evaluation)."""
    return Path(out_dir) / "runs" / run_name(row["variant"], float(row["lr"]), int(row["seed"]))


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

EXAMPLES = """examples:
  r1reward lab --recipe toy-ci --out runs/lab-ci
  r1reward lab --recipe toy-ci lab.lrs=[1e-4,1e-3] lab.seeds=[0] --out runs/lab-ci-small
"""


def main(argv: list[str] | None = None) -> int:
    """``r1reward lab --recipe toy-ci [overrides] --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="r1reward lab",
        description="The collapse lab: run the recipe's declared grid of RL variants x learning "
        "rates x seeds from the cold-start model, evaluate each run on held-out pairs in both "
        "orders, and write lab.jsonl and summary.md. Finished runs are reused, so a killed lab "
        "reruns only what is missing.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe", required=True, help="a toy recipe name (toy-ci, toy-cpu) or YAML path"
    )
    parser.add_argument(
        "overrides", nargs="*", help="KEY=VALUE overrides, e.g. lab.lrs=[1e-4,1e-3]"
    )
    parser.add_argument(
        "--out", required=True, help="output folder (reused: finished runs are kept)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="runs side by side (default lab.workers)"
    )
    parser.add_argument(
        "--init-model",
        default=None,
        help="cold-start model folder (default: the profile's SFT model, built if missing)",
    )
    args = parser.parse_args(argv)

    profile = {v: k for k, v in artifacts.PROFILE_RECIPES.items()}.get(Path(args.recipe).stem)
    if profile is None or profile == "gpu":
        print(
            f"r1reward lab: --recipe {args.recipe}: the lab runs on the toy recipes "
            f"({', '.join(r for p, r in artifacts.PROFILE_RECIPES.items() if p != 'gpu')})",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = lab_section(load_recipe(args.recipe, args.overrides).get("lab"))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"r1reward lab: {exc}", file=sys.stderr)
        return 2
    quiet_libraries()
    init = args.init_model or artifacts.sft_model(profile)
    train = artifacts.curated_pairs(profile)
    held = artifacts.heldout_pairs(profile, cfg.heldout_pairs)
    rows = run_lab(
        args.recipe,
        args.out,
        init_model=init,
        train_pairs=train,
        heldout=held,
        overrides=args.overrides,
        workers=args.workers,
    )
    print((Path(args.out) / "summary.md").read_text())
    print(f"{len(rows)} runs -> {Path(args.out) / 'lab.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
