"""Issue 15's last coupling bug: with ``kl_coef > 0`` the old log-probs were taken with the policy
in train mode after the first update, so LoRA dropout leaked into the PPO ratios and the KL.

``batched_logprobs`` (old and reference log-probs) now scores in eval mode itself. The test gives
the tiny model a LoRA adapter with heavy dropout and a non-zero ``B`` (so dropout changes the
output), leaves the model in train mode as ``ppo_update`` does, and checks that two scorings agree
and match an eval-mode pass; the control shows that the same scoring in train mode does differ,
so the check can fail.
"""

from __future__ import annotations

import pytest
import torch

from r1reward.rollout import eval_mode
from r1reward.train import rl_data

LEAKY_LORA = {
    "r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.5,
    "init_lora_weights": False,  # B random, not zero: dropout on the adapter's input shows
}


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from r1reward.models import load_model
    from r1reward.toy.tiny_model import build_tiny_model
    from r1reward.toy.world import make_pairs

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", size="tiny", seed=0)
    torch.manual_seed(0)
    model, processor = load_model(str(path), lora=LEAKY_LORA)
    pairs = make_pairs(2, seed=0)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(20, 200, (n,), generator=g).tolist() for n in (6, 5, 4, 3)]
    ro = rl_data.make_rollout(processor, pairs, rl_data.conversations(pairs), ids, k=2)
    return model, ro, rl_data.pad_token_id(processor)


def _train_mode_scores(model, ro, pad: int) -> torch.Tensor:
    """What the old code did after an update: no_grad scoring with the model left in train mode."""
    rows = torch.arange(len(ro.texts))
    with torch.no_grad():
        return (
            rl_data.sequence_logprobs(model, ro.micro(rows, pad), ro.ids, ro.mask, 1.0).float()
            * ro.mask
        )


def test_old_logprobs_carry_no_dropout(policy):
    model, ro, pad = policy
    model.train()  # ppo_update leaves the policy in train mode between steps
    first = rl_data.batched_logprobs(model, ro, pad, 2, 1.0)
    second = rl_data.batched_logprobs(model, ro, pad, 2, 1.0)
    assert model.training  # the caller's mode is restored
    with eval_mode(model):
        reference = _train_mode_scores(model, ro, pad)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, reference)
    assert (first[ro.mask.bool()] != 0).all()


def test_control_train_mode_scoring_is_noisy(policy):
    """Without eval mode the same scoring differs from call to call: the leak the fix closes."""
    model, ro, pad = policy
    model.train()
    torch.manual_seed(1)
    a = _train_mode_scores(model, ro, pad)
    b = _train_mode_scores(model, ro, pad)
    assert not torch.allclose(a, b)
