"""The later fixes in r1reward.algorithms_variants (Dr. GRPO, clip-higher, GSPO, CISPO, TIS), checked by hand
on small inputs, and wired through the trainer's presets."""

from __future__ import annotations

import math

import pytest
import torch

from r1reward import algorithms as A
from r1reward import algorithms_variants as V


def test_dr_grpo_centres_without_scaling():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    assert torch.allclose(
        V.dr_grpo_advantages(r, 4), torch.tensor([0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0])
    )
    assert torch.allclose(
        A.group_advantages(r, 4)[:4], torch.tensor([0.5, -1.5, 0.5, 0.5]), atol=1e-5
    )
    with pytest.raises(ValueError):
        V.dr_grpo_advantages(r, 3)


def test_group_advantage_filter_zeroes_non_finite_and_beyond_sigma():
    adv = torch.tensor([0.5, -3.5, float("nan"), float("inf"), 3.0, -1.0])
    kept, info = V.filter_group_advantages(adv, 3.0)
    assert kept.tolist() == [0.5, 0.0, 0.0, 0.0, 3.0, -1.0] and kept.dtype == torch.float32
    assert info["filtered_fraction"] == pytest.approx(
        1 / 6
    )  # only -3.5: non-finite are not "filtered"
    unfiltered, info = V.filter_group_advantages(adv, None)
    assert (
        unfiltered.tolist() == [0.5, -3.5, 0.0, 0.0, 3.0, -1.0] and info["filtered_fraction"] == 0.0
    )


def test_clip_higher_lets_a_positive_token_grow_past_the_symmetric_clip():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[math.log(1.25), 0.0]], requires_grad=True)
    adv, mask = torch.ones(1, 2), torch.tensor([[1.0, 0.0]])
    loss, info = A.policy_loss(logp, old, adv, mask, pre_clip=None)
    (g,) = torch.autograd.grad(loss, logp)
    assert info["clip_fraction"] == 1.0 and g[0, 0] == 0  # PPO: clipped at 1.2, no gradient
    loss, info = A.policy_loss(logp, old, adv, mask, pre_clip=None, clip_eps_high=0.28)
    (g,) = torch.autograd.grad(loss, logp)
    assert info["clip_fraction"] == 0.0 and g[0, 0] == pytest.approx(-1.25)  # d(-r)/dlogp = -r


def test_length_norm_off_divides_by_the_constant_width():
    logp = torch.zeros(2, 4, requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 1]])
    on, _ = A.policy_loss(logp, torch.zeros(2, 4), adv, mask)
    off, _ = A.policy_loss(logp, torch.zeros(2, 4), adv, mask, length_norm=False)
    # ratio 1: per token -A; on: mean per row (-1, +1) -> 0; off: sums (-2, +4) / 4 / 2 rows
    assert float(on.detach()) == pytest.approx(0.0)
    assert float(off.detach()) == pytest.approx((-2 / 4 + 4 / 4) / 2)


def test_gspo_uses_one_geometric_mean_ratio_per_sequence():
    old = torch.zeros(1, 3)
    logp = torch.tensor([[0.1e-3, 0.3e-3, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, info = V.gspo_loss(logp, old, torch.tensor([2.0]), mask)
    s = math.exp(0.2e-3)  # inside [1 - 3e-4, 1 + 4e-4]: not clipped
    assert float(loss) == pytest.approx(-2 * s)
    assert info["max_ratio"] == pytest.approx(s) and info["clip_fraction"] == 0.0
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.allclose(
        g, torch.tensor([[-s, -s, 0.0]])
    )  # d/dlogp_t of -A s = -A s / |o| = -2 s / 2 on each of the 2 tokens
    big = torch.tensor([[0.01, 0.01, 0.0]], requires_grad=True)
    loss, info = V.gspo_loss(big, old, torch.tensor([[2.0, 2.0, 0.0]]), mask)  # [B, T] advantages
    assert info["clip_fraction"] == 1.0
    assert torch.autograd.grad(loss, big)[0].abs().sum() == 0  # clipped: no gradient


def test_cispo_clips_the_weight_not_the_gradient():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[math.log(5.0), math.log(0.5)]], requires_grad=True)
    adv, mask = torch.tensor([-1.0]), torch.ones(1, 2)
    loss, info = V.cispo_loss(logp, old, adv, mask)
    (g,) = torch.autograd.grad(loss, logp)
    # weights: min(5, 1.28) = 1.28 and 0.5; gradient -w A / 2 tokens
    assert torch.allclose(g, torch.tensor([[1.28 / 2, 0.5 / 2]]))
    assert info["clip_fraction"] == 0.5 and info["max_ratio"] == pytest.approx(5.0)


def test_tis_weights_are_truncated_ratios():
    old = torch.tensor([[0.0, 0.0, -1.0]])
    sampler = torch.tensor([[0.0, -2.0, 0.0]])
    w = V.tis_weights(old, sampler, torch.tensor([[1.0, 1.0, 0.0]]), cap=2.0)
    assert torch.allclose(w, torch.tensor([[1.0, 2.0, 0.0]]))


def test_presets_resolve_to_their_losses():
    from r1reward.train import rl

    assert rl.RLConfig(algo="stable-reinforce").resolved().loss == "ppo"
    dr = rl.RLConfig(algo="dr-grpo").resolved()
    assert (dr.loss, dr.length_norm, dr.clip_eps_high, dr.samples_per_prompt) == (
        "ppo",
        False,
        None,
        4,
    )
    assert rl.RLConfig(algo="dapo-clip-higher").resolved().clip_eps_high == 0.28
    assert rl.RLConfig(algo="gspo").resolved().loss == "gspo"
    assert rl.RLConfig(algo="cispo", clip_eps_high=0.5).resolved().clip_eps_high == 0.5
    with pytest.raises(ValueError, match="rl.loss"):
        rl.RLConfig(algo="grpo", loss="ppo2").resolved()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from r1reward.toy.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)


@pytest.mark.parametrize("algo", ["dr-grpo", "dapo-clip-higher", "gspo", "cispo"])
def test_each_later_fix_trains_through_the_trainer(tiny, tmp_path, monkeypatch, algo):
    """Two steps of each preset on the tiny model, with a text-length reward standing in for the
    R1-Reward (an untrained model never answers well formed): finite, logged, and the policy moved."""
    from r1reward.train import rl

    def reward(ro, judge, use_consistency):
        total = torch.tensor([len(t) / 10.0 for t in ro.texts])
        z = torch.zeros_like(total)
        return {"format": z, "result": z, "consistency": z, "total": total}

    monkeypatch.setattr(rl, "score", reward)
    recipe = {
        "name": "variants",
        "model": {"path": str(tiny), "dtype": "float32", "lora": None, "quantization": None},
        "data": {"source": "toy", "train_pairs": 8, "seed": 0, "image_size": 56},
        "rl": {
            "algo": algo,
            "steps": 2,
            "prompts_per_step": 2,
            "mini_batch_size": 4,
            "micro_batch_size": 4,
            "ppo_epochs": 2,
            "lr": 3e-3,
            "max_new_tokens": 8,
            "rollout_batch_size": 2,
            "save_every": 0,
            "seed": 0,
            "progress": False,
        },
    }
    rl.train_rl(**rl.rl_inputs(recipe), out_dir=tmp_path / algo)
    recs = rl.read_metrics(tmp_path / algo)
    assert len(recs) == 2 and all(r["params_finite"] and math.isfinite(r["loss"]) for r in recs)
    assert recs[0]["samples"] == 8
    assert any(r["max_ratio"] != 1.0 for r in recs)  # the second epoch saw a moved policy
