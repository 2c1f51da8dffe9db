"""A small client of ``POST /v1/reward`` for the reward function of an RL loop: :class:`RewardClient`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from r1reward.clients import image_to_data_url
from r1reward.serve.limits import API_KEY_ENV

__all__ = ["RewardClient"]


class RewardClient:
    """A small client for ``POST /v1/reward``, for the reward function of an RL loop.

    ``rewards(questions, responses_1, responses_2, images=None, k=1)`` sends one request per pair,
    ``concurrency`` at a time (the server merges concurrent requests into shared batches), and
    returns the parsed answers in order. ``p_1(...)`` returns just the preference for
    ``response_1`` per pair, with ``neutral`` (0.5) where no judgment was parseable.
    Images may be PIL images, local paths (read here and sent as data URLs; with
    ``server_paths=True`` sent as paths, for a server started with ``--image-root``) or ``data:``
    URLs. ``api_key`` defaults to ``$R1REWARD_API_KEY``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 16,
        timeout: float = 300.0,
        api_key: str | None = None,
        server_paths: bool = False,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.server_paths = server_paths
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"authorization": f"Bearer {key}"} if key else None,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="r1reward-client"
        )

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self._client.post("/v1/reward", json=body)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except Exception:  # noqa: BLE001
                message = response.text[:200]
            raise RuntimeError(
                f"{self.base_url}/v1/reward answered {response.status_code}: {message}"
            )
        return response.json()

    def rewards(
        self,
        questions: Sequence[str],
        responses_1: Sequence[str],
        responses_2: Sequence[str],
        images: Sequence[Sequence[Any]] | None = None,
        *,
        k: int = 1,
        both_orders: bool = True,
    ) -> list[dict[str, Any]]:
        """The server's answer for each pair, in order (``concurrency`` requests at a time)."""
        n = len(questions)
        if not n == len(responses_1) == len(responses_2) or (
            images is not None and len(images) != n
        ):
            raise ValueError(
                "RewardClient.rewards: questions, responses and images differ in length"
            )
        bodies = [
            {
                "question": questions[i],
                "response_1": responses_1[i],
                "response_2": responses_2[i],
                "images": [
                    img if self.server_paths and isinstance(img, str) else image_to_data_url(img)
                    for img in images[i]
                ]
                if images is not None
                else [],
                "k": k,
                "both_orders": both_orders,
            }
            for i in range(n)
        ]
        return list(self._pool.map(self._post, bodies))

    def p_1(self, *args: Any, neutral: float = 0.5, **kwargs: Any) -> list[float]:
        """:meth:`rewards`' ``p_1`` per pair, ``neutral`` where no judgment was parseable."""
        return [
            neutral if r["p_1"] is None else float(r["p_1"]) for r in self.rewards(*args, **kwargs)
        ]

    def close(self) -> None:
        """Stop the thread pool and close the connections."""
        self._pool.shutdown(wait=False)
        self._client.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
