"""The metrics of an RL step and the one definition of a collapsed step.

:func:`step_record` builds the ``metrics.jsonl`` record of a step (global means and maxima over
all processes), :func:`log_step` writes it to the file, the trackers and the progress bar, and
:func:`collapse_reason` says whether (and why) a record counts as collapsed -- the rule
:func:`r1reward.train.rl.train_rl` stops on and :func:`r1reward.lab.collapse_step` applies to a
whole run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from r1reward.recipes.rl import RLConfig
from r1reward.train.checkpoints import append_metrics
from r1reward.train.rl_data import Rollout
from r1reward.train.rl_update import as_float

__all__ = ["collapse_reason", "flat_config", "log_step", "step_record"]


def step_record(
    accelerator: Any,
    cfg: RLConfig,
    step: int,
    ro: Rollout,
    parts: dict,
    update: dict,
    kl: torch.Tensor | None,
    adv: torch.Tensor,
    adv_info: dict,
    finite: bool,
    *,
    seconds_since: float,
) -> dict:
    """The ``metrics.jsonl`` record of RL step ``step`` (0-based): rewards, lengths and the
    update's diagnostics as global means (or maxima) over all processes, and the seconds since
    ``seconds_since`` (a ``time.perf_counter()`` value taken when the step began)."""
    lengths = ro.mask.sum(1)
    per_sample = {
        "reward": parts["total"],
        "reward_format": parts["format"],
        "reward_result": parts["result"],
        "reward_consistency": parts["consistency"],
        # NaN where the judge was not asked (consistency reward off, judge not free)
        "consistent": torch.where(
            parts["consistency"].isnan(), parts["consistency"], (parts["consistency"] == 1).float()
        ),
        "length": lengths,
        "truncated": torch.tensor([f == "length" for f in ro.finish], dtype=torch.float32),
    }
    # every process's samples, and every process's update diagnostics ([processes, 7])
    samples = {
        k: accelerator.gather(v.to(accelerator.device)).float().cpu() for k, v in per_sample.items()
    }
    kl_mean = float(kl.sum() / ro.mask.sum().clamp(min=1)) if kl is not None else 0.0
    local = torch.tensor(
        [
            update["loss"],
            update["grad_norm"],
            update["max_ratio"],
            update["nonfinite_ratios"],
            update["clip_fraction"],
            kl_mean,
            float(not finite),
        ],
        device=accelerator.device,
    )
    loss, grad_norm, max_ratio, nonfinite, clip_fraction, kl_per_process, bad_params = (
        accelerator.gather(local[None]).cpu().unbind(1)
    )
    dt = time.perf_counter() - seconds_since
    acted = ro.mask > 0
    return {
        "step": step + 1,
        "algo": cfg.algo,
        "reward": _mean(samples["reward"]),
        "reward_format": _mean(samples["reward_format"]),
        "reward_result": _mean(samples["reward_result"]),
        "reward_consistency": _mean(samples["reward_consistency"]),
        "accuracy": _mean(samples["reward_result"]),
        "well_formed": _mean(samples["reward_format"]),
        "consistency_rate": _mean(samples["consistent"]),
        "length_mean": _mean(samples["length"]),
        "length_max": float(samples["length"].max()),
        "truncated": _mean(samples["truncated"]),
        "loss": float(loss.mean()),
        "grad_norm": float(grad_norm.max()),
        "max_ratio": float(max_ratio.max()),
        "nonfinite_ratios": int(nonfinite.sum()),
        "clip_fraction": float(clip_fraction.mean()),
        "kl": float(kl_per_process.mean()),
        "filtered_fraction": as_float(adv_info.get("filtered_fraction", 0.0)),
        "adv_min": float(adv[acted].min()) if ro.mask.sum() else 0.0,
        "adv_max": float(adv[acted].max()) if ro.mask.sum() else 0.0,
        "reward_std": float(samples["reward"].std(unbiased=False)),
        "params_finite": bool(bad_params.sum() == 0),
        "samples": int(samples["reward"].numel()),
        "processes": accelerator.num_processes,
        "seconds": dt,
        "samples_per_s": samples["reward"].numel() / dt,
    }


def log_step(accelerator: Any, out_dir: Path, cfg: RLConfig, rec: dict, bar: Any) -> None:
    """A step's record to ``metrics.jsonl`` (main process), the trackers and the progress bar."""
    if accelerator.is_main_process:
        append_metrics(out_dir, rec)
    if cfg.report_to:
        accelerator.log(
            {k: v for k, v in rec.items() if isinstance(v, int | float)}, step=rec["step"]
        )
    bar.set_postfix(
        acc=f"{rec['accuracy']:.2f}", len=f"{rec['length_mean']:.0f}", loss=f"{rec['loss']:.3g}"
    )


def collapse_reason(
    rec: dict, max_new_tokens: int, *, min_well_formed: float = 0.5, length_fraction: float = 0.9
) -> str | None:
    """Why the step of metrics record ``rec`` counts as collapsed, or ``None``: ``"non-finite"``
    (parameters or loss no longer finite), ``"ill-formed"`` (fewer than ``min_well_formed`` of its
    sampled judgments well formed) or ``"length"`` (their mean length reached
    ``length_fraction * max_new_tokens``: the paper's "length hits the maximum", Sec. 3.1).
    The one definition of collapse; :func:`r1reward.lab.collapse_step` applies it to a run."""
    loss = rec.get("loss", 0.0)
    if not rec.get("params_finite", True) or not (
        isinstance(loss, int | float) and math.isfinite(loss)
    ):
        return "non-finite"
    if rec["well_formed"] < min_well_formed:
        return "ill-formed"
    if rec["length_mean"] >= length_fraction * max_new_tokens:
        return "length"
    return None


def _mean(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else 0.0


def flat_config(d: dict, prefix: str = "") -> dict:
    """A nested config as one level of ``a.b`` keys with plain values (for the trackers)."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)
    return out
