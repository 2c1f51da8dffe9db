"""Seeded RL comparisons for the book: StableReinforce, its ablations and Reinforce++ side by side.

The chapters "Reinforce++ on a real run" and "StableReinforce end to end" call these helpers so
that their cells stay short; every run is an ordinary :func:`r1reward.train.rl.train_rl` run in
its own folder (``<root>/<variant>-seed<k>``), reused when it is complete and was made with the
same settings.

Variants (Table 6 of the paper, the RL rows):

- ``stable-reinforce``: Pre-Clip + Advantage Filter + consistency reward;
- ``no-filter``: StableReinforce without the Advantage Filter;
- ``no-preclip``: StableReinforce without Pre-Clip;
- ``reinforce++``: plain ratio, no filter, no consistency reward;
- ``no-consistency``: StableReinforce without the consistency reward;
- ``grpo``: GRPO (group-normalised advantages over several samples per prompt);
- ``dr-grpo``, ``dapo-clip-higher``, ``gspo``, ``cispo``: later fixes of the same instabilities
  on GRPO's groups (:mod:`r1reward.algorithms`, "later fixes").
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1reward.data.markers import read_marker, write_marker
from r1reward.evaluate import ModelSampler, SettingsMismatch, displayed, evaluate, load_records
from r1reward.lab_report import finite
from r1reward.models import load_model
from r1reward.profile import quiet_libraries
from r1reward.prompt import parse_judgment
from r1reward.recipes import load_recipe
from r1reward.train.rl import read_metrics, rl_inputs, train_rl

VARIANTS: dict[str, tuple[str, ...]] = {
    "stable-reinforce": ("rl.algo=stable-reinforce",),
    "no-filter": ("rl.algo=stable-reinforce", "rl.advantage_filter=false"),
    "no-preclip": ("rl.algo=stable-reinforce", "rl.pre_clip=false"),
    "reinforce++": ("rl.algo=reinforce++",),
    "no-consistency": ("rl.algo=stable-reinforce", "rl.consistency_reward=false"),
    "grpo": ("rl.algo=grpo",),
    "dr-grpo": ("rl.algo=dr-grpo",),
    "dapo-clip-higher": ("rl.algo=dapo-clip-higher",),
    "gspo": ("rl.algo=gspo",),
    "cispo": ("rl.algo=cispo",),
}


def run_variant(
    recipe: str,
    variant: str,
    seed: int,
    root: str | Path,
    *,
    init_model: str | Path,
    overrides: Sequence[str] = (),
    pairs: Sequence[Any] | None = None,
    name: str | None = None,
) -> Path:
    """Train one ``variant`` with ``seed`` from ``init_model``; return its run folder.

    A folder whose ``summary.json`` exists and whose ``variant.json`` records the same settings
    (the whole resolved recipe, so an edited recipe file is not mistaken for the old one) is
    returned as is (the run is not repeated). ``name`` replaces the folder name
    ``<variant>-seed<seed>``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: expected one of {sorted(VARIANTS)}")
    out = Path(root) / (name or f"{variant}-seed{seed}")
    ovr = [
        *VARIANTS[variant],
        *overrides,
        f"rl.seed={seed}",
        f"rl.init_model={init_model}",
        "rl.progress=false",
    ]
    resolved = load_recipe(recipe, ovr)
    key = {
        "recipe": recipe,
        "overrides": ovr,
        "n_pairs": None if pairs is None else len(pairs),
        "resolved": json.loads(json.dumps(resolved, sort_keys=True, default=str)),
    }
    stamp = out / "variant.json"
    if (out / "summary.json").is_file() and read_marker(stamp) == key:
        return out
    if out.exists():  # an older or unfinished run: start clean (stale evaluations included)
        shutil.rmtree(out)
    train_rl(**rl_inputs(resolved, pairs), out_dir=out)
    write_marker(stamp, key)
    return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    quiet_libraries()  # the workers' weight-loading bars and save warnings reach the page


def _pool(workers: int):
    """A pool of ``workers`` fresh processes with one torch thread each: on a small CPU machine
    two single-threaded runs side by side finish sooner than one after the other on two threads
    (30 toy-cpu steps: about 55 s a run two at a time, 100 s a run alone on two threads)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_one_thread,
    )


def run_jobs(fn: Any, jobs: list[tuple], workers: int, desc: str, progress: bool = True) -> list:
    """``[fn(*job) for job in jobs]``, in ``workers`` processes when ``workers > 1``, with a bar."""
    from functools import partial

    from tqdm.auto import tqdm as _tqdm

    tqdm = partial(_tqdm, disable=not progress)

    if workers < 1:
        raise ValueError(f"workers={workers}: expected >= 1")
    if workers == 1 or len(jobs) < 2:
        return [fn(*job) for job in tqdm(jobs, desc=desc)]
    from concurrent.futures import as_completed

    with _pool(min(workers, len(jobs))) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        for f in tqdm(as_completed(futures), total=len(jobs), desc=desc):
            results[futures[f]] = f.result()  # a failed run raises here, in the caller
    return results


def _run_job(recipe, variant, seed, root, init_model, overrides, pairs) -> Path:
    return run_variant(
        recipe, variant, seed, root, init_model=init_model, overrides=overrides, pairs=pairs
    )


def run_grid(
    recipe: str,
    variants: Sequence[str],
    seeds: Sequence[int],
    root: str | Path,
    *,
    init_model: str | Path,
    overrides: Sequence[str] = (),
    pairs: Sequence[Any] | None = None,
    workers: int = 1,
) -> dict[tuple[str, int], Path]:
    """:func:`run_variant` for every (variant, seed), ``workers`` at a time in separate
    processes (one torch thread each; 1: one after the other here); returns their folders.
    Every run is seeded, so the folders hold the same metrics either way (test_rl_experiments)."""
    jobs = [(v, s) for v in variants for s in seeds]
    paths = run_jobs(
        _run_job,
        [
            (
                recipe,
                v,
                s,
                str(root),
                str(init_model),
                tuple(overrides),
                None if pairs is None else list(pairs),
            )
            for v, s in jobs
        ],
        workers,
        "RL runs",
    )
    return dict(zip(jobs, paths))


def metrics_table(runs: dict[tuple[str, int], Path]) -> list[dict]:
    """Every step record of every run, with ``variant`` and ``seed`` added."""
    rows = []
    for (variant, seed), path in runs.items():
        for rec in read_metrics(path):
            rows.append({"variant": variant, "seed": seed, **rec})
    return rows


def _mean(recs: list[dict], key: str) -> float:
    return sum(r[key] for r in recs) / len(recs) if recs else float("nan")


def _finite_max(recs: list[dict], key: str) -> float:
    return max((r[key] for r in recs if finite(r[key])), default=float("nan"))


def stability(runs: dict[tuple[str, int], Path], *, last: int = 5) -> list[dict]:
    """One row per run: did it collapse (non-finite parameters), at which step, the largest loss,
    ratio and gradient norm seen, the count of non-finite ratios, and the accuracy, well-formed
    rate and response length averaged over its ``last`` steps."""
    rows = []
    for (variant, seed), path in runs.items():
        recs = read_metrics(path)
        bad = [r["step"] for r in recs if not r["params_finite"] or not finite(r["loss"])]
        tail = [r for r in recs if r["params_finite"] and finite(r["loss"])][-last:]
        rows.append(
            {
                "variant": variant,
                "seed": seed,
                "steps": len(recs),
                "collapsed": bool(bad),
                "first_nonfinite_step": bad[0] if bad else None,
                "max_abs_loss": max(
                    (abs(r["loss"]) for r in recs if finite(r["loss"])), default=float("nan")
                ),
                "max_ratio": max((r["max_ratio"] for r in recs), default=float("nan")),
                "max_grad_norm": _finite_max(recs, "grad_norm"),
                "nonfinite_ratios": sum(r["nonfinite_ratios"] for r in recs),
                "accuracy_end": _mean(tail, "accuracy"),
                "well_formed_end": _mean(tail, "well_formed"),
                "length_end": _mean(tail, "length_mean"),
            }
        )
    return rows


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def heldout_accuracy(
    model_path: str | Path,
    pairs: Sequence[Any],
    out_dir: str | Path,
    *,
    max_new_tokens: int = 128,
    batch_size: int = 64,
    sampled: bool = False,
) -> dict[str, float]:
    """Greedy held-out judgments of a model through :func:`r1reward.evaluate.evaluate` (both
    answer orders); returns the greedy accuracy, the accuracy of one sample at temperature 1
    (only with ``sampled=True``, which doubles the cost; else ``nan``), the greedy
    position bias (share of "1" verdicts; 0.5 is unbiased, 0 or 1 means the verdict ignores the
    content), the well-formed rate and the mean response length in tokens."""
    model, processor = load_model(str(model_path))
    sampler = ModelSampler(model, processor, max_new_tokens=max_new_tokens, batch_size=batch_size)
    run = functools.partial(
        evaluate,
        sampler,
        pairs,
        ks=(1,) if sampled else (),
        orders="both",
        out_dir=out_dir,
        batch_size=batch_size,
        progress=False,
    )
    try:
        summary = run()
    except SettingsMismatch:  # a cached evaluation made with other settings: make it anew
        shutil.rmtree(out_dir)
        summary = run()
    greedy = [
        r for r in load_records(Path(out_dir) / "results.jsonl") if r.get("sample") == "greedy"
    ]
    tok = processor.tokenizer
    texts = [r.get("text", "") for r in greedy]
    return {
        "accuracy": _num(summary["overall"]["greedy"]),
        "sampled_accuracy": _num(summary["overall"]["voting@1"]) if sampled else float("nan"),
        "position_bias": _num(summary["position_bias"]["greedy"]),  # None: no verdict at all
        "well_formed": sum(parse_judgment(t).well_formed for t in texts) / max(1, len(texts)),
        "length": sum(len(tok(t)["input_ids"]) for t in texts) / max(1, len(texts)),
        "summary": summary,
    }


def voting_eval(
    model_dir: str | Path,
    pairs: Sequence[Any],
    out_dir: str | Path,
    *,
    k_max: int = 15,
    max_new_tokens: int = 200,
    progress: bool = True,
) -> dict[str, Any]:
    """One greedy and ``k_max`` sampled judgments (temperature 1, seed 0, batches of 8) of every
    pair in both answer orders, through :func:`r1reward.evaluate.evaluate` with
    ``ks=(1, 5, k_max)``: the Voting@K / Any-correct@K evaluation of chapters 6 and 11, in one
    place so that both draw (or read) the same samples. Resumable and cached in ``out_dir``;
    returns the evaluation summary (:func:`r1reward.evaluate.accuracy_vs_k` on
    ``out_dir/results.jsonl`` gives the curves)."""
    model, processor = load_model(str(model_dir))
    sampler = ModelSampler(
        model, processor, batch_size=8, max_new_tokens=max_new_tokens, temperature=1.0, seed=0
    )
    return evaluate(
        sampler, pairs, ks=(1, 5, k_max), orders="both", out_dir=out_dir, progress=progress
    )


EVAL_COLUMNS = ("accuracy", "sampled_accuracy", "position_bias", "well_formed", "length")


def _eval_job(variant, seed, path, pairs, max_new_tokens, tag="heldout") -> dict:
    summary = json.loads((Path(path) / "summary.json").read_text())
    row = {"variant": variant, "seed": seed, "collapsed": bool(summary["collapsed"])}
    if summary["collapsed"]:
        row.update(dict.fromkeys(EVAL_COLUMNS, float("nan")))
    else:
        res = heldout_accuracy(
            Path(path) / "final",
            pairs,
            Path(path) / f"{tag}-{len(pairs)}",
            max_new_tokens=max_new_tokens,
        )
        row.update({k: res[k] for k in EVAL_COLUMNS})
    return row


def evaluate_runs(
    runs: dict[tuple[str, int], Path],
    pairs: Sequence[Any],
    *,
    max_new_tokens: int = 128,
    workers: int = 1,
    tag: str = "heldout",
) -> list[dict]:
    """Held-out greedy accuracy, well-formed rate and length of every run's final model
    (:func:`heldout_accuracy`, cached in ``<run>/<tag>-<n>``: give another ``tag`` for another
    set of as many pairs), ``workers`` models at a time; a run that collapsed has no final model
    and gets NaN with ``collapsed=True``."""
    jobs = [(v, s, str(path), list(pairs), max_new_tokens, tag) for (v, s), path in runs.items()]
    return run_jobs(_eval_job, jobs, workers, "held-out evaluation")


def _greedy_judgments(results_dir: str | Path, pairs: Sequence[Any]) -> list[tuple[Any, dict]]:
    """(pair, record) for every greedy record of ``results_dir/results.jsonl`` that judges one of
    ``pairs``; raises ``ValueError`` when there is none."""
    by_id = {p.id: p for p in pairs}
    out = [
        (by_id[r["pair_id"]], r)
        for r in load_records(Path(results_dir) / "results.jsonl")
        if r.get("sample") == "greedy" and r["pair_id"] in by_id
    ]
    if not out:
        raise ValueError(
            f"{results_dir}/results.jsonl: no greedy judgment of these {len(pairs)} pairs"
        )
    return out


def analysis_breakdown(results_dir: str | Path, pairs: Sequence[Any]) -> dict[str, float]:
    """:func:`r1reward.toy.checks.judgment_breakdown` of the greedy judgments of one evaluation
    (``results_dir/results.jsonl``, both orders) of toy ``pairs``: the shares of analyses whose
    observation is right, whose marks follow their own observation, whose closing sentence follows
    the marks, and the accuracy. Each judgment is checked against the pair *as shown* (its order)."""
    import dataclasses

    from r1reward.toy.checks import judgment_breakdown  # the toy's reading of its analyses

    shown, texts = [], []
    for pair, r in _greedy_judgments(results_dir, pairs):
        r1, r2, right = displayed(pair, r["order"])
        shown.append(dataclasses.replace(pair, response_1=r1, response_2=r2, preferred=right))
        texts.append(r.get("text") or "")
    return judgment_breakdown(shown, texts)


def accuracy_by(
    results_dir: str | Path, pairs: Sequence[Any], by: str | Sequence[str] = "difficulty"
) -> dict:
    """Greedy accuracy of one evaluation (``results_dir/results.jsonl``, both orders) per value
    of a pair attribute (``difficulty``, ``category``) or, failing that, of ``pair.meta[by]``
    (``task`` in the toy): ``{value: (accuracy, judgments)}``, values sorted. With several
    names (``("task", "difficulty")``) the keys are tuples of their values."""

    def one(p, name):
        v = getattr(p, name, None)
        return v if v is not None else (p.meta or {}).get(name)

    def value(p):
        return one(p, by) if isinstance(by, str) else tuple(one(p, name) for name in by)

    tally: dict[Any, list[int]] = {}
    for pair, r in _greedy_judgments(results_dir, pairs):
        tally.setdefault(value(pair), []).append(bool(r.get("correct")))
    return {
        k: (sum(v) / len(v), len(v)) for k, v in sorted(tally.items(), key=lambda kv: str(kv[0]))
    }
