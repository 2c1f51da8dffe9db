"""verl: a ``custom_reward_function`` file that asks ``r1reward serve`` for the reward.

verl loads ``custom_reward_function.path`` and calls ``custom_reward_function.name`` (default
``compute_score``) as ``fn(data_source, solution_str, ground_truth, extra_info, **reward_kwargs)``
per sample (its reward loop also awaits ``async def`` functions); a dict answer carries
``"score"`` plus extra values it logs. Here each rollout is judged against ``ground_truth``, the
reference answer, in both orders: score = P(rollout better than reference) in ``[0, 1]``
(:func:`r1reward.verdicts.score_reference` on the server). The question is
``extra_info["question"]`` (put it there when preparing the parquet files), else empty.

Launch (the judge served on another GPU or machine)::

    r1reward serve --model PATH/TO/R1-Reward --host 0.0.0.0 --port 8000
    python -m verl.trainer.main_ppo ... \\
        custom_reward_function.path=$(python -c "import r1reward.integrations.verl as m; print(m.__file__)") \\
        custom_reward_function.name=compute_score \\
        +custom_reward_function.reward_kwargs.url=http://JUDGE:8000 \\
        +custom_reward_function.reward_kwargs.k=1

``compute_score_async`` is the coroutine form (``custom_reward_function.name=compute_score_async``)
and ``compute_score_batch`` the form of verl's batch reward manager
(``reward_model.reward_manager=batch``), which sends a batch's rows concurrently. The URL
defaults to ``$R1REWARD_URL`` or ``http://127.0.0.1:8000``, the API key to ``$R1REWARD_API_KEY``.
Requests go through :class:`r1reward.serve.client.RewardClient`, so verl's workers need r1reward
installed (as the launch line above does); ``extra_info["images"]`` are sent as they are (paths
under the server's ``--image-root``, or ``data:`` URLs).
"""

from __future__ import annotations

import os
from typing import Any

from r1reward.serve.client import REFERENCE, RewardClient

__all__ = ["compute_score", "compute_score_async", "compute_score_batch"]


def _url(url: str | None) -> str:
    return (url or os.environ.get("R1REWARD_URL") or "http://127.0.0.1:8000").rstrip("/")


def _client(url: str | None, timeout: float, concurrency: int = 1) -> RewardClient:
    return RewardClient(_url(url), timeout=timeout, concurrency=concurrency, server_paths=True)


def _args(
    solution_str: str, ground_truth: Any, extra_info: dict | None
) -> tuple[str, list[str], str, list[Any]]:
    """``RewardClient.reference``'s question, responses, reference and images for one row."""
    if not isinstance(ground_truth, str):
        raise ValueError(
            f"r1reward verl reward: ground_truth is {ground_truth!r}; expected the reference "
            "answer as a string (reward_model.ground_truth in the parquet rows)"
        )
    info = extra_info or {}
    return str(info.get("question", "")), [solution_str], ground_truth, list(info.get("images", []))


def _score(result: dict[str, Any]) -> dict[str, float]:
    return {
        "score": float(result["scores"][0]),
        "order_gap": float(result["order_gaps"][0] or 0.0),
        "swap_disagreement": float(result["swap_disagreements"][0]),
    }


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    url: str | None = None,
    k: int = 1,
    timeout: float = 600.0,
    **_: Any,
) -> dict[str, float]:
    """verl's reward-function signature: ``{"score": P(solution better than ground_truth),
    "order_gap", "swap_disagreement"}``."""
    with _client(url, timeout) as client:
        return _score(client.reference(*_args(solution_str, ground_truth, extra_info), k=int(k)))


async def compute_score_async(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    *,
    url: str | None = None,
    k: int = 1,
    timeout: float = 600.0,
    **_: Any,
) -> dict[str, float]:
    """:func:`compute_score` as a coroutine (verl's reward loop awaits it)."""
    with _client(url, timeout) as client:
        args = _args(solution_str, ground_truth, extra_info)
        return _score(await client.areference(*args, k=int(k)))


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict | None],
    *,
    url: str | None = None,
    k: int = 1,
    concurrency: int = 32,
    timeout: float = 600.0,
    **_: Any,
) -> list[dict[str, float]]:
    """verl's batch reward manager signature: one result per row, rows sent concurrently."""
    with _client(url, timeout, concurrency) as client:
        requests = [
            (REFERENCE, client.reference_body(*_args(*row), k=int(k)))
            for row in zip(solution_strs, ground_truths, extra_infos)
        ]
        return [_score(answer) for answer in client.post_many(requests)]
