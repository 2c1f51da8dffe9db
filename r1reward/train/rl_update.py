"""The learning half of an RL step: advantages over the whole batch, then the PPO epochs.

* **advantages** (steps 4-5 of :mod:`r1reward.train.rl`) -- Reinforce++ returns with the
  token-level KL inside the reward (:func:`r1reward.algorithms.token_rewards`), normalised over
  the *whole* batch across all processes with the Advantage Filter (:func:`global_normalize`), or
  GRPO's per-group advantages (:func:`compute_advantages`);
* **update** (step 6) -- ``ppo_epochs`` passes over the rollout in mini-batches with gradient
  accumulation over micro-batches, the configured surrogate (:func:`policy_loss`: PPO with
  Pre-Clip, GSPO or CISPO) and gradient clipping (:func:`ppo_update`).

The maths is in :mod:`r1reward.algorithms`; this is the machinery that feeds it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from r1reward import algorithms, algorithms_variants
from r1reward.recipes.rl import ALGO_PRESETS, RLConfig
from r1reward.train.rl_data import Rollout, batched_logprobs, micro_logprobs

__all__ = [
    "as_float",
    "compute_advantages",
    "global_normalize",
    "nanmax",
    "nanmean",
    "params_finite",
    "policy_loss",
    "ppo_update",
]

# --------------------------------------------------------------------------------------------
# Advantages: returns with KL inside, normalised over the whole batch on every process
# --------------------------------------------------------------------------------------------


def global_normalize(
    accelerator: Any, returns: torch.Tensor, mask: torch.Tensor, filter_sigma: float | None
) -> tuple[torch.Tensor, dict]:
    """Standardise ``returns`` ``[B, T]`` over all masked positions of *all* processes.

    Every process gathers the (padded) returns and masks of the others and calls
    :func:`algorithms.normalize_advantages` on the whole batch, then keeps its own rows, so the
    result equals one process holding the whole batch exactly (test_rl_distributed). Needs the
    same ``B`` on every process, which the trainer guarantees.
    """
    b, t = returns.shape
    if accelerator.num_processes == 1:
        return algorithms.normalize_advantages(returns, mask, filter_sigma=filter_sigma)
    device = accelerator.device
    r = accelerator.pad_across_processes(returns.to(device).contiguous(), dim=1)
    m = accelerator.pad_across_processes(mask.to(device).contiguous(), dim=1)
    all_r, all_m = accelerator.gather(r), accelerator.gather(m)
    adv, info = algorithms.normalize_advantages(all_r, all_m, filter_sigma=filter_sigma)
    start = accelerator.process_index * b
    return adv[start : start + b, :t].cpu(), info


def compute_advantages(
    accelerator: Any,
    cfg: RLConfig,
    reward: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None,
) -> tuple[torch.Tensor, dict]:
    """Advantages ``[B, T]`` for the configured algorithm (Reinforce++ returns with the KL in
    the reward and batch normalisation, or GRPO group advantages broadcast over tokens)."""
    sigma = cfg.filter_sigma if cfg.advantage_filter else None
    kind = ALGO_PRESETS[cfg.algo]["advantage"]
    if kind in ("group", "group-mean"):
        group = (
            algorithms.group_advantages
            if kind == "group"
            else algorithms_variants.dr_grpo_advantages
        )
        adv, info = algorithms_variants.filter_group_advantages(
            group(reward, int(cfg.samples_per_prompt)), sigma
        )
        return adv[:, None] * mask, info
    kl_r = kl if ALGO_PRESETS[cfg.algo]["kl_in"] == "reward" else None
    returns = algorithms.token_rewards(
        reward, mask, kl=kl_r, kl_coef=cfg.kl_coef if kl_r is not None else 0.0
    )
    return global_normalize(accelerator, returns, mask, sigma)


# --------------------------------------------------------------------------------------------
# The update: PPO epochs x mini-batches x micro-batches (gradient accumulation)
# --------------------------------------------------------------------------------------------


def ppo_update(
    accelerator: Any,
    model: Any,
    optimizer: Any,
    cfg: RLConfig,
    ro: Rollout,
    old_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    ref_logp: torch.Tensor | None,
    pad_id: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """``cfg.ppo_epochs`` passes over the rollout; each optimizer step sees ``mini_batch_size``
    samples, accumulated over micro-batches of ``micro_batch_size`` (Section 3.1, Eq. 3-4).

    ``old_logp``, ``advantages``, ``ref_logp``: ``[B, T]`` on the CPU, masked by ``ro.mask``.
    ``old_logp=None`` saves a forward pass: the samples of the first mini-batch of the first
    epoch are scored before any optimizer step, so their old log-probs are the detached current
    ones (as TRL does); only the other samples get a separate no-grad pass here. With dropout
    active (e.g. LoRA dropout) those first ratios then carry the dropout noise. Returns the
    step's diagnostics (mean loss, max gradient norm, max ratio, non-finite ratio
    count, clip fraction, number of optimizer steps).
    """
    if accelerator.gradient_accumulation_steps != cfg.grad_accum:
        raise ValueError(
            f"accelerator.gradient_accumulation_steps={accelerator.gradient_accumulation_steps} but "
            f"rl.mini_batch_size/micro_batch_size={cfg.grad_accum}: use make_accelerator(cfg)"
        )
    model.train()
    device = accelerator.device
    n = len(ro.texts)
    losses, grad_norms, max_ratio, nonfinite, clip_fr, updates = [], [], 0.0, 0, [], 0
    orders = [torch.randperm(n, generator=generator) for _ in range(cfg.ppo_epochs)]
    lazy: set[int] = set()
    if old_logp is None:  # score everything but the first mini-batch now, before any update
        lazy = set(orders[0][: cfg.mini_batch_size].tolist())
        old_logp = batched_logprobs(
            model,
            ro,
            pad_id,
            cfg.micro_batch_size,
            cfg.temperature,
            rows=orders[0][cfg.mini_batch_size :],
        )
    for order in orders:
        # micro-batches in order; accelerate syncs and steps every `grad_accum` of them (one
        # mini-batch), which also drives DeepSpeed's and FSDP's own accumulation
        for idx in order.split(cfg.micro_batch_size):
            with accelerator.accumulate(model):
                mask = ro.mask[idx].to(device)
                logp = micro_logprobs(model, ro, idx, pad_id, cfg.temperature)
                if lazy and lazy.issuperset(idx.tolist()):  # first mini-batch, first epoch
                    old_logp[idx] = logp.detach().float().cpu() * ro.mask[idx]
                    lazy -= set(idx.tolist())
                loss, info = policy_loss(
                    cfg, logp, old_logp[idx].to(device), advantages[idx].to(device), mask
                )
                if ref_logp is not None and ALGO_PRESETS[cfg.algo]["kl_in"] == "loss":
                    kl = algorithms.kl_estimate(
                        logp, ref_logp[idx].to(device), kind=cfg.kl_kind, mask=mask
                    )
                    loss = loss + cfg.kl_coef * ((kl.sum(1) / mask.sum(1).clamp(min=1)).mean())
                accelerator.backward(loss)  # divided by grad_accum inside accelerate
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    grad_norms.append(float("nan") if norm is None else as_float(norm))
                    updates += 1
                optimizer.step()  # a no-op until the mini-batch's last micro-batch
                optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            max_ratio = (
                nanmax([max_ratio, as_float(info["max_ratio"])])
                if info["num_tokens"]
                else max_ratio
            )
            nonfinite += int(info["nonfinite_ratio_count"])
            clip_fr.append(as_float(info["clip_fraction"]))
    return {
        "loss": nanmean(losses),
        "loss_max": nanmax(losses),
        "grad_norm": nanmax(grad_norms),
        "max_ratio": max_ratio,
        "nonfinite_ratios": nonfinite,
        "clip_fraction": nanmean(clip_fr),
        "optimizer_steps": updates,
    }


def policy_loss(
    cfg: RLConfig,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict]:
    """The configured surrogate (``rl.loss``) on one micro-batch, all ``[B, T]``: PPO's with
    Pre-Clip, clip-higher and the length normaliser as set, or GSPO's / CISPO's."""
    if cfg.loss == "gspo":
        return algorithms_variants.gspo_loss(
            logp, old_logp, advantages, mask, pre_clip=cfg.pre_clip_bounds
        )
    if cfg.loss == "cispo":
        return algorithms_variants.cispo_loss(
            logp,
            old_logp,
            advantages,
            mask,
            clip_eps_high=cfg.clip_eps_high if cfg.clip_eps_high is not None else 0.28,
            pre_clip=cfg.pre_clip_bounds,
        )
    return algorithms.policy_loss(
        logp,
        old_logp,
        advantages,
        mask,
        clip_eps=cfg.clip_eps,
        pre_clip=cfg.pre_clip_bounds,
        clip_eps_high=cfg.clip_eps_high,
        length_norm=bool(cfg.length_norm),
    )


def as_float(x: Any) -> float:
    """A tensor's (or a number's) value as a Python float."""
    return float(x.detach().float().item()) if torch.is_tensor(x) else float(x)


def nanmean(xs: list[float]) -> float:
    """The mean of ``xs`` (0.0 when empty; NaN in, NaN out)."""
    return float(np.mean(xs)) if xs else 0.0


def nanmax(xs: list[float]) -> float:
    """The largest of ``xs``, NaN when any is NaN (0.0 when empty)."""
    if not xs:
        return 0.0
    return float("nan") if any(math.isnan(x) for x in xs) else float(max(xs))


def params_finite(model: Any) -> bool:
    """Whether every parameter of ``model`` is finite (a model with NaN weights cannot sample)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
