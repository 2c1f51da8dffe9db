"""One HTTP client for the reward endpoints of ``r1reward serve``, sync and async.

``JudgeClient(url).pair(...)`` posts ``/v1/reward``, ``.reference(...)`` posts
``/v1/reward/reference``, ``.group(...)`` posts ``/v1/reward/group``; ``apair``, ``areference``
and ``agroup`` are the same as coroutines (one ``httpx.AsyncClient`` per call, so they run on any
event loop, e.g. the daemon loop on which TRL awaits async reward functions). Images may be PIL
images, local paths (sent as ``data:`` URLs) or ``data:`` URLs. A non-200 answer raises
``RuntimeError`` with the server's message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from r1reward.clients import image_to_data_url

__all__ = ["JudgeClient"]


def _image_refs(images: Sequence[Any]) -> list[str]:
    return [image_to_data_url(img) for img in images]


class JudgeClient:
    """Client of ``/v1/reward``, ``/v1/reward/reference`` and ``/v1/reward/group``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        timeout: seconds per request (a group of 8 at k=4 is 224 judgments: allow for it).
        concurrency: requests in flight at once from the ``*_many`` helpers.
    """

    def __init__(self, base_url: str, *, timeout: float = 600.0, concurrency: int = 16) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.concurrency = concurrency
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    # ---------------------------------------------------------------------------- bodies
    @staticmethod
    def _pair_body(
        question: str, response_1: str, response_2: str, images: Sequence[Any], **kw: Any
    ) -> dict:
        return {
            "question": question,
            "response_1": response_1,
            "response_2": response_2,
            "images": _image_refs(images),
            **kw,
        }

    @staticmethod
    def _reference_body(
        question: str, responses: Sequence[str], reference: str, images: Sequence[Any], **kw: Any
    ) -> dict:
        return {
            "question": question,
            "responses": list(responses),
            "reference": reference,
            "images": _image_refs(images),
            **kw,
        }

    @staticmethod
    def _group_body(
        question: str, responses: Sequence[str], images: Sequence[Any], **kw: Any
    ) -> dict:
        return {
            "question": question,
            "responses": list(responses),
            "images": _image_refs(images),
            **kw,
        }

    def _check(self, path: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except Exception:  # noqa: BLE001 - any non-JSON body
                message = response.text[:300]
            raise RuntimeError(f"{self.base_url}{path} answered {response.status_code}: {message}")
        return response.json()

    # ------------------------------------------------------------------------------ sync
    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(path, self._client.post(path, json=body))

    def pair(
        self, question: str, response_1: str, response_2: str, images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """``/v1/reward``: ``["score"]`` = P(response_1 better). ``kw``: k, both_orders, greedy, seed."""
        return self.post(
            "/v1/reward", self._pair_body(question, response_1, response_2, images, **kw)
        )

    def reference(
        self,
        question: str,
        responses: Sequence[str],
        reference: str,
        images: Sequence[Any] = (),
        **kw: Any,
    ) -> dict[str, Any]:
        """``/v1/reward/reference``: ``["scores"][i]`` = P(responses[i] better than reference)."""
        body = self._reference_body(question, responses, reference, images, **kw)
        return self.post("/v1/reward/reference", body)

    def group(
        self, question: str, responses: Sequence[str], images: Sequence[Any] = (), **kw: Any
    ) -> dict[str, Any]:
        """``/v1/reward/group``: Bradley-Terry ``["scores"]``, ``["win_rates"]``, ``["ranking"]``."""
        return self.post("/v1/reward/group", self._group_body(question, responses, images, **kw))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- async
    async def apost_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict]:
        """Post ``(path, body)`` requests, ``concurrency`` at a time, answers in order."""
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as client:

            async def one(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with gate:
                    return self._check(path, await client.post(path, json=body))

            return list(await asyncio.gather(*(one(p, b) for p, b in requests)))

    async def apair(
        self, question: str, response_1: str, response_2: str, images: Sequence[Any] = (), **kw: Any
    ) -> dict:
        body = self._pair_body(question, response_1, response_2, images, **kw)
        return (await self.apost_many([("/v1/reward", body)]))[0]

    async def areference(
        self,
        question: str,
        responses: Sequence[str],
        reference: str,
        images: Sequence[Any] = (),
        **kw: Any,
    ) -> dict:
        body = self._reference_body(question, responses, reference, images, **kw)
        return (await self.apost_many([("/v1/reward/reference", body)]))[0]

    async def agroup(
        self, question: str, responses: Sequence[str], images: Sequence[Any] = (), **kw: Any
    ) -> dict:
        body = self._group_body(question, responses, images, **kw)
        return (await self.apost_many([("/v1/reward/group", body)]))[0]

    def post_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict]:
        """Post ``(path, body)`` requests from ``concurrency`` threads, answers in order (no event
        loop involved, so it also works inside Jupyter's)."""
        if len(requests) <= 1:
            return [self.post(path, body) for path, body in requests]
        workers = min(self.concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="r1reward-judge") as pool:
            return list(pool.map(lambda r: self.post(*r), requests))
