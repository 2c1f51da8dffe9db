"""What every endpoint of ``r1reward serve`` goes through: :class:`Guard`, one per app.

Admission (``--max-queue``), images decoded off the event loop within the pixel caps, prompt tokens
counted as the processor will feed them (:class:`PromptCounter`) before a request joins a batch,
and the wait for the answer bounded by the request's deadline and its client's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from r1reward.serve.batching import BatchingSampler, Ticket
from r1reward.serve.engine import Engine
from r1reward.serve.images import decode_image, open_image
from r1reward.serve.limits import Limits
from r1reward.serve.schema import APIError, ChatMessage, ClientGone, ImagePart, TextPart
from r1reward.verdict_scorers import BatchedVerdicts

__all__ = ["PromptCounter", "Guard"]


def _model_max_pixels(processor: Any) -> int | None:
    """The image processor's own pixel limit (Qwen2-VL: ``size["longest_edge"]``/``max_pixels``)."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    value = None
    if isinstance(size, dict):
        value = size.get("longest_edge") or size.get("max_pixels")
    elif size is not None:
        value = getattr(size, "longest_edge", None)
    value = value or getattr(image_processor, "max_pixels", None)
    return int(value) if value else None


class PromptCounter:
    """Counts a conversation's prompt tokens as :func:`r1reward.rollout.encode` will feed them:
    the chat template rendered with the generation prompt, tokenized, and each image placeholder
    expanded to the image's merged patches (``get_number_of_image_patches / merge_size**2``).

    A text too long to hold ``limit`` tokens even at the vocabulary's longest token (in bytes) is
    refused without tokenizing it, so counting costs at most ``limit`` tokens' worth of work.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        # A copy of its own: a fast tokenizer keeps its padding setting in shared state that each
        # call sets, so counting on the work pool beside the batch thread's padded encoding made
        # 6 % of that thread's batches ragged (tests/test_serve_attacks.py, the race test)
        self.tokenizer = copy.deepcopy(getattr(processor, "tokenizer", processor))
        self.image_processor = getattr(processor, "image_processor", None)
        self.merge = int(getattr(self.image_processor, "merge_size", 1) or 1) ** 2
        vocab = self.tokenizer.get_vocab()
        self.max_token_bytes = max(len(token.encode("utf-8")) for token in vocab)

    def image_tokens(self, image: Any) -> int:
        """Tokens one image placeholder expands to (its merged patches)."""
        width, height = image.size
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return int(patches) // self.merge

    def count(self, conversation: list[dict[str, Any]], limit: int | None = None) -> int:
        """Prompt tokens of ``conversation``; with ``limit``, any number above it may be returned
        as soon as the count is known to exceed it."""
        text = self.processor.apply_chat_template(
            [conversation], tokenize=False, add_generation_prompt=True
        )
        text = text[0] if isinstance(text, list) else text
        n_bytes = len(text.encode("utf-8"))
        if limit is not None and n_bytes > limit * self.max_token_bytes:
            return -(-n_bytes // self.max_token_bytes)  # a lower bound, already over the limit
        tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        for message in conversation:
            content = message.get("content")
            for item in content if isinstance(content, list) else ():
                if item.get("type") == "image" and self.image_processor is not None:
                    tokens += self.image_tokens(item["image"]) - 1  # the placeholder expands
        return tokens


class Guard:
    """The checks every endpoint shares, one per app (the rules: :mod:`r1reward.serve`).

    An endpoint does::

        async with guard.admit() as ticket:                # 503 beyond --max-queue
            images = await guard.images(ticket, refs, params)  # off the event loop, pixel caps
            result = await guard.run(http_request, ticket, work)  # deadline, client gone

    where ``work`` runs on a thread and calls :meth:`check_prompts` before it submits (a
    :class:`BatchingSampler` built by :meth:`sampler` does both).
    """

    def __init__(self, engine: Engine, limits: Limits) -> None:
        self.engine, self.limits = engine, limits
        self.in_flight = 0  # admitted requests not yet answered (changed on the event loop only)
        self.pixels_in_flight = 0
        self._lock = threading.Lock()
        self._tickets: set[Ticket] = set()
        self.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="r1reward-decode")
        # judge_pair blocks its thread until its batch is generated: one thread per request
        self.work_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="r1reward-request")
        processor = engine.processor
        self.max_model_pixels = _model_max_pixels(processor)
        self.counter = (
            PromptCounter(processor)
            if processor is not None and hasattr(processor, "apply_chat_template")
            else None
        )

    # -- admission ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[Ticket]:
        """A :class:`Ticket` for one request, or 503 when ``--max-queue`` requests are in flight.
        Check and count happen on the event loop with no ``await`` between: atomic."""
        if self.in_flight >= self.limits.max_queue:
            raise APIError(
                503,
                f"server busy: {self.in_flight} requests in flight (--max-queue "
                f"{self.limits.max_queue}); retry later",
            )
        self.in_flight += 1
        ticket = Ticket(self.limits.request_timeout_s)
        self._tickets.add(ticket)
        try:
            yield ticket
        finally:
            ticket.cancel()
            self._tickets.discard(ticket)
            self.in_flight -= 1
            with self._lock:
                self.pixels_in_flight -= ticket.pixels
                ticket.pixels = 0

    # -- request sizes ---------------------------------------------------------------------
    def check_k(self, k: int) -> None:
        """400 unless ``1 <= k <= --max-k`` (judgments per order)."""
        if not 1 <= k <= self.limits.max_k:
            raise APIError(
                400,
                f"k={k} is out of range; allowed 1 <= k <= {self.limits.max_k} (--max-k)",
                "k",
            )

    def check_images(self, refs: Sequence[Any], param: str = "images") -> None:
        """400 when a request names more than ``--max-images`` images (before any is read)."""
        if len(refs) > self.limits.max_images:
            raise APIError(
                400, f"{len(refs)} images; at most {self.limits.max_images} (--max-images)", param
            )

    # -- images -----------------------------------------------------------------------------
    async def images(self, ticket: Ticket, refs: Sequence[str], params: Sequence[str]) -> list[Any]:
        """Decoded RGB images for ``refs`` (on the decode pool), within the pixel caps."""
        if not refs:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.decode_pool, self._images, ticket, list(refs), list(params)
        )

    def _images(self, ticket: Ticket, refs: list[str], params: list[str]) -> list[Any]:
        limits = self.limits
        opened = [open_image(ref, limits, param) for ref, param in zip(refs, params)]
        total = sum(image.size[0] * image.size[1] for image in opened)
        if total > limits.max_request_pixels:
            raise APIError(
                413,
                f"the request's {len(opened)} images hold {total} pixels; the limit is "
                f"{limits.max_request_pixels} per request (--max-request-pixels)",
                params[0],
            )
        with self._lock:
            if self.pixels_in_flight + total > limits.max_inflight_pixels:
                raise APIError(
                    503,
                    f"server busy: {self.pixels_in_flight} image pixels in flight, this request "
                    f"adds {total} (--max-inflight-pixels {limits.max_inflight_pixels}); retry "
                    "later",
                )
            self.pixels_in_flight += total
            ticket.pixels += total
        return [
            decode_image(image, param, self.max_model_pixels)
            for image, param in zip(opened, params)
        ]

    async def messages(self, ticket: Ticket, messages: Sequence[ChatMessage]) -> list[dict]:
        """OpenAI chat messages -> processor messages, their images decoded by :meth:`images`."""
        refs, params = [], []
        for i, message in enumerate(messages):
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if isinstance(part, ImagePart):
                        url = (
                            part.image_url
                            if isinstance(part.image_url, str)
                            else part.image_url.url
                        )
                        refs.append(url)
                        params.append(f"messages.{i}.content.{j}.image_url")
        self.check_images(refs, "messages")
        decoded = iter(await self.images(ticket, refs, params))
        out: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message.content, str):
                content: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
            else:
                content = [
                    {"type": "text", "text": part.text}
                    if isinstance(part, TextPart)
                    else {"type": "image", "image": next(decoded)}
                    for part in message.content
                ]
            out.append({"role": message.role, "content": content})
        return out

    # -- prompt tokens ----------------------------------------------------------------------
    def check_prompts(self, conversations: Sequence[Any], param: str = "messages") -> list[int]:
        """Prompt tokens of each conversation; 400 when one is over ``--max-prompt-tokens``.
        Call it on a worker thread (it tokenizes) before submitting."""
        if self.counter is None:
            return []
        limit = self.limits.max_prompt_tokens
        counts = [self.counter.count(conv, limit) for conv in conversations]
        worst = max(counts, default=0)
        if worst > limit:
            raise APIError(
                400,
                f"{param}: the prompt is at least {worst} tokens "
                f"after the chat template, images included; the limit is {limit} "
                "(--max-prompt-tokens)",
                param,
            )
        return counts

    def sampler(self, ticket: Ticket, param: str = "question") -> BatchingSampler:
        """A :class:`BatchingSampler` that checks prompts and obeys ``ticket``."""
        return BatchingSampler(
            self.engine.batcher, ticket, lambda convs: self.check_prompts(convs, param)
        )

    def verdicts(self, ticket: Ticket, param: str = "question") -> BatchedVerdicts:
        """A :class:`r1reward.verdicts.BatchedVerdicts` scorer that checks prompts and obeys
        ``ticket``, like :meth:`sampler` (the reward endpoints read verdict probabilities)."""
        return BatchedVerdicts(
            self.engine.batcher, ticket=ticket, check=lambda convs: self.check_prompts(convs, param)
        )

    # -- waiting ----------------------------------------------------------------------------
    async def run(self, request: Any, ticket: Ticket, work: Callable[[], Any]) -> Any:
        """Run ``work()`` on the work pool and wait for it, but no longer than the ticket's
        deadline (504) or the client's connection (:class:`ClientGone`); either way the
        request's queued jobs are dropped."""
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self.work_pool, work)

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(disconnected())
        try:
            done, _ = await asyncio.wait(
                {task, watcher}, timeout=ticket.remaining(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            watcher.cancel()
        if task in done:
            return task.result()
        ticket.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning
        if watcher in done:
            raise ClientGone()
        raise APIError(
            504,
            f"the request did not finish within {self.limits.request_timeout_s:g} s "
            "(--request-timeout); its work was dropped",
        )

    def health(self) -> dict[str, Any]:
        """``GET /health``'s body: status (``ok``/``stuck``), queue and batching counters."""
        batcher = self.engine.batcher
        age = batcher.running_age()
        stats = batcher.stats
        return {
            "status": "stuck" if age is not None and age > self.limits.stuck_after_s else "ok",
            "model": self.engine.name,
            "in_flight": self.in_flight,
            "queued": batcher.pending(),
            "running_batch_age_s": None if age is None else round(age, 3),
            "pixels_in_flight": self.pixels_in_flight,
            "batches": stats.batches,
            "requests": stats.jobs,
            "max_requests_per_batch": stats.max_jobs_per_batch,
            "errors": stats.errors,
            "dropped": stats.dropped,
            "isolated": stats.isolated,
        }

    def close(self) -> None:
        """Cancel every request in flight (shutdown) and stop the pools."""
        for ticket in list(self._tickets):
            ticket.cancel()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.work_pool.shutdown(wait=False, cancel_futures=True)
