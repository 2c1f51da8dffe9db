"""``r1reward serve``: the reward model as an HTTP service (OpenAI-compatible chat + ``/v1/reward``).

The one question users asked the reference project is how to use a trained R1-Reward model as the
reward inside their own GRPO/PPO training. This module answers it with a service that loads the
model once and offers

* ``POST /v1/chat/completions`` - OpenAI-compatible chat (text; images as ``data:`` URLs, or paths
  under ``--image-root`` when ``--allow-local-images``; ``temperature``, ``top_p``,
  ``max_tokens``, ``n``), so the served model can also act as the consistency judge
  (:class:`r1reward.judges.OpenAIJudge`) or a teacher;
* ``GET /v1/models``;
* ``POST /v1/reward`` - ``{question, images, response_1, response_2, k, both_orders}`` ->
  ``{score, p_1_orders, order_gap, swap_disagreement, preferred, p_1, votes, analyses, ...}``:
  ``k`` Table-1 judgments per order (both orders by default, so position bias cancels);
  ``score`` = P(response_1 better) read from the judge's verdict distribution after each analysis
  and averaged over the orders -- a number for every valid request -- and, as the second
  estimate, the majority vote and ``p_1`` = share of the parseable votes that prefer
  ``response_1`` (paper Sec. 4.3, Voting@K). This is :func:`r1reward.verdicts.score_pair`;
* ``POST /v1/reward/reference``, ``POST /v1/reward/group`` - pointwise against a reference and
  group ranking (Bradley-Terry), and ``POST /get_reward``, OpenRLHF's remote reward protocol
  (:mod:`r1reward.reward_api`);
* ``GET /health`` - liveness, queue depth, the age of the running batch, batching counters;
  ``503`` with ``status: "stuck"`` when one batch has run longer than ``--stuck-after``.

Batching: every generation goes through one :class:`MicroBatcher` thread. Requests that arrive
while a batch is generating (or within ``batch_wait_ms`` of the first one) are merged into a single
sampler / ``generate`` call when their generation settings agree; the event loop never runs the
model, so ``/health`` answers while a batch is running. Only one batch runs at a time.

The service survives its clients (:class:`Guard`, one per app; every endpoint calls it):

* isolation - everything the processor could refuse is checked *before* a request joins a batch
  (text that is not encodable Unicode or holds a vision placeholder token, image size and aspect
  ratio, prompt tokens after the chat template with image tokens included); a merged batch that
  still fails is re-run one job at a time, so only the offender gets the error;
* bounded cost - ``--max-prompt-tokens``, ``max_tokens`` / ``k`` / ``n`` bounds, a per-request
  deadline (``--request-timeout``: 504), jobs of clients that disconnected or timed out are dropped
  before they run, a graceful-shutdown timeout;
* bounded memory - decoded pixels capped per image (header checked before decoding), per request
  and over all requests in flight; images decoded on a small thread pool (never on the event loop)
  and resized at once to the model's own pixel limit; ``--max-queue`` requests in flight, counted
  atomically at admission; uvicorn's keep-alive timeout, a header timeout and a connection cap;
* access - an API key (``--api-key`` or ``$R1REWARD_API_KEY``; ``Authorization: Bearer``,
  compared in constant time; 401 without it), local image paths off unless
  ``--allow-local-images``, and then confined to ``--image-root`` with one error for every file that
  cannot be used (missing, unreadable, not an image: no existence or size oracle); ``/docs`` and
  ``/openapi.json`` only with ``--docs``; the ``Host`` header checked while bound to loopback (DNS
  rebinding).

Errors use OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients
show the message: 400 bad input (naming the field), 401 no or wrong key, 404 unknown model or
route, 413 too large, 503 busy, 504 deadline passed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import io
import ipaddress
import itertools
import json
import math
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from starlette.requests import Request  # FastAPI's; imported here for the endpoints' annotations

from r1reward.engines import add_engine_argument, resolve_engine
from r1reward.reward_api import (
    GetRewardRequest,
    GroupRequest,
    ReferenceRequest,
    RequestError,
    get_reward,
    group_reward,
    reference_reward,
)
from r1reward.verdicts import BatchedVerdicts, score_pair, verdict_scorer

__all__ = [
    "Access",
    "Limits",
    "ServerSettings",
    "Guard",
    "Ticket",
    "Text",
    "MicroBatcher",
    "BatchingSampler",
    "Engine",
    "create_app",
    "BackgroundServer",
    "RewardClient",
    "build_engine",
    "limits_from_args",
    "main",
]

#: Environment variable read for the API key when ``--api-key`` is not given.
API_KEY_ENV = "R1REWARD_API_KEY"

#: Host names accepted in the ``Host`` header while the server is bound to loopback.
LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

#: Tokens a client's text may not hold: the processor counts them against the images and videos
#: it was given, so one stray ``<|image_pad|>`` in a question failed the whole merged batch.
RESERVED_TOKENS: tuple[str, ...] = ("<|image_pad|>", "<|video_pad|>")


# --------------------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Limits:
    """What the service accepts and how long it waits. Every bound has a CLI flag of the same
    name (``max_prompt_tokens`` -> ``--max-prompt-tokens``; seconds end in ``_s``)."""

    max_body_bytes: int = 32 * 2**20
    max_image_bytes: int = 8 * 2**20
    max_image_pixels: int = 4096 * 4096  # one image, read from its header before decoding
    max_request_pixels: int = 2 * 4096 * 4096  # all images of one request
    max_inflight_pixels: int = 8 * 4096 * 4096  # all images held by the requests in flight
    max_aspect_ratio: float = 200.0  # Qwen2-VL's smart_resize refuses anything longer
    max_images: int = 16
    max_k: int = 32
    max_n: int = 16
    max_tokens: int = 2048
    max_prompt_tokens: int = 16384  # after the chat template, image tokens included
    allow_local_images: bool = False
    image_root: str | None = None  # local image paths must resolve inside it
    max_queue: int = 1024  # requests in flight (decoding, queued or generating); beyond: 503
    request_timeout_s: float = 600.0  # per request, from admission to answer; beyond: 504
    stuck_after_s: float = 900.0  # /health answers 503 "stuck" when one batch runs longer
    body_timeout_s: float = 30.0  # no part of a started body for this long: 408


@dataclass(frozen=True)
class Access:
    """Who may call the service.

    Attributes:
        api_key: when set, every route but ``GET /health`` needs ``Authorization: Bearer KEY``.
        docs: serve ``/docs`` and ``/openapi.json`` (off: they describe the service to anyone).
        allowed_hosts: accepted ``Host`` header names (any loopback IP literal is accepted too);
            ``None`` accepts any. The default suits a server bound to loopback: a web page on
            another origin that rebinds its DNS name to 127.0.0.1 is refused.
    """

    api_key: str | None = None
    docs: bool = False
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES


class APIError(Exception):
    """An error answered to the client as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class ClientGone(Exception):
    """The client disconnected before its answer was ready (its jobs were dropped)."""


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout",
    413: "request_too_large",
    503: "server_busy",
    504: "timeout",
}


def _error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


# ------------------------------------------------------------------------------- request models
def _encodable(value: str) -> str:
    """Text the tokenizer can take: valid Unicode (no lone surrogate such as ``"\\ud800"``, which
    JSON can carry but UTF-8 cannot) and none of :data:`RESERVED_TOKENS`."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"not valid Unicode text: a lone surrogate {value[exc.start]!r} at character "
            f"{exc.start}"
        ) from None
    for token in RESERVED_TOKENS:
        if token in value:
            raise ValueError(f"holds the reserved token {token}, which only the server may place")
    return value


#: A request string that passed :func:`_encodable`; use it for every text field of an endpoint.
Text = Annotated[StrictStr, AfterValidator(_encodable)]


class _ImageURL(BaseModel):
    url: StrictStr
    detail: str | None = None


class _TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class _ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: _ImageURL | StrictStr


_Part = Annotated[_TextPart | _ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Text | list[_Part]


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completion request this server honours (others ignored).

    Numbers are strict: ``"0.5"`` is refused, not coerced; ``max_tokens: 0`` is refused, not
    replaced by the default."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: StrictFloat = Field(default=1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    n: StrictInt = 1
    stream: StrictBool = False
    seed: StrictInt | None = None


class RewardRequest(BaseModel):
    """``POST /v1/reward``. Unknown fields are rejected (a typo should not pass silently).

    ``k`` judgments per order (``1 <= k <= --max-k``); ``both_orders`` also shows the pair swapped
    and maps those verdicts back; ``greedy`` defaults to ``k == 1`` (one greedy judgment per order;
    with ``greedy=true`` and ``k > 1`` still one per order); ``seed`` makes the sampled judgments
    reproducible (requests without one get a fresh seed per batch). ``images`` are ``data:`` URLs
    (or paths under ``--image-root`` when the server allows local images).

    The answer is :class:`r1reward.verdicts.PairScore`: ``score`` (P(``response_1`` better) from
    the verdict distribution, averaged over the judgments and orders; always a number),
    ``p_1_orders``, ``order_gap``, ``swap_disagreement``; the votes: ``preferred`` (1, 2, or
    null on a tie / nothing parseable), ``tie``, ``p_1`` (share of the parseable votes preferring
    ``response_1``; null when none parsed), ``votes`` (``{"1", "2", "unparseable"}``); and per
    judgment ``answers`` and ``p_first`` (in the caller's positions), ``orders``
    (``as-given``/``swapped``), ``analyses``, ``texts``; ``well_formed_rate``, ``verdict_mass``.
    """

    model_config = ConfigDict(extra="forbid")

    question: Text
    response_1: Text
    response_2: Text
    images: list[StrictStr] = Field(default_factory=list)
    k: StrictInt = 1
    both_orders: StrictBool = True
    greedy: StrictBool | None = None
    seed: StrictInt | None = None


# --------------------------------------------------------------------------------------- images
def _local_image_error(param: str) -> APIError:
    # one answer for a path outside the root, a missing, unreadable, oversized or non-image file:
    # the client learns nothing about the server's disk beyond "not usable here"
    return APIError(
        400, f"{param}: no usable image at that path under the server's --image-root", param
    )


def _read_local(ref: str, limits: Limits, param: str) -> bytes:
    if not limits.allow_local_images:
        raise APIError(
            400,
            f"{param}: local image paths are disabled on this server (send a data:image/...;"
            "base64 URL, or start it with --allow-local-images --image-root DIR)",
            param,
        )
    if not limits.image_root:
        raise APIError(400, f"{param}: local image paths need the server's --image-root", param)
    root = Path(limits.image_root).resolve()
    try:
        path = (root / Path(ref).expanduser()).resolve()
        if not path.is_relative_to(root):
            raise _local_image_error(param)
        with path.open("rb") as handle:
            raw = handle.read(limits.max_image_bytes + 1)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _local_image_error(param) from exc
    if len(raw) > limits.max_image_bytes:
        raise _local_image_error(param)
    return raw


def _image_bytes(ref: str, limits: Limits, param: str) -> bytes:
    if ref.startswith("data:"):
        header, sep, payload = ref.partition(",")
        if not sep or ";base64" not in header:
            raise APIError(
                400, f"{param}: a data URL must look like data:image/png;base64,...", param
            )
        if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
            raise APIError(
                413,
                f"{param}: image is about {len(payload) * 3 // 4} bytes; the limit is "
                f"{limits.max_image_bytes} bytes (--max-image-bytes)",
                param,
            )
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise APIError(
                400, f"{param}: the data URL is not valid base64 ({exc})", param
            ) from exc
        if len(raw) > limits.max_image_bytes:
            raise APIError(
                413,
                f"{param}: image is {len(raw)} bytes; the limit is {limits.max_image_bytes} "
                "bytes (--max-image-bytes)",
                param,
            )
        return raw
    if ref.startswith(("http://", "https://")):
        raise APIError(
            400,
            f"{param}: remote image URLs are not fetched by this server; send a data URL "
            "(data:image/png;base64,...)",
            param,
        )
    return _read_local(ref, limits, param)


def open_image(ref: str, limits: Limits, param: str) -> Any:
    """A ``data:image/...;base64,`` URL (or an allowed local path) -> a PIL image whose header
    was read and checked, its pixels not yet decoded.

    Raises :class:`APIError` 400 (undecodable, remote URL, local paths off, aspect ratio over
    ``max_aspect_ratio``) or 413 (bytes or pixels over the limits). A local file that cannot be
    used gets one message whatever the reason.
    """
    from PIL import Image, UnidentifiedImageError

    local = not ref.startswith(("data:", "http://", "https://"))
    raw = _image_bytes(ref, limits, param)
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        if local:
            raise _local_image_error(param) from exc
        detail = str(exc)
        if "cannot identify image file" in detail:
            detail = "not PNG, JPEG, WebP, GIF or another format Pillow reads"
        raise APIError(400, f"{param}: not a decodable image ({detail})", param) from exc
    if width * height > limits.max_image_pixels:
        raise APIError(
            413,
            f"{param}: image is {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_image_pixels} (--max-image-pixels)",
            param,
        )
    if min(width, height) < 1 or max(width, height) / min(width, height) > limits.max_aspect_ratio:
        raise APIError(
            400,
            f"{param}: image is {width}x{height}; the model takes aspect ratios up to "
            f"{limits.max_aspect_ratio:g}:1",
            param,
        )
    image.r1_local = local  # decode_image's errors say as little about a local file
    return image


def decode_image(image: Any, param: str, max_pixels: int | None = None) -> Any:
    """Decode an :func:`open_image` result to RGB, at most ``max_pixels`` (the model's own
    limit: the processor would shrink it to that anyway, so the full-size copy is dropped at
    once; JPEGs are decoded at a reduced scale when they can be)."""
    from PIL import Image

    width, height = image.size
    local = getattr(image, "r1_local", False)
    try:
        if max_pixels and width * height > max_pixels:
            scale = math.sqrt(max_pixels / (width * height))
            target = (max(1, int(width * scale)), max(1, int(height * scale)))
            image.draft("RGB", target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
            image.load()
            image = image.convert("RGB").resize(target, Image.Resampling.BICUBIC)
        else:
            image.load()
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if local:
            raise _local_image_error(param) from exc
        raise APIError(400, f"{param}: not a decodable image ({exc})", param) from exc
    return image


def load_image(ref: str, limits: Limits, param: str, max_pixels: int | None = None) -> Any:
    """:func:`open_image` then :func:`decode_image`: a checked RGB PIL image."""
    return decode_image(open_image(ref, limits, param), param, max_pixels)


# ---------------------------------------------------------------------------------- batching
def _settle(future: Future, result: Any = None, exc: BaseException | None = None) -> None:
    """Set a future's outcome unless someone (shutdown, a gone client) already did."""
    with contextlib.suppress(InvalidStateError):
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    future: Future
    alive: Callable[[], bool] | None = None  # False once the client is gone or its deadline passed


@dataclass
class BatchStats:
    """Counters of a :class:`MicroBatcher` (cumulative)."""

    jobs: int = 0  # submit() calls answered
    items: int = 0  # conversations generated for
    batches: int = 0  # calls of the run function that succeeded
    max_jobs_per_batch: int = 0
    errors: int = 0  # jobs answered with an error
    dropped: int = 0  # jobs not generated: their client had gone or their deadline had passed
    isolated: int = 0  # merged batches that failed and were re-run one job at a time


class MicroBatcher:
    """Merges concurrent jobs into few calls of ``run(key, items) -> results``, on one thread.

    ``submit(key, items, alive=None)`` returns a :class:`concurrent.futures.Future` of
    ``len(items)`` results. The worker takes the first waiting job, waits at most ``max_wait_s``
    for more, drains whatever else is queued (up to ``max_items`` items in all), groups the jobs
    by ``key`` (generation settings) and makes one ``run`` call per group, in arrival order. Jobs
    that arrive while a batch runs wait in the queue and form the next batch, so under load
    batches grow by themselves. ``run`` is only ever called from the worker thread (one model call
    at a time).

    A job whose future was cancelled or whose ``alive()`` is false when its batch forms is
    dropped, not generated. When a merged call raises, its jobs are run again one at a time, so a
    request that slipped past validation fails alone and the others get their results.
    """

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        *,
        max_wait_s: float = 0.005,
        max_items: int = 64,
    ) -> None:
        self.run = run
        self.max_wait_s = max_wait_s
        self.max_items = max_items
        self.stats = BatchStats()
        self.running_since: float | None = None  # time.monotonic() when the running call began
        self._running: list[_Job] = []
        self._closed = False
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="r1reward-batcher", daemon=True)
        self._thread.start()

    def submit(
        self, key: Hashable, items: Sequence[Any], alive: Callable[[], bool] | None = None
    ) -> Future:
        future: Future = Future()
        if self._closed:
            future.set_exception(RuntimeError("the batcher is closed (the server is stopping)"))
            return future
        self._queue.put(_Job(key, list(items), future, alive))
        return future

    def pending(self) -> int:
        """Jobs waiting for a batch (not counting the running one)."""
        return self._queue.qsize()

    def running_age(self) -> float | None:
        """Seconds the running ``run`` call has taken so far (``None`` when idle)."""
        since = self.running_since
        return None if since is None else time.monotonic() - since

    def close(self, timeout: float = 5.0) -> None:
        """Stop: queued jobs are cancelled, running ones answered with an error (their threads
        are released at once; the model call itself cannot be interrupted and is abandoned)."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._queue.get_nowait()
                if job is not None:
                    job.future.cancel()
        for job in list(self._running):
            _settle(job.future, exc=RuntimeError("the server stopped before this job finished"))
        self._queue.put(None)
        self._thread.join(timeout=timeout)

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, n = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_items:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job.items)
        return jobs, False

    def _live(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs still wanted, marked running; the others are dropped (cancelled)."""
        live = []
        for job in jobs:
            if job.alive is not None and not job.alive():
                job.future.cancel()
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:
                self.stats.dropped += 1
        return live

    def _run_jobs(self, key: Hashable, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        try:
            results = self.run(key, items)
            if len(results) != len(items):
                raise RuntimeError(f"batch run returned {len(results)} results for {len(items)}")
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request(s)
            if len(jobs) > 1:  # isolate the offender: every job on its own
                self.stats.isolated += 1
                for job in jobs:
                    if job.alive is None or job.alive():
                        self._run_jobs(key, [job])
                    else:
                        self.stats.dropped += 1
                        _settle(job.future, exc=CancelledError())
                return
            self.stats.errors += 1
            _settle(jobs[0].future, exc=exc)
            return
        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.items += len(items)
        self.stats.max_jobs_per_batch = max(self.stats.max_jobs_per_batch, len(jobs))
        start = 0
        for job in jobs:
            _settle(job.future, results[start : start + len(job.items)])
            start += len(job.items)

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._gather(first)
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                live = self._live(group)
                if not live:
                    continue
                self._running, self.running_since = live, time.monotonic()
                try:
                    self._run_jobs(key, live)
                finally:
                    self._running, self.running_since = [], None


class BatchingSampler:
    """A :class:`r1reward.evaluate.Sampler` whose concurrent ``sample`` calls share one batch.

    Each ``sample(conversations, k=, greedy=, seed=)`` call (one per ``/v1/reward`` request, from
    its own thread) is submitted to ``batcher`` under the key ``("reward", k, greedy, seed)`` and
    blocks until the merged call of the inner sampler (the evaluator's :class:`ModelSampler`:
    ``num_return_sequences=k``, left padding) has produced its texts. Requests without a seed share
    the key ``seed=None``; the batch then draws a fresh seed from ``rng``.

    ``check(conversations)`` (e.g. :meth:`Guard.check_prompts`) runs first, in the caller's thread,
    so a request that the processor would refuse never joins a batch; ``ticket`` (a
    :class:`Ticket`) lets the request's deadline and disconnection drop its job.
    """

    def __init__(
        self,
        batcher: MicroBatcher,
        ticket: Ticket | None = None,
        check: Callable[[Sequence[Any]], Any] | None = None,
    ) -> None:
        self.batcher = batcher
        self.ticket = ticket
        self.check = check

    def sample(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[str]]:
        if self.check is not None:
            self.check(conversations)
        key = ("reward", int(k), bool(greedy), seed)
        ticket = self.ticket
        future = self.batcher.submit(key, conversations, ticket.alive if ticket else None)
        if ticket is not None:
            ticket.track(future)
        return future.result()


# ------------------------------------------------------------------------------------- engine
@dataclass
class ChatChoice:
    text: str
    completion_tokens: int
    finish: str


@dataclass
class Engine:
    """The loaded model behind the service, and the one batcher thread that runs it.

    Args:
        model, processor: from :func:`r1reward.models.load_model` (or any pair that
            :func:`r1reward.rollout.generate` accepts).
        name: the model name reported by ``/v1/models`` and checked against ``model`` in requests.
        sampler: the inner sampler for ``/v1/reward``; default the evaluator's
            ``ModelSampler(model, processor, max_new_tokens=reward_max_tokens,
            temperature=reward_temperature, batch_size=batch_size)``.
        batch_size: prompts per ``generate`` call inside one merged batch.
        batch_wait_ms, max_batch_items: see :class:`MicroBatcher`.
        seed: seeds the stream of per-batch seeds for requests that give none.
        verdicts: the scorer of the reward endpoints (:mod:`r1reward.verdicts`); default
            :class:`r1reward.verdicts.ModelVerdicts` with the settings above, or
            :class:`r1reward.verdicts.SamplerVerdicts` around ``sampler`` when one is given.
        engine: ``"transformers"`` or ``"vllm"`` (:mod:`r1reward.engines`): what generates
            chat completions and judgments; verdict probabilities stay a transformers forward.
    """

    model: Any
    processor: Any
    name: str
    sampler: Any = None
    batch_size: int = 16
    reward_max_tokens: int = 256
    reward_temperature: float = 1.0
    batch_wait_ms: float = 5.0
    max_batch_items: int = 64
    seed: int = 0
    verdicts: Any = None
    engine: str = "transformers"
    _rng: random.Random = field(init=False, repr=False)
    batcher: MicroBatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.verdicts is None:
            self.verdicts = verdict_scorer(
                self.model,
                self.processor,
                sampler=self.sampler,
                max_new_tokens=self.reward_max_tokens,
                temperature=self.reward_temperature,
                batch_size=self.batch_size,
                engine=self.engine,
            )
        if self.sampler is None:
            from r1reward.evaluate import ModelSampler

            self.sampler = ModelSampler(
                self.model,
                self.processor,
                batch_size=self.batch_size,
                max_new_tokens=self.reward_max_tokens,
                temperature=self.reward_temperature,
                name=self.name,
                engine=self.engine,
            )
        self._rng = random.Random(self.seed)
        self.batcher = MicroBatcher(
            self._run, max_wait_s=self.batch_wait_ms / 1000, max_items=self.max_batch_items
        )

    def _fresh_seed(self, seed: int | None) -> int:
        return self._rng.randrange(2**31) if seed is None else seed

    # runs on the batcher thread only
    def _run(self, key: Hashable, items: list[Any]) -> list[Any]:
        kind = key[0]
        if kind == "reward":
            _, k, greedy, seed = key
            return self.sampler.sample(items, k=k, greedy=greedy, seed=self._fresh_seed(seed))
        if kind == "verdict":
            _, k, greedy, seed = key
            return self.verdicts.judge(items, k=k, greedy=greedy, seed=self._fresh_seed(seed))
        if kind == "chat":
            _, n, temperature, top_p, max_tokens, seed = key
            return self._chat_batch(
                items, n, temperature, top_p, max_tokens, self._fresh_seed(seed)
            )
        raise ValueError(f"unknown batch kind {kind!r}")

    def _chat_batch(
        self,
        conversations: list[Any],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int,
    ) -> list[tuple[int, list[ChatChoice]]]:
        from r1reward.rollout import encode, generate

        greedy = temperature == 0.0
        groups = generate(
            self.model,
            self.processor,
            conversations,
            num_return_sequences=n,
            do_sample=not greedy,
            temperature=temperature if not greedy else 1.0,
            top_p=top_p,
            max_new_tokens=max_tokens,
            batch_size=self.batch_size,
            seed=seed,
            engine=self.engine,
        )
        prompt_tokens = [
            int(encode(self.processor, [conv])["attention_mask"].sum()) for conv in conversations
        ]
        return [
            (p, [ChatChoice(c.text, len(c.token_ids), c.finish) for c in group])
            for p, group in zip(prompt_tokens, groups)
        ]

    def chat_future(
        self,
        conversation: list[dict[str, Any]],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: int | None,
        alive: Callable[[], bool] | None = None,
    ) -> Future:
        key = ("chat", n, float(temperature), float(top_p), int(max_tokens), seed)
        return self.batcher.submit(key, [conversation], alive)

    def close(self) -> None:
        self.batcher.close()


# ---------------------------------------------------------------------------------- middleware
async def _send_error(
    send: Callable, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(_error_body(status, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Answers 413 to a request whose body exceeds ``max_bytes`` (declared or streamed), and 408
    when the client sends no part of its body for ``chunk_timeout_s`` (a slow-body client)."""

    def __init__(self, app: Any, max_bytes: int, chunk_timeout_s: float | None = None) -> None:
        self.app, self.max_bytes, self.chunk_timeout_s = app, max_bytes, chunk_timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        chunks: list[bytes] = []
        total, more = 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), self.chunk_timeout_s)
            except TimeoutError:
                await _send_error(
                    send,
                    408,
                    f"no part of the request body arrived for {self.chunk_timeout_s:g} s "
                    "(--body-timeout)",
                )
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reject(send, total)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Callable, size: int) -> None:
        await _send_error(
            send,
            413,
            f"request body is {'at least ' if size else ''}{size} bytes; the limit is "
            f"{self.max_bytes} bytes (--max-body-bytes)",
        )


def _host_name(host: str) -> str:
    """``Host`` header -> the name without port: ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AccessMiddleware:
    """The ``Host`` check (when ``access.allowed_hosts`` is set) and the API key (when
    ``access.api_key`` is set; ``GET /health`` stays open for liveness probes). Runs before the
    body is read, so an unauthenticated client costs no parsing."""

    def __init__(self, app: Any, access: Access) -> None:
        self.app, self.access = app, access
        self._key = access.api_key.encode() if access.api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        allowed = self.access.allowed_hosts
        if allowed is not None:
            name = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if name not in allowed and not _is_loopback(name):
                await _send_error(
                    send,
                    400,
                    f"Host {name!r} is not served here (this server answers to "
                    f"{', '.join(allowed)}; see --allowed-hosts)",
                )
                return
        if self._key is not None and scope.get("path") != "/health":
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self._key):
                await _send_error(
                    send,
                    401,
                    "missing or wrong API key: send Authorization: Bearer <key> (--api-key)",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        await self.app(scope, receive, send)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's HTTP protocol class, closing a connection that has not sent a complete request
    head within ``seconds`` of its first byte (or of connecting): uvicorn itself waits for ever
    on a partial header (slowloris). Pass as ``uvicorn.Config(http=...)``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _r1_timer: asyncio.TimerHandle | None = None

        def _r1_waiting(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _r1_disarm(self) -> None:
            if self._r1_timer is not None:
                self._r1_timer.cancel()
                self._r1_timer = None

        def _r1_expire(self) -> None:
            self._r1_timer = None
            if self._r1_waiting() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._r1_timer = self.loop.call_later(seconds, self._r1_expire)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._r1_waiting():
                self._r1_disarm()
            elif self._r1_timer is None and not self.transport.is_closing():
                self._r1_timer = self.loop.call_later(seconds, self._r1_expire)

        def connection_lost(self, exc: Exception | None) -> None:
            self._r1_disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


# ---------------------------------------------------------------------------------- the guard
class Ticket:
    """One request's claim on the service, from admission to answer: its deadline, the
    generation futures it submitted, and the decoded pixels it holds.

    ``alive()`` is what the batcher asks before generating the request's jobs; ``cancel()`` (the
    client left, the deadline passed, the server stops, or the request finished) cancels queued
    futures and releases threads waiting on running ones.
    """

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.cancelled = False
        self.pixels = 0
        self._futures: list[Future] = []
        self._lock = threading.Lock()

    def alive(self) -> bool:
        return not self.cancelled and time.monotonic() < self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def track(self, future: Future) -> None:
        with self._lock:
            self._futures.append(future)
            cancelled = self.cancelled
        if cancelled:
            future.cancel()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            futures, self._futures = self._futures, []
        for future in futures:
            if not future.cancel():  # running: release the thread waiting on it
                _settle(future, exc=CancelledError())


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
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_processor = getattr(processor, "image_processor", None)
        self.merge = int(getattr(self.image_processor, "merge_size", 1) or 1) ** 2
        vocab = self.tokenizer.get_vocab()
        self.max_token_bytes = max(len(token.encode("utf-8")) for token in vocab)

    def image_tokens(self, image: Any) -> int:
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
    """The checks every endpoint shares, one per app (see the module docstring).

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
                    if isinstance(part, _ImagePart):
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
                    if isinstance(part, _TextPart)
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


# ------------------------------------------------------------------------------------------ app
def _validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    parts, param = [], None
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            parts.append(f"request body is not valid JSON ({detail})".replace(" ()", ""))
            continue
        if err.get("type") == "missing":
            parts.append(f"missing required field '{where}'")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
        else:
            parts.append(f"field '{where}': {err.get('msg')} (got {err.get('input')!r:.60})")
        if where == "body" and err.get("type") in ("model_attributes_type", "dict_type"):
            parts[-1] = "request body must be a JSON object"
        param = param or where
    return "; ".join(parts) or "invalid request", param


def create_app(engine: Engine, limits: Limits | None = None, access: Access | None = None) -> Any:
    """The FastAPI application around a loaded :class:`Engine`, wrapped in the access and body
    middlewares. ``app.state.guard`` is its :class:`Guard` (for endpoints added later)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or Limits()
    access = access or Access()
    guard = Guard(engine, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        guard.close()

    app = FastAPI(
        title="r1reward serve",
        version="1",
        docs_url="/docs" if access.docs else None,
        openapi_url="/openapi.json" if access.docs else None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.guard = guard
    created = int(time.time())
    counter = itertools.count()

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(_error_body(exc.status, exc.message, exc.param), status_code=exc.status)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> JSONResponse:  # nobody reads it
        return JSONResponse(_error_body(499, "client closed the request"), status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc.errors())
        return JSONResponse(_error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            path = request.url.path.encode("utf-8", "backslashreplace").decode()
            message = f"{message}: {request.method} {path} (routes: GET /health, "
            message += "GET /v1/models, POST /v1/chat/completions, POST /v1/reward, "
            message += "POST /v1/reward/reference, POST /v1/reward/group, POST /get_reward)"
        return JSONResponse(_error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        message = f"internal error: {type(exc).__name__}: {exc!r:.300}"
        return JSONResponse(_error_body(500, message), status_code=500)

    def check_model(name: str | None) -> None:
        if name not in (None, "", engine.name):
            raise APIError(
                404,
                f"model {name!r} is not served here; this server serves {engine.name!r}",
                "model",
            )

    @app.get("/health", response_model=None)
    async def health() -> Any:
        body = guard.health()
        return JSONResponse(body, status_code=503 if body["status"] != "ok" else 200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": engine.name, "object": "model", "created": created, "owned_by": "r1reward"}
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest, http: Request) -> dict[str, Any]:
        check_model(request.model)
        if request.stream:
            raise APIError(400, "stream=true is not supported by this server", "stream")
        if not 1 <= request.n <= limits.max_n:
            raise APIError(
                400, f"n={request.n} is out of range; allowed 1 <= n <= {limits.max_n}", "n"
            )
        given = (
            request.max_completion_tokens
            if request.max_completion_tokens is not None
            else request.max_tokens
        )
        max_tokens = min(512, limits.max_tokens) if given is None else given
        if not 1 <= max_tokens <= limits.max_tokens:
            raise APIError(
                400,
                f"max_tokens={max_tokens} is out of range; allowed 1 <= max_tokens <= "
                f"{limits.max_tokens}",
                "max_tokens",
            )
        async with guard.admit() as ticket:
            conversation = await guard.messages(ticket, request.messages)

            def work() -> Any:
                guard.check_prompts([conversation], "messages")
                future = engine.chat_future(
                    conversation,
                    n=request.n,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    max_tokens=max_tokens,
                    seed=request.seed,
                    alive=ticket.alive,
                )
                ticket.track(future)
                return future.result()

            [(prompt_tokens, choices)] = await guard.run(http, ticket, work)
        completion_tokens = sum(c.completion_tokens for c in choices)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": engine.name,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish,
                    "logprobs": None,
                }
                for i, c in enumerate(choices)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    @app.post("/v1/reward")
    async def reward(request: RewardRequest, http: Request) -> dict[str, Any]:
        guard.check_k(request.k)
        guard.check_images(request.images)
        async with guard.admit() as ticket:
            params = [f"images.{i}" for i in range(len(request.images))]
            images = await guard.images(ticket, request.images, params)
            scorer = guard.verdicts(ticket, "question")
            # score: P(response_1 better) from the verdict distribution, never null (verdicts.py)
            result = await scored(
                http,
                ticket,
                lambda: score_pair(
                    scorer,
                    request.question,
                    request.response_1,
                    request.response_2,
                    images=images,
                    k=request.k,
                    both_orders=request.both_orders,
                    greedy=request.greedy,
                    seed=request.seed,
                ),
            )
        return {"id": f"reward-{next(counter)}", "model": engine.name, **result.to_dict()}

    async def scored(http: Request, ticket: Ticket, fn: Callable[[], Any]) -> Any:
        """:meth:`Guard.run` for a scoring call; a request the scorer refuses is a 400."""
        try:
            return await guard.run(http, ticket, fn)
        except RequestError as exc:
            raise APIError(400, str(exc), exc.param) from exc

    @app.post("/v1/reward/reference")
    async def reward_reference(request: ReferenceRequest, http: Request) -> dict[str, Any]:
        guard.check_k(request.k)
        guard.check_images(request.images)
        async with guard.admit() as ticket:
            params = [f"images.{i}" for i in range(len(request.images))]
            images = await guard.images(ticket, request.images, params)
            scorer = guard.verdicts(ticket, "question")
            body = await scored(http, ticket, lambda: reference_reward(scorer, request, images))
        return {"id": f"reward-{next(counter)}", "model": engine.name, **body}

    @app.post("/v1/reward/group")
    async def reward_group(request: GroupRequest, http: Request) -> dict[str, Any]:
        guard.check_k(request.k)
        guard.check_images(request.images)
        async with guard.admit() as ticket:
            params = [f"images.{i}" for i in range(len(request.images))]
            images = await guard.images(ticket, request.images, params)
            scorer = guard.verdicts(ticket, "question")
            body = await scored(http, ticket, lambda: group_reward(scorer, request, images))
        return {"id": f"reward-{next(counter)}", "model": engine.name, **body}

    @app.post("/get_reward")
    async def openrlhf_reward(request: GetRewardRequest, http: Request) -> dict[str, Any]:
        guard.check_k(request.k)
        rows = request.images or [[] for _ in request.query]
        for i, refs in enumerate(rows):
            guard.check_images(refs, f"images.{i}")
        async with guard.admit() as ticket:
            images = [
                await guard.images(ticket, refs, [f"images.{i}.{j}" for j in range(len(refs))])
                for i, refs in enumerate(rows)
            ]
            scorer = guard.verdicts(ticket, "query")
            return await scored(http, ticket, lambda: get_reward(scorer, request, images))

    wrapped: Any = app
    if limits.max_body_bytes:
        wrapped = BodyLimitMiddleware(wrapped, limits.max_body_bytes, limits.body_timeout_s)
    wrapped = AccessMiddleware(wrapped, access)
    wrapped.state = app.state  # type: ignore[attr-defined]
    return wrapped


# ------------------------------------------------------------------------------ running it
@dataclass(frozen=True)
class ServerSettings:
    """uvicorn's connection settings, exposed as CLI flags of the same name.

    Attributes:
        timeout_keep_alive: seconds an idle keep-alive connection stays open.
        timeout_header: seconds a connection may take to send a complete request head
            (:func:`header_timeout_protocol`; uvicorn has no such timeout of its own).
        limit_concurrency: connections + requests at once; beyond it uvicorn answers 503.
        timeout_graceful_shutdown: seconds a stopping server waits for requests in flight
            before it cancels them.
    """

    timeout_keep_alive: int = 5
    timeout_header: float = 10.0
    limit_concurrency: int | None = 2048
    timeout_graceful_shutdown: int = 10

    def config(self, app: Any, **kwargs: Any) -> Any:
        """A ``uvicorn.Config`` for ``app`` with these settings (``kwargs`` passed on)."""
        import uvicorn

        return uvicorn.Config(
            app,
            http=header_timeout_protocol(self.timeout_header),
            timeout_keep_alive=self.timeout_keep_alive,
            limit_concurrency=self.limit_concurrency,
            timeout_graceful_shutdown=self.timeout_graceful_shutdown,
            **kwargs,
        )


class BackgroundServer:
    """Run an ASGI app with uvicorn on a thread, on ``host`` and a free port (for tests,
    benchmarks and notebooks). ``url`` is ``http://host:port``; use as a context manager."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        settings: ServerSettings | None = None,
    ) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.settings = settings or ServerSettings()
        config = self.settings.config(app, log_level=log_level, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.sock]},
            name="r1reward-uvicorn",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.settings.timeout_graceful_shutdown + 10)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
        from r1reward.judges import image_to_data_url

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
        return [
            neutral if r["p_1"] is None else float(r["p_1"]) for r in self.rewards(*args, **kwargs)
        ]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_engine(
    model: str,
    *,
    name: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    **engine_kwargs: Any,
) -> Engine:
    """Load ``model`` (a folder or hub id) once with :func:`r1reward.models.load_model`."""
    from r1reward.models import load_model

    loaded, processor = load_model(model, dtype=dtype, device_map=device_map)
    loaded.eval()
    return Engine(loaded, processor, name or _default_name(model), **engine_kwargs)


def _default_name(model: str) -> str:
    path = Path(model)
    return path.name if path.exists() else model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="r1reward serve",
        description=(
            "Serve a generative reward model over HTTP: OpenAI-compatible /v1/chat/completions and "
            "/v1/models, the pairwise reward POST /v1/reward, and GET /health. Loads the model once."
        ),
        epilog=(
            "example: r1reward build-tiny --out runs/tiny && r1reward serve --model runs/tiny --port 8000\n"
            "then: curl -s localhost:8000/v1/reward -H 'content-type: application/json' -d "
            '\'{"question": "...", "response_1": "...", "response_2": "...", "k": 4}\''
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d, u = Limits(), ServerSettings()
    parser.add_argument("--model", required=True, help="model folder or Hugging Face hub id")
    parser.add_argument(
        "--served-model-name", default=None, help="name in /v1/models (default: folder name)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--dtype", default=None, help="torch dtype, e.g. bfloat16 (default: the model's)"
    )
    parser.add_argument(
        "--device-map", default=None, help="e.g. auto or cuda:0 (default: CPU/accelerate default)"
    )
    add_engine_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="prompts per generate call (default 16)"
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a batch waits for company (default 5)",
    )
    parser.add_argument(
        "--max-batch-items",
        type=int,
        default=64,
        help="prompts merged into one batch at most (default 64)",
    )
    parser.add_argument(
        "--reward-max-tokens", type=int, default=1024, help="judgment length budget for /v1/reward"
    )
    parser.add_argument(
        "--reward-temperature",
        type=float,
        default=1.0,
        help="sampling temperature for /v1/reward (k > 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for generation (default: torch's choice); on a small shared "
        "CPU, 1 avoids oversubscription",
    )
    limits = parser.add_argument_group("limits (each request's cost and memory)")
    limits.add_argument("--max-k", type=int, default=d.max_k)
    limits.add_argument("--max-n", type=int, default=d.max_n)
    limits.add_argument(
        "--max-tokens",
        type=int,
        default=d.max_tokens,
        help="largest max_tokens a chat request may ask",
    )
    limits.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=d.max_prompt_tokens,
        help=f"prompt tokens after the chat template, images included (default {d.max_prompt_tokens})",
    )
    limits.add_argument("--max-images", type=int, default=d.max_images)
    limits.add_argument(
        "--max-aspect-ratio",
        type=float,
        default=d.max_aspect_ratio,
        help=f"longest side over shortest, per image (default {d.max_aspect_ratio:g})",
    )
    limits.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    limits.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes)
    limits.add_argument(
        "--max-image-pixels",
        type=int,
        default=d.max_image_pixels,
        help="per image, from its header",
    )
    limits.add_argument(
        "--max-request-pixels",
        type=int,
        default=d.max_request_pixels,
        help="all images of a request",
    )
    limits.add_argument(
        "--max-inflight-pixels",
        type=int,
        default=d.max_inflight_pixels,
        help="all images of the requests in flight; beyond it 503",
    )
    limits.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"requests in flight before answering 503 (default {d.max_queue})",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        default=d.request_timeout_s,
        help=f"seconds per request before 504; its jobs are dropped (default {d.request_timeout_s:g})",
    )
    limits.add_argument(
        "--stuck-after",
        type=float,
        default=d.stuck_after_s,
        help=f"/health answers 503 when one batch runs longer (default {d.stuck_after_s:g} s)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=d.body_timeout_s,
        help=f"seconds without a part of a started body before 408 (default {d.body_timeout_s:g})",
    )
    conn = parser.add_argument_group("connections (uvicorn)")
    conn.add_argument("--timeout-keep-alive", type=int, default=u.timeout_keep_alive)
    conn.add_argument(
        "--timeout-header",
        type=float,
        default=u.timeout_header,
        help=f"seconds to send a complete request head (default {u.timeout_header:g})",
    )
    conn.add_argument(
        "--max-connections",
        type=int,
        default=u.limit_concurrency,
        help=f"connections + requests at once, beyond it 503 (default {u.limit_concurrency})",
    )
    conn.add_argument(
        "--shutdown-timeout",
        type=int,
        default=u.timeout_graceful_shutdown,
        help="seconds a stopping server waits for requests in flight "
        f"(default {u.timeout_graceful_shutdown})",
    )
    access = parser.add_argument_group("access")
    access.add_argument(
        "--api-key",
        default=None,
        help=f"require Authorization: Bearer KEY on every route but /health (default: ${API_KEY_ENV})",
    )
    access.add_argument(
        "--allow-local-images",
        action="store_true",
        help="accept image paths on the server, inside --image-root only (default: data URLs only)",
    )
    access.add_argument("--image-root", default=None, help="folder local image paths must be in")
    access.add_argument(
        "--no-local-images", action="store_true", help=argparse.SUPPRESS
    )  # the default since local paths became opt-in; kept so old command lines still run
    access.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json")
    access.add_argument(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host header names to accept (default: loopback names when bound "
        "to loopback, any otherwise)",
    )
    parser.add_argument("--log-level", default="info")
    return parser


def bind_message(host: str, port: int) -> str:
    """What ``main`` prints about the bind address (loopback is any 127.x / ::1 / localhost)."""
    if _is_loopback(host.strip("[]").lower()):
        return f"r1reward serve: listening on {host}:{port}: this machine only"
    return f"r1reward serve: listening on {host}:{port}: reachable from other machines"


def limits_from_args(args: argparse.Namespace) -> Limits:
    """:class:`Limits` from :func:`build_parser`'s arguments: each field is read from the flag
    of its name (``max_prompt_tokens`` <- ``--max-prompt-tokens``, ``request_timeout_s`` <-
    ``--request-timeout``), so a new bound needs its field and its flag, nothing else."""
    return Limits(**{f.name: getattr(args, f.name.removesuffix("_s")) for f in fields(Limits)})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import uvicorn

    if args.allow_local_images and not args.image_root:
        parser.error("--allow-local-images needs --image-root DIR (paths are confined to it)")
    if args.image_root and not Path(args.image_root).is_dir():
        parser.error(f"--image-root {args.image_root}: no such folder")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        engine_name = resolve_engine(args.engine)  # vLLM keeps its RL share (0.3) of the GPU
    except ImportError as exc:
        parser.error(str(exc))

    limits = limits_from_args(args)
    loopback = _is_loopback(args.host.strip("[]").lower())
    hosts: tuple[str, ...] | None = None
    if args.allowed_hosts:
        hosts = tuple(h.strip().lower() for h in args.allowed_hosts.split(",") if h.strip())
        hosts += LOOPBACK_NAMES if loopback else ()
    elif loopback:
        hosts = LOOPBACK_NAMES
    access = Access(
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        docs=bool(args.docs),
        allowed_hosts=hosts,
    )
    settings = ServerSettings(
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_header=args.timeout_header,
        limit_concurrency=args.max_connections,
        timeout_graceful_shutdown=args.shutdown_timeout,
    )
    engine = build_engine(
        args.model,
        name=args.served_model_name,
        dtype=args.dtype,
        device_map=args.device_map,
        engine=engine_name,
        batch_size=args.batch_size,
        reward_max_tokens=args.reward_max_tokens,
        reward_temperature=args.reward_temperature,
        batch_wait_ms=args.batch_wait_ms,
        max_batch_items=args.max_batch_items,
        seed=args.seed,
    )
    print(bind_message(args.host, args.port), flush=True)
    if not loopback and access.api_key is None:
        print(
            f"r1reward serve: no API key (--api-key or ${API_KEY_ENV}): anyone who reaches the "
            "port can use the model",
            flush=True,
        )
    config = settings.config(
        create_app(engine, limits, access),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    uvicorn.Server(config).run()
    engine.close()
    return 0
