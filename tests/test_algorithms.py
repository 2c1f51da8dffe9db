"""Tests for r1reward.algorithms: returns, normalisation + Advantage Filter, PPO with Pre-Clip, KL.

Reference values are computed here by deliberately naive loops (or closed forms), never pasted in.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from r1reward.algorithms import (
    FILTER_SIGMA,
    PRE_CLIP_BOUNDS,
    group_advantages,
    kl_estimate,
    normalize_advantages,
    policy_loss,
    pre_clip_ratio,
    token_rewards,
)

F32_MAX = float(torch.finfo(torch.float32).max)

# ----------------------------------------------------------------------------- strategies


@st.composite
def batch_shapes(draw, max_b=4, max_t=6):
    return draw(st.integers(1, max_b)), draw(st.integers(1, max_t))


@st.composite
def masks(draw, shape):
    bits = draw(st.lists(st.booleans(), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
    return torch.tensor(bits, dtype=torch.bool).reshape(shape)


def f32_tensor(draw, shape, lo, hi, *, nan=False, inf=False):
    import numpy as np

    arr = draw(
        arrays(
            np.float32,
            shape,
            elements=st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False)
            if not (nan or inf)
            else st.one_of(
                st.floats(lo, hi, width=32, allow_nan=False, allow_infinity=False),
                st.sampled_from(
                    ([float("nan")] if nan else []) + ([float("inf"), -float("inf")] if inf else [])
                ),
            ),
        )
    )
    return torch.from_numpy(arr.copy())


# ----------------------------------------------------------------------------- token_rewards


def naive_returns(rewards, mask, kl=None, kl_coef=0.0):
    B, T = mask.shape
    out = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        idx = [t for t in range(T) if mask[b, t]]
        if not idx:
            continue
        per = {t: (-kl_coef * float(kl[b, t]) if kl is not None else 0.0) for t in idx}
        per[idx[-1]] += float(rewards[b])
        running = 0.0
        for t in reversed(idx):
            running += per[t]
            out[b, t] = running
    return out


def test_token_rewards_without_kl_puts_the_reward_on_every_action_token():
    r = torch.tensor([1.0, 0.0, 2.0])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]])
    out = token_rewards(r, mask)
    expected = mask.float() * r[:, None]
    torch.testing.assert_close(out, expected)


def test_token_rewards_left_padding_and_gaps():
    r = torch.tensor([3.0, 5.0])
    mask = torch.tensor([[0, 0, 1, 1], [1, 0, 1, 0]])
    kl = torch.tensor([[9.0, 9.0, 0.5, 0.25], [1.0, 9.0, 2.0, 9.0]])
    out = token_rewards(r, mask, kl, kl_coef=0.1)
    # row 0: reward on column 3; row 1: reward on column 2, gap at column 1, nothing after it
    torch.testing.assert_close(
        out,
        torch.tensor(
            [[0.0, 0.0, 3.0 - 0.05 - 0.025, 3.0 - 0.025], [5.0 - 0.1 - 0.2, 0.0, 5.0 - 0.2, 0.0]]
        ),
    )


def test_token_rewards_empty_rows_and_garbage_outside_mask():
    r = torch.tensor([4.0, 1.0])
    mask = torch.tensor([[0, 0, 0], [1, 1, 0]])
    kl = torch.tensor([[float("nan"), float("inf"), 1.0], [0.5, 0.5, float("nan")]])
    out = token_rewards(r, mask, kl, kl_coef=1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0]]))


def test_token_rewards_first_token_return_is_reward_minus_total_kl():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(5, 9, generator=g) > 0.3
    mask[:, 0] = True
    r = torch.randn(5, generator=g)
    kl = torch.randn(5, 9, generator=g)
    out = token_rewards(r, mask, kl, kl_coef=0.05)
    first = out[torch.arange(5), mask.float().argmax(dim=1)]
    torch.testing.assert_close(first, r - 0.05 * (kl * mask).sum(dim=1))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_token_rewards_matches_naive_loop(data):
    B, T = data.draw(batch_shapes(max_b=4, max_t=7))
    mask = data.draw(masks((B, T)))
    r = f32_tensor(data.draw, (B,), -5, 5)
    kl = f32_tensor(data.draw, (B, T), -3, 3)
    coef = data.draw(st.sampled_from([0.0, 0.01, 1.0]))
    out = token_rewards(r, mask, kl, coef)
    assert out.shape == (B, T) and out.dtype == torch.float32
    assert (out[~mask] == 0).all()
    torch.testing.assert_close(out.double(), naive_returns(r, mask, kl, coef), atol=1e-4, rtol=1e-5)


def test_token_rewards_dtypes_and_shape_errors():
    out = token_rewards(torch.tensor([1, 0]), torch.ones(2, 3, dtype=torch.long))
    assert out.dtype == torch.get_default_dtype()
    out = token_rewards(torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 2))
    assert out.dtype == torch.float64
    assert token_rewards(torch.zeros(2), torch.ones(2, 0)).shape == (2, 0)
    with pytest.raises(ValueError, match="rewards"):
        token_rewards(torch.zeros(3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask"):
        token_rewards(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="kl"):
        token_rewards(torch.zeros(2), torch.ones(2, 4), torch.zeros(2, 3), 0.1)


# ----------------------------------------------------------------------------- normalisation


def test_paper_example_255_right_one_wrong():
    rewards = torch.ones(256)
    rewards[17] = 0.0
    adv, stats = normalize_advantages(rewards)
    # closed form: mean 255/256, population std sqrt(255)/256 -> the wrong sample gets -sqrt(255)
    assert adv[17].item() == pytest.approx(-math.sqrt(255), rel=1e-5)
    assert adv[17].item() == pytest.approx(-15.97, abs=0.01)
    assert adv[0].item() == pytest.approx(1 / math.sqrt(255), rel=1e-5)
    assert stats["mean"] == pytest.approx(255 / 256)
    assert stats["std"] == pytest.approx(math.sqrt(255) / 256)
    assert stats["filtered_fraction"] == 0.0
    filt, fstats = normalize_advantages(rewards, filter_sigma=3.0)
    assert filt[17].item() == 0.0
    torch.testing.assert_close(filt[rewards == 1], adv[rewards == 1])
    assert fstats["filtered_fraction"] == pytest.approx(1 / 256)
    assert fstats["num_filtered"] == 1


def test_paper_example_as_token_returns():
    # the same through token_rewards: every token of the wrong sample gets -sqrt(255)
    rewards = torch.ones(256)
    rewards[0] = 0.0
    mask = torch.ones(256, 5)
    mask[:, 3:] = 0
    adv, _ = normalize_advantages(token_rewards(rewards, mask), mask)
    torch.testing.assert_close(adv[0, :3], torch.full((3,), -math.sqrt(255)))
    assert (adv[:, 3:] == 0).all()


def test_normalize_population_std_and_masking():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -7.0, 6.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 1]])
    out, stats = normalize_advantages(x, mask)
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)
    assert stats["mean"] == pytest.approx(vals.mean().item())
    assert stats["std"] == pytest.approx(vals.std(unbiased=False).item())
    expected = (x.double() - vals.mean()) / (vals.std(unbiased=False) + 1e-8)
    torch.testing.assert_close(out, torch.where(mask.bool(), expected, 0.0).float())
    assert stats["num_valid"] == 6


def test_normalize_nonfinite_values_are_zero_and_do_not_poison_statistics():
    clean = torch.tensor([0.5, -1.0, 2.0, 3.0])
    dirty = torch.tensor([0.5, float("nan"), -1.0, float("inf"), 2.0, -float("inf"), 3.0])
    out_c, st_c = normalize_advantages(clean)
    out_d, st_d = normalize_advantages(dirty)
    assert torch.isfinite(out_d).all()
    assert (out_d[[1, 3, 5]] == 0).all()
    torch.testing.assert_close(out_d[[0, 2, 4, 6]], out_c)
    assert st_d["mean"] == pytest.approx(st_c["mean"])
    assert st_d["std"] == pytest.approx(st_c["std"])
    assert st_d["num_nonfinite"] == 3 and st_d["num_valid"] == 4


def test_normalize_degenerate_inputs():
    out, stats = normalize_advantages(torch.full((2, 3), 7.0))
    assert (out == 0).all() and stats["std"] == 0.0
    out, stats = normalize_advantages(torch.randn(2, 3), torch.zeros(2, 3))
    assert (out == 0).all() and stats["num_valid"] == 0 and stats["filtered_fraction"] == 0.0
    out, stats = normalize_advantages(torch.tensor([float("nan"), float("inf")]), filter_sigma=3.0)
    assert (out == 0).all() and stats["filtered_fraction"] == 0.0
    out, stats = normalize_advantages(torch.zeros(0))
    assert out.shape == (0,) and stats["num_valid"] == 0


def test_normalize_extreme_finite_values_do_not_overflow():
    x = torch.tensor([F32_MAX, -F32_MAX, 0.0, 1.0])
    out, _ = normalize_advantages(x, filter_sigma=3.0)
    assert torch.isfinite(out).all()
    assert out[0] > 0 > out[1]


def test_normalize_keeps_dtype_and_validates():
    out, _ = normalize_advantages(torch.randn(8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    out, _ = normalize_advantages(torch.tensor([1, 2, 3]))
    assert out.dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="filter_sigma"):
        normalize_advantages(torch.randn(4), filter_sigma=0.0)
    with pytest.raises(ValueError, match="mask"):
        normalize_advantages(torch.randn(2, 3), torch.ones(3, 2))


@st.composite
def adv_and_mask(draw):
    B, T = draw(batch_shapes(max_b=5, max_t=8))
    adv = f32_tensor(draw, (B, T), -1e6, 1e6, nan=True, inf=True)
    mask = draw(masks((B, T)))
    return adv, mask


@settings(max_examples=60, deadline=None)
@given(am=adv_and_mask(), sigma=st.floats(0.5, 5.0))
def test_filter_invariants(am, sigma):
    adv, mask = am
    out, stats = normalize_advantages(adv, mask, filter_sigma=sigma)
    raw, raw_stats = normalize_advantages(adv, mask)
    assert not torch.isnan(out).any() and torch.isfinite(out).all()
    assert (out[~mask] == 0).all()
    assert (out[~torch.isfinite(adv)] == 0).all()
    assert (out.abs() <= sigma).all()
    assert 0.0 <= stats["filtered_fraction"] <= 1.0
    # Chebyshev with the population std: at most 1/sigma^2 of the values lie beyond sigma
    assert stats["filtered_fraction"] <= 1.0 / sigma**2 + 1e-9
    # the filter only zeroes: every value it keeps is the unfiltered standardised value
    kept = out != 0
    torch.testing.assert_close(out[kept], raw[kept])
    # the statistics do not depend on the filter
    assert stats["mean"] == raw_stats["mean"] and stats["std"] == raw_stats["std"]
    assert stats["num_filtered"] == ((raw != 0) & (out == 0)).sum().item()


@settings(max_examples=50, deadline=None)
@given(am=adv_and_mask(), s1=st.floats(0.5, 5.0), s2=st.floats(0.5, 5.0))
def test_filter_is_monotone_in_sigma(am, s1, s2):
    adv, mask = am
    lo, hi = sorted((s1, s2))
    out_lo, st_lo = normalize_advantages(adv, mask, filter_sigma=lo)
    out_hi, st_hi = normalize_advantages(adv, mask, filter_sigma=hi)
    assert st_hi["filtered_fraction"] <= st_lo["filtered_fraction"]
    # a stricter threshold keeps a subset of what a looser one keeps
    assert not ((out_lo != 0) & (out_hi == 0)).any()


@settings(max_examples=50, deadline=None)
@given(am=adv_and_mask())
def test_unfiltered_output_is_standardised(am):
    adv, mask = am
    out, stats = normalize_advantages(adv, mask)
    valid = mask & torch.isfinite(adv)
    assume(stats["num_valid"] >= 2 and stats["std"] > 1e-3)
    vals = out[valid].double()
    assert vals.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert vals.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
    # standardising again changes nothing (up to eps and float32 rounding)
    again, _ = normalize_advantages(out, valid)
    torch.testing.assert_close(again[valid], out[valid], atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- GRPO


def test_group_advantages_uses_sample_std_per_group():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    out = group_advantages(r, 4)
    for g in range(2):
        x = r[4 * g : 4 * g + 4].double()
        expected = (x - x.mean()) / (x.std(unbiased=True) + 1e-6)
        torch.testing.assert_close(out[4 * g : 4 * g + 4].double(), expected, rtol=1e-6, atol=1e-6)


def test_group_advantages_population_matches_normalize_per_group():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(12, generator=g)
    out = group_advantages(r, 3, unbiased=False, eps=1e-8)
    for k in range(4):
        ref, _ = normalize_advantages(r[3 * k : 3 * k + 3])
        torch.testing.assert_close(out[3 * k : 3 * k + 3], ref, rtol=1e-5, atol=1e-5)


def test_group_advantages_all_right_group_is_zero_unlike_batch_normalisation():
    r = torch.ones(256)
    r[0] = 0.0  # the wrong one is in group 0
    out = group_advantages(r, 8)
    assert (out[8:] == 0).all()  # groups with all-right samples carry no signal
    assert out[0].item() == pytest.approx(-(7 / 8) / math.sqrt(1 / 8) + 0.0, rel=1e-4)
    assert abs(out[0].item()) < math.sqrt(255)


def test_group_advantages_edge_cases():
    assert (group_advantages(torch.tensor([1.0, 0.0, 3.0]), 1) == 0).all()
    out = group_advantages(torch.tensor([1.0, float("nan"), 0.0, 1.0]), 4)
    assert out[1] == 0 and torch.isfinite(out).all()
    x = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(
        out[[0, 2, 3]].double(), (x - x.mean()) / (x.std() + 1e-6), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 0)


# ----------------------------------------------------------------------------- policy loss


def naive_policy_loss(logp, old, adv, mask, clip_eps, pre_clip):
    B, T = logp.shape
    total = 0.0
    for b in range(B):
        terms = []
        for t in range(T):
            if not mask[b, t]:
                continue
            lr = float(logp[b, t]) - float(old[b, t])
            if pre_clip is not None:
                lr = min(max(lr, pre_clip[0]), pre_clip[1])
            r = math.exp(lr)
            a = float(adv[b] if adv.dim() == 1 else adv[b, t])
            terms.append(-min(r * a, min(max(r, 1 - clip_eps), 1 + clip_eps) * a))
        total += sum(terms) / len(terms) if terms else 0.0
    return total / B


@pytest.mark.parametrize("pre_clip", [PRE_CLIP_BOUNDS, None])
@pytest.mark.parametrize("adv_shape", ["B", "BT"])
def test_policy_loss_matches_naive(pre_clip, adv_shape):
    g = torch.Generator().manual_seed(3)
    B, T = 4, 6
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.5
    adv_size = (B,) if adv_shape == "B" else (B, T)
    adv = torch.randn(adv_size, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0] = False  # an empty row counts as 0
    loss, stats = policy_loss(logp, old, adv, mask, clip_eps=0.2, pre_clip=pre_clip)
    assert loss.item() == pytest.approx(
        naive_policy_loss(logp, old, adv, mask, 0.2, pre_clip), rel=1e-9
    )
    assert stats["num_tokens"] == int(mask.sum())


def test_policy_loss_per_sequence_then_batch_mean():
    # row 0 has 1 token with loss -2, row 1 has 3 tokens with loss -1: (-2 + -1) / 2
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    loss, _ = policy_loss(logp, logp.clone(), torch.tensor([2.0, 1.0]), mask)
    assert loss.item() == pytest.approx(-1.5)
    # an empty third row adds 0 and counts in the batch
    loss3, _ = policy_loss(
        torch.zeros(3, 3),
        torch.zeros(3, 3),
        torch.tensor([2.0, 1.0, 5.0]),
        torch.tensor([[1, 0, 0], [1, 1, 1], [0, 0, 0]]),
    )
    assert loss3.item() == pytest.approx(-3.0 / 3)


def test_policy_loss_gradient_on_policy():
    # at ratio 1 the gradient of -r*A w.r.t. logp is -A / (tokens in row) / B
    logp = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    adv = torch.tensor([1.0, -2.0])
    loss, _ = policy_loss(logp, logp.detach().clone(), adv, mask)
    loss.backward()
    expected = torch.tensor([[-0.25, -0.25, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    torch.testing.assert_close(logp.grad, expected)


def test_policy_loss_clip_zeroes_gradient_and_counts():
    logp = torch.log(torch.tensor([[2.0, 2.0, 0.5, 0.5, 1.1]])).requires_grad_()
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0]])
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 5))
    loss.backward()
    # token 0: A>0, r=2 -> clipped at 1.2 (no grad); token 3: A<0, r=0.5 -> clipped at 0.8 (no grad)
    assert logp.grad[0, 0] == 0 and logp.grad[0, 3] == 0
    assert (logp.grad[0, [1, 2, 4]] != 0).all()
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    expected = -(1.2 - 2.0 + 0.5 - 0.8 + 2.2) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pre_clip_bounds_the_ratio():
    lr = torch.tensor([-1e4, -10.0, 0.0, 5.0, 1e4])
    r = pre_clip_ratio(lr)
    torch.testing.assert_close(r, torch.tensor([1e-3, 1e-3, 1.0, math.exp(5.0), 1e3]))
    assert torch.isinf(pre_clip_ratio(lr, None)[-1])


def test_negative_advantage_overflow_explodes_without_pre_clip_only():
    logp = torch.tensor([[0.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-100.0, -1.0]])  # log-ratio 100: exp overflows float32
    mask = torch.ones(1, 2)
    adv = torch.tensor([-1.0])
    loss, stats = policy_loss(logp, old, adv, mask, pre_clip=None)
    assert loss.item() == float("inf")
    assert stats["nonfinite_ratio_count"] == 1 and stats["max_ratio"] == float("inf")
    loss, stats = policy_loss(logp, old, adv, mask)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all()
    assert loss.item() == pytest.approx((1e3 + 1.0) / 2, rel=1e-4)
    assert stats["nonfinite_ratio_count"] == 0 and stats["pre_clip_fraction"] == 0.5
    assert stats["max_ratio"] == pytest.approx(1e3, rel=1e-4)
    assert stats["max_abs_log_ratio"] == pytest.approx(100.0)


def test_pre_clip_with_infinite_logprob_on_a_valid_token():
    logp = torch.tensor([[-float("inf"), -1.0], [0.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0], [-float("inf"), -2.0]])
    adv = torch.tensor([-3.0, -3.0])
    loss, stats = policy_loss(logp, old, adv, torch.ones(2, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert stats["pre_clip_fraction"] == 0.5 and stats["nonfinite_ratio_count"] == 0
    assert loss.item() == pytest.approx(((0.8 * 3 + 3) / 2 + (1e3 * 3 + 3) / 2) / 2, rel=1e-4)
    # a NaN log-ratio is not hidden
    loss, stats = policy_loss(
        torch.tensor([[float("nan")]]), torch.zeros(1, 1), adv[:1], torch.ones(1, 1)
    )
    assert math.isnan(loss.item()) and stats["nonfinite_ratio_count"] == 1


def test_zero_advantage_with_overflow_is_nan_without_pre_clip():
    logp = torch.tensor([[0.0]])
    old = torch.tensor([[-200.0]])
    loss, _ = policy_loss(logp, old, torch.tensor([0.0]), torch.ones(1, 1), pre_clip=None)
    assert math.isnan(loss.item())
    loss, _ = policy_loss(logp, old, torch.tensor([0.0]), torch.ones(1, 1))
    assert loss.item() == 0.0


def test_masked_garbage_never_reaches_loss_or_gradient():
    g = torch.Generator().manual_seed(5)
    logp = -torch.rand(3, 5, generator=g)
    old = logp + 0.1 * torch.randn(3, 5, generator=g)
    adv = torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    clean_loss, clean_stats = policy_loss(logp, old, adv, mask)
    dirty_logp = torch.where(mask.bool(), logp, -float("inf")).requires_grad_()
    dirty_old = torch.where(mask.bool(), old, float("nan"))
    dirty_adv = torch.where(mask.bool(), adv, float("inf"))
    for pc in (PRE_CLIP_BOUNDS, None):
        loss, stats = policy_loss(dirty_logp, dirty_old, dirty_adv, mask, pre_clip=pc)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(dirty_logp.grad).all()
        assert (dirty_logp.grad[~mask.bool()] == 0).all()
        dirty_logp.grad = None
        assert stats["nonfinite_ratio_count"] == 0
    loss, stats = policy_loss(dirty_logp, dirty_old, dirty_adv, mask)
    torch.testing.assert_close(loss, clean_loss)
    assert stats == clean_stats


def test_all_masked_batch_is_zero_and_differentiable():
    logp = torch.randn(2, 3, requires_grad=True)
    loss, stats = policy_loss(logp, logp.detach(), torch.ones(2), torch.zeros(2, 3))
    loss.backward()
    assert loss.item() == 0.0 and (logp.grad == 0).all()
    assert stats["num_tokens"] == 0 and math.isnan(stats["max_ratio"])


def test_policy_loss_gradient_goes_to_logp_only():
    logp = torch.randn(2, 3, requires_grad=True)
    old = (logp.detach() + 0.05).requires_grad_()
    adv = torch.randn(2, requires_grad=True)
    loss, _ = policy_loss(logp, old, adv, torch.ones(2, 3))
    loss.backward()
    assert logp.grad is not None and logp.grad.abs().sum() > 0
    assert old.grad is None and adv.grad is None


def test_policy_loss_validates_shapes():
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="mask"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match="logp"):
        policy_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(3))


@st.composite
def loss_inputs(draw, adv_per_token=None):
    B, T = draw(batch_shapes(max_b=4, max_t=6))
    kind = draw(st.sampled_from(["logprob", "any", "shift"]))
    if kind == "any":  # any finite float32 at all, even "log-probs" > 0
        logp = f32_tensor(draw, (B, T), -F32_MAX, F32_MAX)
        old = f32_tensor(draw, (B, T), -F32_MAX, F32_MAX)
    elif kind == "logprob":  # arbitrary non-positive float32 values
        logp = f32_tensor(draw, (B, T), -F32_MAX, 0.0)
        old = f32_tensor(draw, (B, T), -F32_MAX, 0.0)
    else:  # realistic log-probs shifted by up to +-1e4
        logp = f32_tensor(draw, (B, T), -30.0, 0.0)
        old = logp - f32_tensor(draw, (B, T), -1e4, 1e4)
    extremes = draw(st.lists(st.sampled_from([-1e4, 1e4, 88.0, 89.0, -104.0]), max_size=3))
    for k, d in enumerate(extremes):
        b, t = k % B, (k * 7) % T
        old[b, t] = logp[b, t] - d
    per_token = draw(st.booleans()) if adv_per_token is None else adv_per_token
    adv = f32_tensor(draw, (B, T) if per_token else (B,), -50.0, 50.0)
    mask = draw(masks((B, T)))
    return logp, old, adv, mask


@settings(max_examples=70, deadline=None)
@given(inputs=loss_inputs(), clip_eps=st.sampled_from([0.1, 0.2, 0.3]))
def test_pre_clip_loss_and_gradient_are_finite_for_any_float32(inputs, clip_eps):
    logp, old, adv, mask = inputs
    logp = logp.clone().requires_grad_()
    loss, stats = policy_loss(logp, old, adv, mask, clip_eps=clip_eps)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logp.grad).all()
    assert stats["nonfinite_ratio_count"] == 0
    if stats["num_tokens"]:
        assert 1e-3 * (1 - 1e-5) <= stats["max_ratio"] <= 1e3 * (1 + 1e-5)
        assert 0.0 <= stats["clip_fraction"] <= 1.0 and 0.0 <= stats["pre_clip_fraction"] <= 1.0
    # Pre-Clip bounds the loss: |loss| <= 1e3 * max|A|
    assert abs(loss.item()) <= 1e3 * (1 + 1e-5) * max(adv.abs().max().item(), 0.0) + 1e-6


@settings(max_examples=60, deadline=None)
@given(inputs=loss_inputs(), big=st.floats(89.0, 1e4, width=32))
def test_without_pre_clip_the_overflow_shows(inputs, big):
    logp, old, adv, mask = inputs
    # plant one valid token whose float32 ratio overflows, with a negative advantage
    mask = mask.clone()
    mask[0, 0] = True
    old = old.clone()
    logp = logp.clone()
    logp[0, 0] = 0.0
    old[0, 0] = -big
    adv = adv.clone()
    if adv.dim() == 1:
        adv[0] = -abs(adv[0].item()) - 1.0
    else:
        adv[0, 0] = -abs(adv[0, 0].item()) - 1.0
    loss, stats = policy_loss(logp, old, adv, mask, pre_clip=None)
    assert stats["nonfinite_ratio_count"] >= 1
    assert stats["max_ratio"] == float("inf") or math.isnan(stats["max_ratio"])
    assert not math.isfinite(loss.item())
    # the same batch with Pre-Clip is finite
    loss_pc, stats_pc = policy_loss(logp, old, adv, mask)
    assert math.isfinite(loss_pc.item()) and stats_pc["nonfinite_ratio_count"] == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pre_clip_in_low_precision(dtype):
    logp = torch.tensor([[0.0, -2.0, -3.0]], dtype=dtype, requires_grad=True)
    old = torch.tensor([[-120.0, -2.0, 60.0]], dtype=dtype)
    adv = torch.tensor([-1.0], dtype=dtype)
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 3))
    loss.backward()
    assert loss.dtype == dtype and torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    loss, stats = policy_loss(logp, old, adv, torch.ones(1, 3), pre_clip=None)
    assert stats["nonfinite_ratio_count"] == 1 and not torch.isfinite(loss)


# ----------------------------------------------------------------------------- KL


def test_kl_estimators_values():
    logp = torch.tensor([[0.0, -1.0, -2.0]])
    ref = torch.tensor([[-1.0, -1.0, 0.0]])
    d = logp - ref
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), d)
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), 0.5 * d**2)
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.exp(-d) + d - 1)
    assert (kl_estimate(logp, logp, "k3") == 0).all()
    with pytest.raises(ValueError, match="kind"):
        kl_estimate(logp, ref, "k4")


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_kl_estimators_are_unbiased_exactly(kind):
    # E_{x~p}[k(x)] summed exactly over a categorical distribution equals KL(p || q)
    g = torch.Generator().manual_seed(7)
    logp = torch.log_softmax(torch.randn(1, 50, generator=g, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.randn(1, 50, generator=g, dtype=torch.float64), -1)
    kl_true = (logp.exp() * (logp - logq)).sum()
    est = (logp.exp() * kl_estimate(logp, logq, kind)).sum()
    assert est.item() == pytest.approx(kl_true.item(), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_k2_k3_are_non_negative_and_k3_finite(data):
    B, T = data.draw(batch_shapes())
    logp = f32_tensor(data.draw, (B, T), -(2.0**100), 0.0)
    ref = f32_tensor(data.draw, (B, T), -(2.0**100), 0.0)
    for kind in ("k2", "k3"):
        est = kl_estimate(logp, ref, kind)
        assert (est >= 0).all()
    assert torch.isfinite(kl_estimate(logp, ref, "k3")).all()
    small = f32_tensor(data.draw, (B, T), -(2.0**-20), 2.0**-20)
    assert (kl_estimate(small, torch.zeros(B, T), "k3") >= 0).all()


def test_kl_mask_and_gradients():
    logp = torch.tensor([[-1.0, -float("inf")], [-0.5, -0.2]], requires_grad=True)
    ref = torch.tensor([[-1.5, -3.0], [float("nan"), -0.1]])
    mask = torch.tensor([[1, 0], [0, 1]])
    for kind in ("k1", "k2", "k3"):
        est = kl_estimate(logp, ref, kind, mask=mask)
        assert est[0, 1] == 0 and est[1, 0] == 0
        est.sum().backward()
        assert torch.isfinite(logp.grad).all()
        assert logp.grad[0, 1] == 0 and logp.grad[1, 0] == 0
        logp.grad = None


def test_kl_feeds_token_rewards():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.2, -1.0, -0.5]])
    mask = torch.tensor([[1, 1, 0]])
    kl = kl_estimate(logp, ref, "k1", mask=mask)
    out = token_rewards(torch.tensor([1.0]), mask, kl, kl_coef=0.1)
    torch.testing.assert_close(out, torch.tensor([[1.0 - 0.1 * (0.2 - 1.0), 1.0 + 0.1, 0.0]]))


def test_constants():
    assert PRE_CLIP_BOUNDS == (math.log(1e-3), math.log(1e3))
    assert FILTER_SIGMA == 3.0


def test_low_precision_statistics_are_exact_counts():
    T = 70001  # more than float16's largest finite value, and odd for bfloat16's 8-bit mantissa
    for dtype in (torch.bfloat16, torch.float16):
        logp = torch.zeros(1, T, dtype=dtype)
        old = torch.zeros(1, T, dtype=dtype)
        old[0, :3] = -20.0  # log-ratio 20: beyond the PPO clip and Pre-Clip
        loss, stats = policy_loss(logp, old, torch.ones(1, dtype=dtype), torch.ones(1, T))
        assert stats["num_tokens"] == T
        assert stats["clip_fraction"] == pytest.approx(3 / T, rel=1e-9)
        assert stats["pre_clip_fraction"] == pytest.approx(3 / T, rel=1e-9)
        assert stats["nonfinite_ratio_count"] == 0
