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
defaults to ``$R1REWARD_URL`` or ``http://127.0.0.1:8000``. This file imports only ``httpx`` and
the standard library, so verl's workers need nothing else from r1reward installed.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

__all__ = ["compute_score", "compute_score_async", "compute_score_batch"]


def _url(url: str | None) -> str:
    return (url or os.environ.get("R1REWARD_URL") or "http://127.0.0.1:8000").rstrip("/")


def _body(solution_str: str, ground_truth: Any, extra_info: dict | None, k: int) -> dict[str, Any]:
    if not isinstance(ground_truth, str):
        raise ValueError(
            f"r1reward verl reward: ground_truth is {ground_truth!r}; expected the reference "
            "answer as a string (reward_model.ground_truth in the parquet rows)"
        )
    info = extra_info or {}
    return {
        "question": str(info.get("question", "")),
        "responses": [solution_str],
        "reference": ground_truth,
        "images": list(info.get("images", [])),
        "k": int(k),
    }


def _answer(url: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(
            f"{url}/v1/reward/reference answered {response.status_code}: {response.text[:300]}"
        )
    result = response.json()
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
    base = _url(url)
    body = _body(solution_str, ground_truth, extra_info, k)
    return _answer(base, httpx.post(f"{base}/v1/reward/reference", json=body, timeout=timeout))


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
    base = _url(url)
    body = _body(solution_str, ground_truth, extra_info, k)
    async with httpx.AsyncClient(timeout=timeout) as client:
        return _answer(base, await client.post(f"{base}/v1/reward/reference", json=body))


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
    rows = list(zip(data_sources, solution_strs, ground_truths, extra_infos))
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(rows)))) as pool:
        return list(
            pool.map(
                lambda r: compute_score(*r, url=url, k=k, timeout=timeout),
                rows,
            )
        )
