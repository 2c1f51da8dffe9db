"""Advantages normalised across 2 processes equal those of one process holding the whole batch.

Runs two real processes (torch.distributed over gloo on CPU, through accelerate's
``debug_launcher``); each holds half of a batch of Reinforce++ returns with a different completion
length, calls the trainer's :func:`r1reward.train.rl_update.global_normalize`, and writes its rows.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from r1reward.algorithms import normalize_advantages, token_rewards

B_PER_RANK = 3
LENGTHS = {0: [5, 2, 4], 1: [7, 1, 3]}  # completion lengths per row; rank 1 is wider


def _batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``[3, T_rank]`` (sequence reward + a KL term) and their mask for one rank."""
    lengths = LENGTHS[rank]
    width = max(lengths)
    mask = torch.zeros(B_PER_RANK, width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    g = torch.Generator().manual_seed(100 + rank)
    rewards = torch.tensor([1.0, 0.0, 1.5]) if rank == 0 else torch.tensor([1.5, 1.5, 0.0])
    kl = torch.randn(B_PER_RANK, width, generator=g) * 0.1
    return token_rewards(rewards, mask, kl=kl, kl_coef=0.05), mask


def _worker(out_dir: str, filter_sigma: float | None) -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from r1reward.train.rl_update import global_normalize

    # the workers are forked: drop any single-process state an earlier test left in the parent
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    GradientState._reset_state()
    acc = Accelerator(cpu=True)
    returns, mask = _batch(acc.process_index)
    adv, info = global_normalize(acc, returns, mask, filter_sigma)
    path = os.path.join(out_dir, f"rank{acc.process_index}.json")
    with open(path, "w") as fh:
        json.dump({"world": acc.num_processes, "adv": adv.tolist(), "info": info}, fh)


@pytest.mark.parametrize("filter_sigma", [None, 1.2])
def test_two_process_advantages_equal_one_process(tmp_path, filter_sigma):
    from accelerate import debug_launcher

    debug_launcher(_worker, args=(str(tmp_path), filter_sigma), num_processes=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in results] == [2, 2]

    # one process, the whole batch: rows of rank 0 then rank 1, padded to the widest
    parts = [_batch(r) for r in (0, 1)]
    width = max(p[0].shape[1] for p in parts)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731
    full_ret = torch.cat([pad(p[0]) for p in parts])
    full_mask = torch.cat([pad(p[1]) for p in parts])
    expected, info = normalize_advantages(full_ret, full_mask, filter_sigma=filter_sigma)

    for rank, res in enumerate(results):
        got = torch.tensor(res["adv"])
        own = expected[rank * B_PER_RANK : (rank + 1) * B_PER_RANK, : parts[rank][0].shape[1]]
        torch.testing.assert_close(got, own, rtol=0, atol=1e-6)
        assert res["info"]["mean"] == pytest.approx(info["mean"], abs=1e-9)
        assert res["info"]["std"] == pytest.approx(info["std"], abs=1e-9)
        assert res["info"]["filtered_fraction"] == pytest.approx(info["filtered_fraction"])
    # a process alone would normalise differently: the test can tell the two apart
    alone, _ = normalize_advantages(parts[0][0], parts[0][1], filter_sigma=filter_sigma)
    assert not torch.allclose(alone, torch.tensor(results[0]["adv"]), atol=1e-3)
    if filter_sigma is not None:
        assert info["filtered_fraction"] > 0  # the filter did act on this batch
