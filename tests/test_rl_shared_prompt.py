"""A group's samples scored on one shared prompt pass equal the full rows (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from r1reward.models import load_model
from r1reward.toy.tiny_model import build_tiny_model
from r1reward.toy.world import make_pairs
from r1reward.train import rl_data
from r1reward.train.rl_data import (
    conversations,
    make_rollout,
    micro_logprobs,
    pad_token_id,
    sequence_logprobs,
)

K = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("shared") / "m", seed=0)
    model, processor = load_model(path)
    with torch.no_grad():  # a model whose outputs depend strongly on the context
        for name, p in model.named_parameters():
            if "language_model" in name and name.endswith("proj.weight"):
                p.mul_(4.0)
    pairs = make_pairs(3, seed=0)
    gen = torch.Generator().manual_seed(0)
    # completions of different lengths (1 .. 12 tokens) from the text vocabulary
    ids = [
        torch.randint(30, 600, (int(torch.randint(1, 13, (1,), generator=gen)),), generator=gen)
        for _ in range(len(pairs) * K)
    ]
    ro = make_rollout(processor, pairs, conversations(pairs), [t.tolist() for t in ids], K)
    return model, processor, ro


def _full(model, ro, idx, pad_id):
    return sequence_logprobs(
        model, ro.micro(idx, pad_id), ro.ids[idx], ro.mask[idx], temperature=0.7
    )


def test_same_logprobs_and_gradients_as_full_rows(setup, monkeypatch):
    model, processor, ro = setup
    pad_id = pad_token_id(processor)
    used = []
    real = rl_data.shared_prompt_logprobs
    monkeypatch.setattr(
        rl_data,
        "shared_prompt_logprobs",
        lambda *a, **k: used.append(1) or real(*a, **k),
    )
    idx = torch.tensor([7, 0, 4, 2, 8, 1, 3])  # shuffled; prompts 0, 1, 2 each more than once
    model.train()
    weights = torch.randn(len(idx), ro.ids.shape[1], generator=torch.Generator().manual_seed(1))

    def grads(fn):
        model.zero_grad(set_to_none=True)
        lp = fn()
        (lp * weights).sum().backward()
        g = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return lp.detach(), g

    shared, g_shared = grads(lambda: micro_logprobs(model, ro, idx, pad_id, 0.7))
    full, g_full = grads(lambda: _full(model, ro, idx, pad_id))
    assert used, "the shared prompt pass was not taken"
    assert bool((shared[ro.mask[idx] == 0] == 0).all())
    torch.testing.assert_close(shared, full, rtol=1e-5, atol=1e-5)
    assert g_shared.keys() == g_full.keys() and len(g_full) > 10
    for name in g_full:  # the prompt's gradient is summed in another order: float rounding
        err = (g_shared[name] - g_full[name]).norm() / g_full[name].norm().clamp(min=1e-12)
        assert float(err) < 1e-4, (name, float(err))
    assert float(shared.abs().sum()) > 1.0  # not a trivial all-zero comparison


def test_single_samples_keep_the_full_rows(setup, monkeypatch):
    """k = 1 rollouts (Reinforce++, StableReinforce, the collapse lab) never take the shared
    pass, so their numbers are bit for bit what they were."""
    model, processor, ro = setup
    pad_id = pad_token_id(processor)
    monkeypatch.setattr(
        rl_data, "shared_prompt_logprobs", lambda *a, **k: pytest.fail("shared pass used")
    )
    idx = torch.tensor([0, 3, 6])  # one sample of each prompt: nothing to share
    with torch.no_grad():
        got = micro_logprobs(model, ro, idx, pad_id, 1.0)
        want = sequence_logprobs(model, ro.micro(idx, pad_id), ro.ids[idx], ro.mask[idx])
    assert torch.equal(got, want)
