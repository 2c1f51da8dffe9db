"""Later fixes of StableReinforce's instabilities (after R1-Reward, arXiv 2505.02835), as small
pure torch functions beside the paper's own in :mod:`r1reward.algorithms`.

Fixes proposed after R1-Reward for the same family of instabilities, one short function each,
so the collapse lab (:mod:`r1reward.lab`) can put them on the same grid. The losses return what
:func:`r1reward.algorithms.policy_loss` returns (the loss and the statistics the trainer logs).

- Dr. GRPO: :func:`dr_grpo_advantages` (with ``policy_loss(length_norm=False)``).
- The Advantage Filter on group advantages: :func:`filter_group_advantages`.
- DAPO's clip-higher is ``policy_loss(clip_eps_high=...)``.
- GSPO: :func:`gspo_loss`; CISPO: :func:`cispo_loss`.
- Truncated importance sampling against the sampler: :func:`tis_weights`.

Shapes and masks as in :mod:`r1reward.algorithms`: ``[B, T]``, 1 on the action tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from r1reward.algorithms import as_float, check_mask, pre_clip_ratio, stats_dtype

__all__ = [
    "dr_grpo_advantages",
    "filter_group_advantages",
    "gspo_loss",
    "cispo_loss",
    "tis_weights",
]


def dr_grpo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """Dr. GRPO advantages (Liu et al. 2025, "Understanding R1-Zero-like training"): each reward
    minus its group's mean, *without* dividing by the group's std (which up-weights groups whose
    answers barely differ). ``rewards`` ``[B]`` in consecutive groups of ``group_size``; NaN/inf
    rewards are left out of the mean and get 0. Returns ``[B]``."""
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError("r1reward.algorithms.dr_grpo_advantages: rewards must be a 1-D tensor [B]")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"r1reward.algorithms.dr_grpo_advantages: batch {rewards.shape[0]} is not a multiple "
            f"of group_size {group_size}"
        )
    x = rewards.to(stats_dtype(rewards)).reshape(-1, group_size)
    valid = torch.isfinite(x)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    n = valid.sum(dim=1, keepdim=True).clamp_min(1).to(x.dtype)
    mean = torch.where(valid, x, zero).sum(dim=1, keepdim=True) / n
    return torch.where(valid, x - mean, zero).reshape(-1).to(as_float(rewards).dtype)


def filter_group_advantages(
    advantages: Tensor, filter_sigma: float | None = None
) -> tuple[Tensor, dict[str, float]]:
    """The Advantage Filter on per-sequence group advantages (GRPO's and Dr. GRPO's ``[B]``,
    already standardised within each group): NaN/inf become 0, then with ``filter_sigma`` every
    ``|A| > filter_sigma`` is zeroed (paper Sec. 3, the 3-sigma rule, here on group statistics).

    Returns:
        ``(filtered, stats)``: float32 ``[B]`` and ``{"filtered_fraction"}``, the share of the
        ``B`` sequences zeroed by the filter (0.0 without it).
    """
    adv = torch.nan_to_num(advantages.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if filter_sigma is None:
        return adv, {"filtered_fraction": 0.0}
    kept = adv.abs() <= filter_sigma
    return adv * kept, {"filtered_fraction": float(1 - kept.float().mean())}


def _seq_advantages(advantages: Tensor, valid: Tensor, fn: str) -> Tensor:
    """``[B]`` advantages; a ``[B, T]`` one (constant over each row's action tokens, as the
    trainer broadcasts sequence advantages) becomes its mean over the row's valid tokens."""
    B = valid.shape[0]
    if advantages.dim() == 2 and advantages.shape == valid.shape:
        zero = torch.zeros((), dtype=advantages.dtype, device=advantages.device)
        n = valid.sum(dim=1).clamp_min(1).to(advantages.dtype)
        advantages = torch.where(valid, advantages, zero).sum(dim=1) / n
    if advantages.shape != (B,):
        raise ValueError(f"r1reward.algorithms.{fn}: advantages must be [B] = ({B},)")
    return advantages


def _stats(ratio: Tensor, raw: Tensor, valid: Tensor, clipped: Tensor) -> dict[str, float]:
    with torch.no_grad():
        r = torch.where(valid, ratio.detach().double(), torch.zeros((), dtype=torch.float64))
        n = int(valid.sum())
        n_f = max(n, 1)
        finite_raw = torch.where(valid, raw.detach().double(), torch.zeros((), dtype=torch.float64))
        return {
            "clip_fraction": float((clipped & valid).sum()) / n_f,
            "pre_clip_fraction": 0.0,
            "max_ratio": float(torch.where(valid, r, torch.full_like(r, -float("inf"))).amax())
            if n
            else float("nan"),
            "mean_ratio": float(r.sum()) / n_f if n else float("nan"),
            "max_abs_log_ratio": float(finite_raw.abs().amax()) if n else float("nan"),
            "nonfinite_ratio_count": int((valid & ~torch.isfinite(ratio)).sum()),
            "approx_kl": float(
                torch.where(valid, (r - 1) - finite_raw, torch.zeros((), dtype=torch.float64)).sum()
            )
            / n_f,
            "num_tokens": n,
        }


def gspo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 3e-4,
    clip_eps_high: float | None = 4e-4,
    pre_clip: tuple[float, float] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): one importance ratio per
    *sequence*, ``s_i = exp(mean_t(logp - old_logp))`` (the geometric mean of the token ratios),
    clipped to ``[1 - clip_eps, 1 + clip_eps_high]`` -- ranges of 1e-4, as the paper's, because a
    length-normalised ratio moves little -- in PPO's min, one term per sequence:
    ``L = -mean_i min(s_i A_i, clip(s_i) A_i)``. ``pre_clip`` clamps the mean log-ratio before
    ``exp``. ``advantages`` ``[B]`` (or ``[B, T]`` constant over each row)."""
    valid = check_mask(mask, logp, fn="gspo_loss")
    B = logp.shape[0]
    adv = _seq_advantages(advantages.detach(), valid, "gspo_loss").to(as_float(logp).dtype)
    zero = torch.zeros((), dtype=as_float(logp).dtype, device=logp.device)
    raw = torch.where(valid, logp - old_logp.detach(), zero)
    n = valid.sum(dim=1)
    seq_lr = raw.sum(dim=1) / n.clamp_min(1).to(raw.dtype)
    if pre_clip is not None:
        seq_lr = seq_lr.clamp(pre_clip[0], pre_clip[1])
    s = seq_lr.exp()
    upper = 1.0 + (clip_eps if clip_eps_high is None else clip_eps_high)
    per_seq = -torch.minimum(s * adv, s.clamp(1.0 - clip_eps, upper) * adv)
    loss = torch.where(n > 0, per_seq, zero).sum() / max(B, 1)
    clipped = ((adv > 0) & (s > upper)) | ((adv < 0) & (s < 1.0 - clip_eps))
    tok_ratio = s[:, None].expand_as(raw)
    return loss, _stats(tok_ratio, raw, valid, clipped[:, None].expand_as(valid))


def cispo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps_high: float = 0.28,
    pre_clip: tuple[float, float] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """CISPO (MiniMax-M1, 2025): keep every token's gradient but clip its *importance weight*,
    ``L = -sum_t sg(min(r_t, 1 + clip_eps_high)) A_t logp_t / (number of tokens)`` -- the weight is
    a stopped-gradient constant, so no token is dropped by the clip as in PPO, and an exploding
    ratio cannot scale a gradient past ``1 + clip_eps_high``. Averaged over all action tokens of
    the batch. ``pre_clip`` clamps the log-ratio before ``exp`` (only for the statistics here:
    the weight is bounded anyway)."""
    valid = check_mask(mask, logp, fn="cispo_loss")
    B, T = logp.shape
    adv = advantages.detach()
    adv = adv[:, None].expand(B, T) if adv.shape == (B,) else adv
    dtype = as_float(logp).dtype
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    raw = torch.where(valid, logp.detach().to(dtype) - old_logp.detach().to(dtype), zero)
    ratio = pre_clip_ratio(raw, pre_clip)
    weight = torch.where(valid, ratio.clamp(max=1.0 + clip_eps_high), zero).detach()
    lp = torch.where(valid, logp.to(dtype), zero)
    per_token = -weight * torch.where(valid, adv.to(dtype), zero) * lp
    loss = per_token.sum() / valid.sum().clamp_min(1).to(dtype)
    clipped = valid & (ratio > 1.0 + clip_eps_high)
    return loss, _stats(ratio, raw, valid, clipped)


def tis_weights(
    old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, *, cap: float = 2.0
) -> Tensor:
    """Truncated importance sampling against the *sampler* (Yao et al. 2025, "On the
    rollout-training mismatch"): when a fast engine (vLLM, bfloat16) samples and the trainer
    scores, the two disagree; each token's loss is multiplied by ``min(pi_old / pi_sampler, cap)``,
    ``[B, T]``, 0 on masked positions. The trainer's ``old_logp`` and the engine's
    ``sampler_logp`` are both ``[B, T]``."""
    valid = check_mask(mask, old_logp, fn="tis_weights")
    zero = torch.zeros((), dtype=as_float(old_logp).dtype, device=old_logp.device)
    lr = torch.where(valid, old_logp.detach() - sampler_logp.detach(), zero)
    return torch.where(valid, lr.clamp(max=math.log(cap)).exp(), zero)
