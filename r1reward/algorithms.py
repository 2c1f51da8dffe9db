"""The maths of StableReinforce (R1-Reward, arXiv 2505.02835, Sec. 3), as small pure torch functions.

Nothing here holds trainer state, touches files, or moves tensors between devices: every function
takes tensors and returns tensors (plus, for the two that a trainer logs, a dict of Python
numbers). Shapes follow the project convention ``(batch, tokens)`` = ``[B, T]``; masks are 0/1
(or bool) tensors of the same shape, 1 on the *action* tokens (the generated response), 0 on the
prompt and padding. Masks need not be contiguous: left padding, right padding and gaps all work.

Paper map:

- Reinforce++ returns with a token-level KL penalty (Sec. 3, the Reinforce++ preliminaries):
  :func:`token_rewards`.
- Batch advantage normalisation and the **Advantage Filter** (Sec. 3, "Advantage Filter"; the
  3-sigma rule): :func:`normalize_advantages`.
- GRPO's per-group standardisation, for comparison: :func:`group_advantages`.
- The PPO clipped surrogate with **Pre-Clip** (Sec. 3, "Pre-CLIP"): :func:`pre_clip_ratio`,
  :func:`policy_loss`.
- Later fixes of the same instabilities, for the collapse lab, are in
  :mod:`r1reward.algorithms_variants` (Dr. GRPO, GSPO, CISPO, TIS, the filter on group
  advantages); DAPO's clip-higher and Dr. GRPO's length handling are options of
  :func:`policy_loss` (``clip_eps_high=``, ``length_norm=False``).
- KL estimators k1/k2/k3 (Schulman, "Approximating KL divergence", 2020): :func:`kl_estimate`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "PRE_CLIP_BOUNDS",
    "FILTER_SIGMA",
    "token_rewards",
    "normalize_advantages",
    "group_advantages",
    "pre_clip_ratio",
    "policy_loss",
    "ratio_stats",
    "kl_estimate",
]

#: Pre-Clip interval for the log-ratio, ``[log 1e-3, log 1e3]`` (paper Sec. 3).
PRE_CLIP_BOUNDS: tuple[float, float] = (math.log(1e-3), math.log(1e3))
#: The Advantage Filter threshold: the 3-sigma rule (paper Sec. 3).
FILTER_SIGMA: float = 3.0


# ----------------------------------------------------------------------------- helpers
#
# Shared with r1reward.algorithms_variants; not part of the maths a reader looks up.


def check_mask(mask: Tensor | None, like: Tensor, *, fn: str, name: str = "mask") -> Tensor:
    """``mask != 0`` as a bool tensor, checked against ``like``'s shape (all True if None)."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if not isinstance(mask, Tensor):
        raise TypeError(f"r1reward.algorithms.{fn}: {name} must be a torch.Tensor")
    if mask.shape != like.shape:
        raise ValueError(
            f"r1reward.algorithms.{fn}: {name} has shape {tuple(mask.shape)}, "
            f"expected {tuple(like.shape)}"
        )
    return mask if mask.dtype == torch.bool else mask != 0


def as_float(x: Tensor) -> Tensor:
    """``x`` itself if floating point, else converted to the default float dtype."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def stats_dtype(x: Tensor) -> torch.dtype:
    """float64 for statistics where the device has it (MPS has no float64)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


# ----------------------------------------------------------------------------- Reinforce++ returns


def token_rewards(
    rewards: Tensor,
    mask: Tensor,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
) -> Tensor:
    """Reinforce++ per-token returns with gamma = 1 (paper Sec. 3, Reinforce++).

    The per-token reward is ``r_t = -kl_coef * kl_t`` on every action token, plus the sequence
    reward on the *last* action token of the row; the return is the sum from ``t`` to the end,
    ``G_t = sum_{s >= t} r_s``. In Reinforce++ these returns, normalised over the batch
    (:func:`normalize_advantages`), are the advantages.

    Args:
        rewards: ``[B]`` sequence rewards (e.g. the R1-Reward of each sampled judgment).
        mask: ``[B, T]``, 1 on action tokens. Any layout (left/right padding, gaps); the last
            position with mask 1 receives the reward. A row with no action token gives zeros.
        kl: optional ``[B, T]`` per-token KL estimate (e.g. ``kl_estimate(logp, ref_logp)``);
            values at mask-0 positions are ignored, even NaN/inf.
        kl_coef: the KL coefficient beta. Ignored when ``kl`` is None.

    Returns:
        ``[B, T]`` returns, 0 where ``mask`` is 0, in the floating dtype of ``rewards`` (or of
        ``kl`` if that is wider); on the device of the inputs.
    """
    if not isinstance(rewards, Tensor) or not isinstance(mask, Tensor):
        raise TypeError("r1reward.algorithms.token_rewards: rewards and mask must be tensors")
    if mask.dim() != 2:
        raise ValueError(
            f"r1reward.algorithms.token_rewards: mask must be [B, T], got shape {tuple(mask.shape)}"
        )
    if rewards.shape != mask.shape[:1]:
        raise ValueError(
            f"r1reward.algorithms.token_rewards: rewards has shape {tuple(rewards.shape)}, "
            f"expected [B] = ({mask.shape[0]},) to match mask {tuple(mask.shape)}"
        )
    valid = check_mask(mask, mask, fn="token_rewards")
    dtype = as_float(rewards).dtype
    if kl is not None:
        check_mask(kl, mask, fn="token_rewards", name="kl")  # shape check
        dtype = torch.promote_types(dtype, as_float(kl).dtype)

    B, T = valid.shape
    per_token = torch.zeros((B, T), dtype=dtype, device=mask.device)
    if kl is not None and kl_coef != 0.0:
        per_token = torch.where(valid, -kl_coef * kl.to(dtype), per_token)

    # Last action token of each row, whatever the padding layout.
    positions = torch.arange(T, device=mask.device).expand(B, T)
    if T > 0:
        last = torch.where(valid, positions, -1).amax(dim=1)
    else:
        last = torch.full((B,), -1, dtype=torch.long, device=mask.device)
    has_action = last >= 0
    rows = torch.arange(B, device=mask.device)[has_action]
    per_token[rows, last[has_action]] += rewards.to(dtype)[has_action]

    # G_t = sum_{s >= t} r_s (reverse cumulative sum), then zero outside the action tokens.
    returns = per_token.flip(-1).cumsum(-1).flip(-1)
    return torch.where(valid, returns, torch.zeros((), dtype=dtype, device=mask.device))


# ----------------------------------------------------------------------------- advantages


def normalize_advantages(
    adv: Tensor,
    mask: Tensor | None = None,
    *,
    filter_sigma: float | None = None,
    eps: float = 1e-8,
) -> tuple[Tensor, dict[str, float]]:
    """Batch standardisation of advantages and the Advantage Filter (paper Sec. 3).

    ``A_hat = (A - mean) / (std + eps)`` where mean and the **population** standard deviation
    (divide by n, not n-1) are taken over every *valid* position: mask 1 and a finite value.
    NaN/inf values never enter the statistics (so one of them cannot poison the batch) and come
    back as 0, as do mask-0 positions. With ``filter_sigma`` (3.0 in the paper) this is the
    Advantage Filter: every standardised value with ``|A_hat| > filter_sigma`` is set to 0. The
    filter acts on the standardised values, so its bounds are centred on the mean (the released
    reference code centred them on the raw mean of the *unstandardised* advantages, a bug).

    Reinforce++ normalises over the whole batch; when almost every sample is right the few wrong
    ones get huge advantages -- 255 rewards of 1 and one of 0 give ``-sqrt(255) ~ -15.97`` -- which
    is what the filter removes. Statistics are computed in float64 (float32 on MPS); the result
    has the dtype of ``adv`` (the default float dtype for integer input).

    Args:
        adv: ``[B]`` or ``[B, T]`` (any shape) raw advantages, e.g. from :func:`token_rewards`.
        mask: same shape as ``adv``, 1 where the value counts; None means all positions.
        filter_sigma: threshold of the Advantage Filter (must be > 0), or None for no filter.
        eps: added to the std before dividing.

    Returns:
        ``(normalised, stats)``: a tensor of ``adv``'s shape, and a dict of Python numbers:
        ``mean``, ``std`` (of the valid raw values; 0.0 if there are none), ``filtered_fraction``
        (fraction of valid positions zeroed by the filter, in [0, 1]; 0.0 without filter or
        without valid positions), ``num_valid`` (mask 1 and finite), ``num_nonfinite`` (mask 1 and
        NaN/inf), ``num_filtered``, ``max_abs`` (largest ``|A_hat|`` before the filter).
    """
    if not isinstance(adv, Tensor):
        raise TypeError("r1reward.algorithms.normalize_advantages: adv must be a torch.Tensor")
    if filter_sigma is not None and not (filter_sigma > 0):
        raise ValueError(
            f"r1reward.algorithms.normalize_advantages: filter_sigma must be > 0, got {filter_sigma!r}"
        )
    in_mask = check_mask(mask, adv, fn="normalize_advantages")
    out_dtype = as_float(adv).dtype
    x = adv.to(stats_dtype(adv))
    finite = torch.isfinite(x)
    valid = in_mask & finite
    zero = torch.zeros((), dtype=x.dtype, device=x.device)

    n = valid.sum()
    n_safe = n.clamp_min(1).to(x.dtype)
    mean = torch.where(valid, x, zero).sum() / n_safe
    centred = torch.where(valid, x - mean, zero)
    std = (centred.square().sum() / n_safe).sqrt()
    z = centred / (std + eps)

    keep = valid
    filtered = torch.zeros_like(valid)
    if filter_sigma is not None:
        filtered = valid & (z.abs() > filter_sigma)
        keep = valid & ~filtered
    out = torch.where(keep, z, zero).to(out_dtype)

    num_filtered = filtered.sum()
    max_abs = torch.where(valid, z.abs(), zero).amax() if z.numel() else zero
    packed = torch.stack(
        [
            mean,
            std,
            num_filtered.to(x.dtype) / n_safe,
            n.to(x.dtype),
            (in_mask & ~finite).sum().to(x.dtype),
            num_filtered.to(x.dtype),
            max_abs,
        ]
    ).tolist()
    stats = {
        "mean": packed[0],
        "std": packed[1],
        "filtered_fraction": packed[2],
        "num_valid": int(packed[3]),
        "num_nonfinite": int(packed[4]),
        "num_filtered": int(packed[5]),
        "max_abs": packed[6],
    }
    return out, stats


def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    eps: float = 1e-6,
    unbiased: bool = True,
) -> Tensor:
    """GRPO advantages: standardise each reward within its group (Shao et al. 2024, DeepSeekMath).

    The book contrasts this with Reinforce++'s batch normalisation (paper Sec. 3): in GRPO a
    group in which every sample is right has advantage 0 everywhere instead of a large negative
    value for a rare wrong sample elsewhere in the batch.

    ``A_i = (r_i - mean_g) / (std_g + eps)``. Groups are consecutive blocks of ``group_size``
    (the layout of ``num_return_sequences``: the samples of prompt ``k`` are rows
    ``k*group_size ... (k+1)*group_size - 1``). ``std_g`` is the **sample** standard deviation
    (n-1 denominator, ``unbiased=True``), as in the GRPO implementations of TRL and
    DeepSeekMath's ``torch.std``; pass ``unbiased=False`` for the population std. NaN/inf rewards
    are left out of their group's statistics and get advantage 0; a group with fewer than two
    finite rewards (for the sample std) or one with all rewards equal gives 0.

    Args:
        rewards: ``[B]`` sequence rewards, ``B`` a multiple of ``group_size``.
        group_size: samples per prompt (>= 1).

    Returns:
        ``[B]`` advantages in the floating dtype of ``rewards``.
    """
    if not isinstance(rewards, Tensor) or rewards.dim() != 1:
        raise ValueError("r1reward.algorithms.group_advantages: rewards must be a 1-D tensor [B]")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(
            f"r1reward.algorithms.group_advantages: group_size must be an int >= 1, got {group_size!r}"
        )
    if rewards.shape[0] % group_size != 0:
        raise ValueError(
            f"r1reward.algorithms.group_advantages: batch size {rewards.shape[0]} is not a multiple "
            f"of group_size {group_size}"
        )
    out_dtype = as_float(rewards).dtype
    x = rewards.to(stats_dtype(rewards)).reshape(-1, group_size)
    valid = torch.isfinite(x)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    n = valid.sum(dim=1, keepdim=True).to(x.dtype)
    mean = torch.where(valid, x, zero).sum(dim=1, keepdim=True) / n.clamp_min(1)
    centred = torch.where(valid, x - mean, zero)
    denom = (n - 1 if unbiased else n).clamp_min(1)
    std = (centred.square().sum(dim=1, keepdim=True) / denom).sqrt()
    enough = n >= (2 if unbiased else 1)
    adv = torch.where(valid & enough, centred / (std + eps), zero)
    return adv.reshape(-1).to(out_dtype)


# ----------------------------------------------------------------------------- policy loss


def pre_clip_ratio(
    log_ratio: Tensor, bounds: tuple[float, float] | None = PRE_CLIP_BOUNDS
) -> Tensor:
    """Pre-Clip (paper Sec. 3): clamp the log-ratio *before* ``exp``.

    ``ratio = exp(clamp(logp - old_logp, log 1e-3, log 1e3))``. The ratio then lies in
    ``[1e-3, 1e3]`` and can neither overflow nor, with a negative advantage, blow up the loss.
    With ``bounds=None`` this is the plain ``exp`` of Reinforce++/PPO, which overflows to inf in
    float32 and bfloat16 once the log-ratio passes about 88.7.

    Args:
        log_ratio: ``[B, T]`` ``logp - old_logp``.
        bounds: ``(low, high)`` for the log-ratio, or None for no Pre-Clip.

    Returns:
        ``[B, T]`` importance ratios.
    """
    if bounds is None:
        return log_ratio.exp()
    low, high = bounds
    return log_ratio.clamp(min=low, max=high).exp()


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    pre_clip: tuple[float, float] | None = PRE_CLIP_BOUNDS,
    clip_eps_high: float | None = None,
    length_norm: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate with optional Pre-Clip (paper Sec. 3: PPO/Reinforce++ and Pre-CLIP).

    Per action token: ``l_t = -min(r_t * A_t, clip(r_t, 1 - eps, 1 + eps) * A_t)`` with
    ``r_t = exp(logp_t - old_logp_t)`` (Pre-Clip: the log-ratio clamped to ``pre_clip`` before
    ``exp``, see :func:`pre_clip_ratio`). The loss is the masked mean of ``l_t`` over each
    sequence's action tokens, then the mean over the ``B`` sequences; a row with no action token
    contributes 0 to that mean (it still counts in ``B``). With ``pre_clip=None`` the ratio is the
    plain ``exp`` and an overflow shows: an infinite ratio with a negative advantage makes the loss
    ``+inf``, with a zero advantage ``NaN``.

    Masked positions never matter: values there (even ``-inf`` log-probs or NaN advantages) are
    replaced with ``torch.where`` before any arithmetic, so they put no NaN into the loss or the
    gradient. ``old_logp`` and ``advantages`` are treated as constants (detached); the gradient
    flows to ``logp``. Arithmetic is in the dtype of ``logp``.

    With Pre-Clip the loss and its gradient are finite for any finite inputs and even for an
    infinite log-prob on one side (e.g. ``logp = -inf``: the ratio becomes 1e-3). A NaN log-ratio
    (a NaN input, or ``-inf - (-inf)`` on a valid token) is not an overflow: it stays NaN, so the
    caller sees it, and is counted in ``nonfinite_ratio_count``.

    Args:
        logp: ``[B, T]`` log-probabilities of the sampled tokens under the current policy.
        old_logp: ``[B, T]`` the same under the policy that sampled them.
        advantages: ``[B]`` (one per sequence, broadcast over its tokens) or ``[B, T]``.
        mask: ``[B, T]``, 1 on action tokens.
        clip_eps: PPO's epsilon (0.2 in the paper).
        pre_clip: ``(low, high)`` bounds of the log-ratio, default ``(log 1e-3, log 1e3)``;
            None disables Pre-Clip.
        clip_eps_high: the upper clip ``1 + clip_eps_high`` when given (DAPO's *clip-higher*,
            Yu et al. 2025: 0.28 against a lower 0.2, so rare tokens with a positive advantage
            can still grow); None keeps PPO's symmetric ``1 + clip_eps``.
        length_norm: True (default) averages each sequence over its own tokens; False divides
            every sequence's token sum by the same constant ``T`` (Dr. GRPO, Liu et al. 2025:
            the ``1/|o_i|`` factor favours short right answers and long wrong ones).

    Returns:
        ``(loss, stats)``: a scalar tensor with gradient, and a dict of Python numbers over the
        valid (mask 1) tokens: ``clip_fraction`` (share of tokens where PPO's clip bites, i.e.
        the clipped branch is taken and its gradient is 0: ``A > 0 and r > 1+eps`` or
        ``A < 0 and r < 1-eps``), ``pre_clip_fraction`` (share whose log-ratio lay outside the
        Pre-Clip bounds; 0 without Pre-Clip), ``max_ratio`` and ``mean_ratio`` (of the ratio as
        used, after Pre-Clip; may be inf/NaN without it), ``max_abs_log_ratio`` (before
        Pre-Clip), ``nonfinite_ratio_count`` (tokens whose ratio is inf or NaN),
        ``approx_kl`` (mean of ``(r - 1) - log r``, the k3 estimate of KL(old || new)),
        ``num_tokens``. Ratio statistics are NaN when there is no valid token.
    """
    valid, advantages = _check_policy_inputs(logp, old_logp, advantages, mask, clip_eps, pre_clip)
    B, T = logp.shape
    dtype = as_float(logp).dtype
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    # Replace masked positions first (torch.where, not multiplication: 0 * inf = NaN).
    log_ratio = torch.where(valid, logp.to(dtype) - old_logp.detach().to(dtype), zero)
    adv = torch.where(valid, advantages.detach().to(dtype), zero)

    ratio = pre_clip_ratio(log_ratio, pre_clip)
    clip = (1.0 - clip_eps, 1.0 + (clip_eps if clip_eps_high is None else clip_eps_high))
    surrogate = torch.minimum(ratio * adv, ratio.clamp(*clip) * adv)
    per_token = torch.where(valid, -surrogate, zero)
    # each sequence's mean over its own tokens, or (Dr. GRPO) its sum over the constant T
    n_tok = valid.sum(dim=1).clamp_min(1).to(dtype) if length_norm else max(T, 1)
    loss = (per_token.sum(dim=1) / n_tok).sum() / max(B, 1)
    return loss, ratio_stats(ratio, log_ratio, adv, valid, clip=clip, pre_clip=pre_clip)


def _check_policy_inputs(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    pre_clip: tuple[float, float] | None,
) -> tuple[Tensor, Tensor]:
    """The checks of :func:`policy_loss`; returns the bool mask and ``advantages`` as ``[B, T]``."""
    for name, value in (("logp", logp), ("old_logp", old_logp), ("mask", mask)):
        if not isinstance(value, Tensor):
            raise TypeError(f"r1reward.algorithms.policy_loss: {name} must be a torch.Tensor")
    if logp.dim() != 2:
        raise ValueError(
            f"r1reward.algorithms.policy_loss: logp must be [B, T], got shape {tuple(logp.shape)}"
        )
    check_mask(old_logp, logp, fn="policy_loss", name="old_logp")
    valid = check_mask(mask, logp, fn="policy_loss")
    if not isinstance(advantages, Tensor):
        raise TypeError("r1reward.algorithms.policy_loss: advantages must be a torch.Tensor")
    B, T = logp.shape
    if advantages.shape == (B,):
        advantages = advantages[:, None].expand(B, T)
    elif advantages.shape != (B, T):
        raise ValueError(
            f"r1reward.algorithms.policy_loss: advantages has shape {tuple(advantages.shape)}, "
            f"expected [B] = ({B},) or [B, T] = ({B}, {T})"
        )
    if not clip_eps >= 0:
        raise ValueError(f"r1reward.algorithms.policy_loss: clip_eps must be >= 0, got {clip_eps}")
    if pre_clip is not None and not pre_clip[0] <= pre_clip[1]:
        raise ValueError(
            f"r1reward.algorithms.policy_loss: pre_clip must be (low, high), got {pre_clip}"
        )
    return valid, advantages


def ratio_stats(
    ratio: Tensor,
    log_ratio: Tensor,
    adv: Tensor,
    valid: Tensor,
    *,
    clip: tuple[float, float],
    pre_clip: tuple[float, float] | None,
) -> dict[str, float]:
    """What :func:`policy_loss` reports beside the loss, over the valid tokens of ``valid``
    ``[B, T]``: ``ratio`` (as used, after Pre-Clip), ``log_ratio`` (before it) and ``adv``, all
    ``[B, T]`` and 0 at masked positions; ``clip`` the PPO interval ``(1 - eps, 1 + eps_high)``.
    The keys are listed in :func:`policy_loss`'s docstring."""
    low, high = clip
    with torch.no_grad():
        # Masks are decided in the working dtype (as the loss saw it); sums and counts are taken
        # in float64 (float32 on MPS) so bfloat16/float16 inputs still give exact token counts.
        sd = stats_dtype(log_ratio)
        clipped = valid & (((adv > 0) & (ratio > high)) | ((adv < 0) & (ratio < low)))
        if pre_clip is not None:
            outside = valid & ((log_ratio < pre_clip[0]) | (log_ratio > pre_clip[1]))
            used_log_ratio = log_ratio.clamp(pre_clip[0], pre_clip[1])
        else:
            outside = torch.zeros_like(valid)
            used_log_ratio = log_ratio
        r = ratio.detach().to(sd)
        lr = log_ratio.detach().to(sd)
        used_lr = used_log_ratio.detach().to(sd)
        zero_s = torch.zeros((), dtype=sd, device=log_ratio.device)
        n = valid.sum()
        n_f = n.clamp_min(1).to(sd)
        if n > 0:
            max_ratio = torch.where(valid, r, torch.full_like(r, -float("inf"))).amax()
            mean_ratio = torch.where(valid, r, zero_s).sum() / n_f
            max_abs_lr = torch.where(valid, lr.abs(), zero_s).amax()
            approx_kl = torch.where(valid, (r - 1.0) - used_lr, zero_s).sum() / n_f
        else:
            max_ratio = mean_ratio = max_abs_lr = approx_kl = torch.full(
                (), float("nan"), dtype=sd, device=log_ratio.device
            )
        packed = torch.stack(
            [
                clipped.sum().to(sd) / n_f,
                outside.sum().to(sd) / n_f,
                max_ratio.to(sd),
                mean_ratio.to(sd),
                max_abs_lr.to(sd),
                (valid & ~torch.isfinite(ratio)).sum().to(sd),
                approx_kl.to(sd),
                n.to(sd),
            ]
        ).tolist()
    return {
        "clip_fraction": packed[0],
        "pre_clip_fraction": packed[1],
        "max_ratio": packed[2],
        "mean_ratio": packed[3],
        "max_abs_log_ratio": packed[4],
        "nonfinite_ratio_count": int(packed[5]),
        "approx_kl": packed[6],
        "num_tokens": int(packed[7]),
    }


# ----------------------------------------------------------------------------- KL


def kl_estimate(
    logp: Tensor,
    ref_logp: Tensor,
    kind: str = "k1",
    *,
    mask: Tensor | None = None,
    clamp: float = 20.0,
) -> Tensor:
    """Per-token estimators of KL(pi || pi_ref) from tokens sampled by pi (paper Sec. 3, the KL term of Reinforce++).

    With ``d = logp - ref_logp`` (Schulman 2020):

    - ``"k1"``: ``d`` -- unbiased, but negative on single tokens (Reinforce++'s reward penalty).
    - ``"k2"``: ``d**2 / 2`` -- biased, always >= 0.
    - ``"k3"``: ``exp(-d) + d - 1`` -- unbiased and always >= 0 (GRPO's loss penalty). The
      log-ratio ``-d`` is clamped to ``[-clamp, clamp]`` before ``exp`` so a huge difference
      cannot overflow (``exp(20) ~ 4.9e8``); it is computed as ``expm1(x) - x`` and clamped at 0
      so rounding can never make it negative.

    Gradients flow to both inputs (detach ``ref_logp`` yourself if it is a constant).

    Args:
        logp: ``[B, T]`` log-probs of the sampled tokens under the policy.
        ref_logp: ``[B, T]`` the same under the reference model.
        kind: ``"k1"``, ``"k2"`` or ``"k3"``.
        mask: optional ``[B, T]``; positions with 0 come back as 0 (whatever the inputs there).
        clamp: bound of the log-ratio for k3 (> 0).

    Returns:
        ``[B, T]`` per-token estimates.
    """
    if not isinstance(logp, Tensor) or not isinstance(ref_logp, Tensor):
        raise TypeError("r1reward.algorithms.kl_estimate: logp and ref_logp must be tensors")
    check_mask(ref_logp, logp, fn="kl_estimate", name="ref_logp")
    d = as_float(logp) - as_float(ref_logp)
    if mask is not None:
        valid = check_mask(mask, logp, fn="kl_estimate")
        # Replace masked positions *before* the arithmetic so -inf/NaN there give no NaN gradient.
        d = torch.where(valid, d, torch.zeros((), dtype=d.dtype, device=d.device))
    if kind == "k1":
        est = d
    elif kind == "k2":
        est = 0.5 * d.square()
    elif kind == "k3":
        x = (-d).clamp(min=-clamp, max=clamp)
        est = (torch.expm1(x) - x).clamp_min(0.0)
    else:
        raise ValueError(
            f"r1reward.algorithms.kl_estimate: kind must be 'k1', 'k2' or 'k3', got {kind!r}"
        )
    if mask is not None:
        est = torch.where(valid, est, torch.zeros((), dtype=est.dtype, device=est.device))
    return est
