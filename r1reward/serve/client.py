"""One HTTP client of the reward endpoints of ``r1reward serve``, sync and async.

``RewardClient(url).pair(...)`` posts ``/v1/reward``, ``.reference(...)`` posts
``/v1/reward/reference``, ``.group(...)`` posts ``/v1/reward/group``; ``apair``, ``areference``
and ``agroup`` are the same as coroutines (one ``httpx.AsyncClient`` per call, so they run on any
event loop, e.g. the daemon loop on which TRL awaits async reward functions). ``rewards(...)`` and
``p_1(...)`` judge many pairs at once for the reward function of an RL loop; ``post_many`` and
``apost_many`` send any ``(path, body)`` requests ``concurrency`` at a time (the server merges
concurrent requests into shared batches).

Images may be PIL images, local paths (read here and sent as ``data:`` URLs; with
``server_paths=True`` sent as paths, for a server started with ``--image-root``) or ``data:``
URLs. ``api_key`` defaults to ``$R1REWARD_API_KEY`` and is sent as ``Authorization: Bearer``. A
non-200 answer raises ``RuntimeError`` naming the URL, the status and the server's message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from r1reward.clients import image_to_data_url
from r1reward.serve.limits import API_KEY_ENV

__all__ = ["RewardClient", "PAIR", "REFERENCE", "GROUP"]

#: The reward endpoints, as paths under the base URL.
PAIR, REFERENCE, GROUP = "/v1/reward", "/v1/reward/reference", "/v1/reward/group"


class RewardClient:
    """Client of ``/v1/reward``, ``/v1/reward/reference`` and ``/v1/reward/group``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        concurrency: requests in flight at once from :meth:`rewards`, :meth:`post_many` and
            :meth:`apost_many` (also the connection pool's size).
        timeout: seconds per request (a group of 8 at k=4 is 224 judgments: allow for it).
        api_key: sent as ``Authorization: Bearer``; default ``$R1REWARD_API_KEY``, none if unset.
        server_paths: send string images as they are (paths the server reads under its
            ``--image-root``) instead of reading them here.
    """

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 16,
        timeout: float = 600.0,
        api_key: str | None = None,
        server_paths: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.timeout = timeout
        self.server_paths = server_paths
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers=self._headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._pool = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="r1reward-client"
        )

    # ---------------------------------------------------------------------------- bodies
    def image_refs(self, images: Sequence[Any]) -> list[str]:
        """``images`` as the strings a request carries (see the class docstring)."""
        return [
            img if self.server_paths and isinstance(img, str) else image_to_data_url(img)
            for img in images
        ]

    def pair_body(
        self, question: str, response_1: str, response_2: str, images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """The body of ``/v1/reward``; ``kw``: k, both_orders, greedy, seed."""
        return {
            "question": question,
            "response_1": response_1,
            "response_2": response_2,
            "images": self.image_refs(images),
            **kw,
        }

    def reference_body(
        self,
        question: str,
        responses: Sequence[str],
        reference: str,
        images: Sequence[Any] = (),
        **kw: Any,
    ) -> dict[str, Any]:
        """The body of ``/v1/reward/reference``; ``kw``: k, greedy, seed."""
        return {
            "question": question,
            "responses": list(responses),
            "reference": reference,
            "images": self.image_refs(images),
            **kw,
        }

    def group_body(
        self, question: str, responses: Sequence[str], images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """The body of ``/v1/reward/group``; ``kw``: k, greedy, seed."""
        return {
            "question": question,
            "responses": list(responses),
            "images": self.image_refs(images),
            **kw,
        }

    def _answer(self, path: str, response: httpx.Response) -> dict[str, Any]:
        """The JSON of a 200 answer; otherwise ``RuntimeError`` with the server's message."""
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except Exception:  # noqa: BLE001 - any body that is not the error envelope
                message = response.text[:300]
            raise RuntimeError(f"{self.base_url}{path} answered {response.status_code}: {message}")
        return response.json()

    # ------------------------------------------------------------------------------ sync
    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path``; the answer's JSON."""
        return self._answer(path, self._client.post(path, json=body))

    def post_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Post ``(path, body)`` requests from ``concurrency`` threads, answers in order (no event
        loop involved, so it also works inside Jupyter's)."""
        if len(requests) <= 1:
            return [self.post(path, body) for path, body in requests]
        return list(self._pool.map(lambda r: self.post(*r), requests))

    def pair(
        self, question: str, response_1: str, response_2: str, images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """``/v1/reward``: ``["score"]`` = P(response_1 better). ``kw``: k, both_orders, greedy, seed."""
        return self.post(PAIR, self.pair_body(question, response_1, response_2, images, **kw))

    def reference(
        self,
        question: str,
        responses: Sequence[str],
        reference: str,
        images: Sequence[Any] = (),
        **kw: Any,
    ) -> dict[str, Any]:
        """``/v1/reward/reference``: ``["scores"][i]`` = P(responses[i] better than reference)."""
        return self.post(
            REFERENCE, self.reference_body(question, responses, reference, images, **kw)
        )

    def group(
        self, question: str, responses: Sequence[str], images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """``/v1/reward/group``: Bradley-Terry ``["scores"]``, ``["win_rates"]``, ``["ranking"]``."""
        return self.post(GROUP, self.group_body(question, responses, images, **kw))

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
        """The ``/v1/reward`` answer for each pair, in order (``concurrency`` requests at a time)."""
        n = len(questions)
        if not n == len(responses_1) == len(responses_2) or (
            images is not None and len(images) != n
        ):
            raise ValueError(
                "RewardClient.rewards: questions, responses and images differ in length"
            )
        return self.post_many(
            [
                (
                    PAIR,
                    self.pair_body(
                        questions[i],
                        responses_1[i],
                        responses_2[i],
                        images[i] if images is not None else (),
                        k=k,
                        both_orders=both_orders,
                    ),
                )
                for i in range(n)
            ]
        )

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

    # ----------------------------------------------------------------------------- async
    async def apost_many(
        self, requests: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Post ``(path, body)`` requests, ``concurrency`` at a time, answers in order."""
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, headers=self._headers
        ) as client:

            async def one(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with gate:
                    return self._answer(path, await client.post(path, json=body))

            return list(await asyncio.gather(*(one(p, b) for p, b in requests)))

    async def apair(
        self, question: str, response_1: str, response_2: str, images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """:meth:`pair` as a coroutine."""
        body = self.pair_body(question, response_1, response_2, images, **kw)
        return (await self.apost_many([(PAIR, body)]))[0]

    async def areference(
        self,
        question: str,
        responses: Sequence[str],
        reference: str,
        images: Sequence[Any] = (),
        **kw: Any,
    ) -> dict[str, Any]:
        """:meth:`reference` as a coroutine."""
        body = self.reference_body(question, responses, reference, images, **kw)
        return (await self.apost_many([(REFERENCE, body)]))[0]

    async def agroup(
        self, question: str, responses: Sequence[str], images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """:meth:`group` as a coroutine."""
        body = self.group_body(question, responses, images, **kw)
        return (await self.apost_many([(GROUP, body)]))[0]
