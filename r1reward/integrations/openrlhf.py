"""OpenRLHF: the judge as its remote reward model (``--reward.remote_url``).

OpenRLHF's single-turn agent (``openrlhf/utils/agent.py``) posts, per rollout,
``{"query": [prompt + response decoded with special tokens], "prompts": [prompt], "labels":
[label]}`` to ``--reward.remote_url`` (``--remote_rm_url`` in older releases) and reads
``rewards`` (and ``scores``, ``extra_logs``) from the JSON answer; its own
``openrlhf.cli.serve_rm`` answers ``POST /get_reward`` with ``{"rewards", "scores",
"extra_logs"}``. ``r1reward serve`` answers the same path: each response
is judged against its **label, the reference answer**, in both orders, and its reward is
P(response better than reference) in ``[0, 1]`` (:func:`r1reward.verdicts.score_reference`);
``extra_logs`` carries the order gap and the swap-disagreement flag per row.

Launch (the judge on one machine, OpenRLHF pointing at it; the dataset's ``--data.label_key``
column holds the reference answers)::

    r1reward serve --model PATH/TO/R1-Reward --host 0.0.0.0 --port 8000
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url http://JUDGE:8000/get_reward \\
        --data.label_key reference

OpenRLHF sends no images in this protocol, so the judge then sees the text only.
``--reward.remote_url path/to/file.py`` makes OpenRLHF call ``reward_func(queries, prompts,
labels)`` from that file instead; :func:`reward_func` here is such a function, posting to
``$R1REWARD_URL``.

:func:`r1reward.reward_api.split_query` (on the server, beside the ``/get_reward`` handler)
recovers the question and the response from each query.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from r1reward.serve.client import RewardClient

__all__ = ["reward_func"]


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any], **_: Any
) -> dict[str, Any]:
    """OpenRLHF's ``--reward.remote_url file.py`` hook: posts to ``$R1REWARD_URL/get_reward``.

    ``R1REWARD_URL`` (default ``http://127.0.0.1:8000``) is the judge's ``r1reward serve``;
    ``R1REWARD_K`` (default 1) judgments per order. Returns the server's ``{"rewards",
    "scores", "extra_logs"}`` with the rewards as a float tensor, as OpenRLHF's example does.
    The API key, if the server wants one, comes from ``$R1REWARD_API_KEY``.
    """
    url = os.environ.get("R1REWARD_URL", "http://127.0.0.1:8000")
    body = {
        "query": list(queries),
        "prompts": list(prompts),
        "labels": list(labels),
        "k": int(os.environ.get("R1REWARD_K", "1")),
    }
    with RewardClient(url) as client:
        out = client.post("/get_reward", body)
    out["rewards"] = torch.tensor(out["rewards"], dtype=torch.float32)
    out["scores"] = torch.tensor(out["scores"], dtype=torch.float32)
    return out
