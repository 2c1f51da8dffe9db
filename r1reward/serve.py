"""``r1reward serve``: the reward model as an HTTP service (OpenAI-compatible chat + ``/v1/reward``).

The one question users asked the reference project is how to use a trained R1-Reward model as the
reward inside their own GRPO/PPO training. This module answers it with a service that loads the
model once and offers

* ``POST /v1/chat/completions`` - OpenAI-compatible chat (text; images as ``data:`` URLs or local
  paths; ``temperature``, ``top_p``, ``max_tokens``, ``n``), so the served model can also act as
  the consistency judge (:class:`r1reward.judges.OpenAIJudge`) or a teacher;
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
* ``GET /health`` - liveness plus batching counters.

Batching: every generation goes through one :class:`MicroBatcher` thread. Requests that arrive
while a batch is generating (or within ``batch_wait_ms`` of the first one) are merged into a single
sampler / ``generate`` call when their generation settings agree; the event loop never runs the
model, so ``/health`` answers while a batch is running. Only one batch runs at a time.

Validation: bad JSON, a missing field or a wrong type -> 400; ``k``/``n``/``max_tokens`` out of
range -> 400; a body over ``--max-body-bytes`` or an image over ``--max-image-bytes`` /
``--max-image-pixels`` -> 413; an unknown model name -> 404; ``--max-queue`` jobs already
waiting -> 503. Errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients show the message.

Binds to 127.0.0.1 unless ``--host`` says otherwise. Local image paths are read from the server's
file system (disable with ``--no-local-images`` when exposing the port).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import io
import itertools
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

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
    "Limits",
    "MicroBatcher",
    "BatchingSampler",
    "Engine",
    "create_app",
    "BackgroundServer",
    "RewardClient",
    "build_engine",
    "main",
]


# --------------------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Limits:
    """What the service accepts. Every bound has a CLI flag of the same name."""

    max_body_bytes: int = 32 * 2**20
    max_image_bytes: int = 8 * 2**20
    max_image_pixels: int = 4096 * 4096
    max_images: int = 16
    max_k: int = 32
    max_n: int = 16
    max_tokens: int = 2048
    allow_local_images: bool = True
    max_queue: int = 4096  # generation jobs waiting; beyond it requests get 503 (back-pressure)


class APIError(Exception):
    """An error answered to the client as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "request_too_large",
    503: "server_busy",
}


def _error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


# ------------------------------------------------------------------------------- request models
class _ImageURL(BaseModel):
    url: StrictStr
    detail: str | None = None


class _TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class _ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: _ImageURL | StrictStr


_Part = Annotated[_TextPart | _ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: StrictStr | list[_Part]


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat-completion request this server honours (others ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
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
    or paths on the server.

    The answer is :class:`r1reward.verdicts.PairScore`: ``score`` (P(``response_1`` better) from
    the verdict distribution, averaged over the judgments and orders; always a number),
    ``p_1_orders``, ``order_gap``, ``swap_disagreement``; the votes: ``preferred`` (1, 2, or
    null on a tie / nothing parseable), ``tie``, ``p_1`` (share of the parseable votes preferring
    ``response_1``; null when none parsed), ``votes`` (``{"1", "2", "unparseable"}``); and per
    judgment ``answers`` and ``p_first`` (in the caller's positions), ``orders``
    (``as-given``/``swapped``), ``analyses``, ``texts``; ``well_formed_rate``, ``verdict_mass``.
    """

    model_config = ConfigDict(extra="forbid")

    question: StrictStr
    response_1: StrictStr
    response_2: StrictStr
    images: list[StrictStr] = Field(default_factory=list)
    k: StrictInt = 1
    both_orders: StrictBool = True
    greedy: StrictBool | None = None
    seed: StrictInt | None = None


# --------------------------------------------------------------------------------------- images
def load_image(ref: str, limits: Limits, param: str) -> Any:
    """A ``data:image/...;base64,`` URL or a local path -> RGB PIL image, within ``limits``.

    Raises :class:`APIError` 400 (undecodable, remote URL, missing file) or 413 (too large).
    """
    from PIL import Image, UnidentifiedImageError

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
    elif ref.startswith(("http://", "https://")):
        raise APIError(
            400,
            f"{param}: remote image URLs are not fetched by this server; send a data URL "
            "(data:image/png;base64,...) or a path on the server",
            param,
        )
    else:
        if not limits.allow_local_images:
            raise APIError(400, f"{param}: local image paths are disabled on this server", param)
        path = Path(ref).expanduser()
        if not path.is_file():
            raise APIError(400, f"{param}: no image file at {str(path)!r} on the server", param)
        size = path.stat().st_size
        if size > limits.max_image_bytes:
            raise APIError(
                413,
                f"{param}: {path} is {size} bytes; the limit is {limits.max_image_bytes} bytes "
                "(--max-image-bytes)",
                param,
            )
        raw = path.read_bytes()
    if len(raw) > limits.max_image_bytes:
        raise APIError(
            413,
            f"{param}: image is {len(raw)} bytes; the limit is {limits.max_image_bytes} bytes "
            "(--max-image-bytes)",
            param,
        )
    try:
        image = Image.open(io.BytesIO(raw))
        width, height = image.size  # header only: checked before decoding the pixels
        if width * height > limits.max_image_pixels:
            raise APIError(
                413,
                f"{param}: image is {width}x{height} = {width * height} pixels; the limit is "
                f"{limits.max_image_pixels} (--max-image-pixels)",
                param,
            )
        image.load()
        return image.convert("RGB")
    except APIError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        detail = str(exc)
        if "cannot identify image file" in detail:
            detail = "not PNG, JPEG, WebP, GIF or another format Pillow reads"
        raise APIError(400, f"{param}: not a decodable image ({detail})", param) from exc


# ---------------------------------------------------------------------------------- batching
@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    future: Future


@dataclass
class BatchStats:
    """Counters of a :class:`MicroBatcher` (cumulative)."""

    jobs: int = 0  # submit() calls answered
    items: int = 0  # conversations generated for
    batches: int = 0  # calls of the run function
    max_jobs_per_batch: int = 0
    errors: int = 0


class MicroBatcher:
    """Merges concurrent jobs into few calls of ``run(key, items) -> results``, on one thread.

    ``submit(key, items)`` returns a :class:`concurrent.futures.Future` of ``len(items)`` results.
    The worker takes the first waiting job, waits at most ``max_wait_s`` for more, drains whatever
    else is queued (up to ``max_items`` items in all), groups the jobs by ``key`` (generation
    settings) and makes one ``run`` call per group, in arrival order. Jobs that arrive while a
    batch runs wait in the queue and form the next batch, so under load batches grow by
    themselves. ``run`` is only ever called from the worker thread (one model call at a time).
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
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="r1reward-batcher", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, items: Sequence[Any]) -> Future:
        future: Future = Future()
        self._queue.put(_Job(key, list(items), future))
        return future

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

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
                live = [job for job in group if job.future.set_running_or_notify_cancel()]
                if not live:
                    continue
                items = [item for job in live for item in job.items]
                try:
                    results = self.run(key, items)
                    if len(results) != len(items):
                        raise RuntimeError(
                            f"batch run returned {len(results)} results for {len(items)}"
                        )
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                    self.stats.errors += 1
                    for job in live:
                        job.future.set_exception(exc)
                    continue
                self.stats.batches += 1
                self.stats.jobs += len(live)
                self.stats.items += len(items)
                self.stats.max_jobs_per_batch = max(self.stats.max_jobs_per_batch, len(live))
                start = 0
                for job in live:
                    job.future.set_result(results[start : start + len(job.items)])
                    start += len(job.items)


class BatchingSampler:
    """A :class:`r1reward.evaluate.Sampler` whose concurrent ``sample`` calls share one batch.

    Each ``sample(conversations, k=, greedy=, seed=)`` call (one per ``/v1/reward`` request, from
    its own thread) is submitted to ``batcher`` under the key ``("reward", k, greedy, seed)`` and
    blocks until the merged call of the inner sampler (the evaluator's :class:`ModelSampler`:
    ``num_return_sequences=k``, left padding) has produced its texts. Requests without a seed share
    the key ``seed=None``; the batch then draws a fresh seed from ``rng``.
    """

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher

    def sample(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        k: int,
        greedy: bool,
        seed: int | None = None,
    ) -> list[list[str]]:
        return self.batcher.submit(("reward", int(k), bool(greedy), seed), conversations).result()


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
    ) -> Future:
        key = ("chat", n, float(temperature), float(top_p), int(max_tokens), seed)
        return self.batcher.submit(key, [conversation])

    def close(self) -> None:
        self.batcher.close()


# ---------------------------------------------------------------------------------- middleware
class BodyLimitMiddleware:
    """Answers 413 to a request whose body exceeds ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

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
            message = await receive()
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
        import json

        body = json.dumps(
            _error_body(
                413,
                f"request body is {'at least ' if size else ''}{size} bytes; the limit is "
                f"{self.max_bytes} bytes (--max-body-bytes)",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


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


def _convert_messages(messages: Sequence[ChatMessage], limits: Limits) -> list[dict[str, Any]]:
    """OpenAI chat messages -> processor messages, images decoded to PIL."""
    out: list[dict[str, Any]] = []
    n_images = 0
    for i, message in enumerate(messages):
        if isinstance(message.content, str):
            content: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
        else:
            content = []
            for j, part in enumerate(message.content):
                if isinstance(part, _TextPart):
                    content.append({"type": "text", "text": part.text})
                    continue
                n_images += 1
                if n_images > limits.max_images:
                    raise APIError(400, f"more than {limits.max_images} images (--max-images)")
                url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
                param = f"messages.{i}.content.{j}.image_url"
                content.append({"type": "image", "image": load_image(url, limits, param)})
        out.append({"role": message.role, "content": content})
    return out


def create_app(engine: Engine, limits: Limits | None = None) -> Any:
    """The FastAPI application around a loaded :class:`Engine`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    limits = limits or Limits()
    scorer = BatchedVerdicts(engine.batcher)
    # a scoring call blocks its thread until its batch is generated: one thread per request in flight.
    request_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="r1reward-request")

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        request_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="r1reward serve", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan
    )
    created = int(time.time())
    counter = itertools.count()

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(_error_body(exc.status, exc.message, exc.param), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc.errors())
        return JSONResponse(_error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            message = f"{message}: {request.method} {request.url.path} (routes: GET /health, "
            message += "GET /v1/models, POST /v1/chat/completions, POST /v1/reward, "
            message += "POST /v1/reward/reference, POST /v1/reward/group, POST /get_reward)"
        return JSONResponse(_error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        message = f"internal error: {type(exc).__name__}: {exc}"
        return JSONResponse(_error_body(500, message), status_code=500)

    def check_queue() -> None:
        if engine.batcher.pending() >= limits.max_queue:
            raise APIError(
                503,
                f"server busy: {engine.batcher.pending()} generation jobs queued (--max-queue "
                f"{limits.max_queue}); retry later",
            )

    def check_model(name: str | None) -> None:
        if name not in (None, "", engine.name):
            raise APIError(
                404,
                f"model {name!r} is not served here; this server serves {engine.name!r}",
                "model",
            )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = engine.batcher.stats
        return {
            "status": "ok",
            "model": engine.name,
            "queued": engine.batcher.pending(),
            "batches": stats.batches,
            "requests": stats.jobs,
            "max_requests_per_batch": stats.max_jobs_per_batch,
            "errors": stats.errors,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": engine.name, "object": "model", "created": created, "owned_by": "r1reward"}
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest) -> dict[str, Any]:
        check_model(request.model)
        check_queue()
        if request.stream:
            raise APIError(400, "stream=true is not supported by this server", "stream")
        if not 1 <= request.n <= limits.max_n:
            raise APIError(
                400, f"n={request.n} is out of range; allowed 1 <= n <= {limits.max_n}", "n"
            )
        max_tokens = (
            request.max_completion_tokens or request.max_tokens or min(512, limits.max_tokens)
        )
        if not 1 <= max_tokens <= limits.max_tokens:
            raise APIError(
                400,
                f"max_tokens={max_tokens} is out of range; allowed 1 <= max_tokens <= {limits.max_tokens}",
                "max_tokens",
            )
        conversation = _convert_messages(request.messages, limits)
        future = engine.chat_future(
            conversation,
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=max_tokens,
            seed=request.seed,
        )
        [(prompt_tokens, choices)] = await asyncio.wrap_future(future)
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
    async def reward(request: RewardRequest) -> dict[str, Any]:
        check_queue()
        if not 1 <= request.k <= limits.max_k:
            raise APIError(
                400,
                f"k={request.k} is out of range; allowed 1 <= k <= {limits.max_k} (--max-k)",
                "k",
            )
        if len(request.images) > limits.max_images:
            raise APIError(
                400,
                f"{len(request.images)} images; at most {limits.max_images} (--max-images)",
                "images",
            )
        images = [load_image(ref, limits, f"images.{i}") for i, ref in enumerate(request.images)]
        # score: P(response_1 better) from the verdict distribution, never null (verdicts.py)
        result = await scored(
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
            )
        )
        return {"id": f"reward-{next(counter)}", "model": engine.name, **result.to_dict()}

    def check_k(k: int) -> None:
        if not 1 <= k <= limits.max_k:
            raise APIError(
                400, f"k={k} is out of range; allowed 1 <= k <= {limits.max_k} (--max-k)", "k"
            )

    def load_images(refs: Sequence[str], param: str = "images") -> list[Any]:
        if len(refs) > limits.max_images:
            raise APIError(
                400, f"{len(refs)} images; at most {limits.max_images} (--max-images)", param
            )
        return [load_image(ref, limits, f"{param}.{i}") for i, ref in enumerate(refs)]

    async def scored(fn: Callable[[], Any]) -> Any:
        """Run a scoring call on a request thread (it blocks until its batch is done)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(request_pool, fn)
        except RequestError as exc:
            raise APIError(400, str(exc), exc.param) from exc

    @app.post("/v1/reward/reference")
    async def reward_reference(request: ReferenceRequest) -> dict[str, Any]:
        check_queue()
        check_k(request.k)
        images = load_images(request.images)
        body = await scored(lambda: reference_reward(scorer, request, images))
        return {"id": f"reward-{next(counter)}", "model": engine.name, **body}

    @app.post("/v1/reward/group")
    async def reward_group(request: GroupRequest) -> dict[str, Any]:
        check_queue()
        check_k(request.k)
        images = load_images(request.images)
        body = await scored(lambda: group_reward(scorer, request, images))
        return {"id": f"reward-{next(counter)}", "model": engine.name, **body}

    @app.post("/get_reward")
    async def openrlhf_reward(request: GetRewardRequest) -> dict[str, Any]:
        check_queue()
        check_k(request.k)
        rows = request.images or [[] for _ in request.query]
        images = [load_images(refs, f"images.{i}") for i, refs in enumerate(rows)]
        return await scored(lambda: get_reward(scorer, request, images))

    return BodyLimitMiddleware(app, limits.max_body_bytes) if limits.max_body_bytes else app


# ------------------------------------------------------------------------------ running it
class BackgroundServer:
    """Run an ASGI app with uvicorn on a thread, on ``host`` and a free port (for tests,
    benchmarks and notebooks). ``url`` is ``http://host:port``; use as a context manager."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_keep_alive=30)
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
        self.thread.join(timeout=10)
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
    Images may be PIL images, local paths (read by the server) or ``data:`` URLs.
    """

    def __init__(self, base_url: str, *, concurrency: int = 16, timeout: float = 300.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
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
                    image_to_data_url(img) if not isinstance(img, str) else img for img in images[i]
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
            "example: r1reward build-tiny runs/tiny && r1reward serve --model runs/tiny --port 8000\n"
            "then: curl -s localhost:8000/v1/reward -H 'content-type: application/json' -d "
            '\'{"question": "...", "response_1": "...", "response_2": "...", "k": 4}\''
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Limits()
    parser.add_argument("--model", required=True, help="model folder or Hugging Face hub id")
    parser.add_argument(
        "--served-model-name", default=None, help="name in /v1/models (default: folder name)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--dtype", default=None, help="torch dtype, e.g. bfloat16 (default: the model's)"
    )
    parser.add_argument(
        "--device-map", default=None, help="e.g. auto or cuda:0 (default: CPU/accelerate default)"
    )
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
    parser.add_argument("--max-k", type=int, default=d.max_k)
    parser.add_argument("--max-n", type=int, default=d.max_n)
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=d.max_tokens,
        help="largest max_tokens a chat request may ask",
    )
    parser.add_argument("--max-images", type=int, default=d.max_images)
    parser.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes)
    parser.add_argument("--max-image-bytes", type=int, default=d.max_image_bytes)
    parser.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    parser.add_argument(
        "--max-queue", type=int, default=d.max_queue, help="queued jobs before answering 503"
    )
    parser.add_argument(
        "--no-local-images", action="store_true", help="refuse image paths (only data URLs)"
    )
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_k=args.max_k,
        max_n=args.max_n,
        max_tokens=args.max_tokens,
        allow_local_images=not args.no_local_images,
        max_queue=args.max_queue,
    )
    engine = build_engine(
        args.model,
        name=args.served_model_name,
        dtype=args.dtype,
        device_map=args.device_map,
        batch_size=args.batch_size,
        reward_max_tokens=args.reward_max_tokens,
        reward_temperature=args.reward_temperature,
        batch_wait_ms=args.batch_wait_ms,
        max_batch_items=args.max_batch_items,
        seed=args.seed,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"r1reward serve: listening on {args.host}: reachable from other machines", flush=True
        )
    uvicorn.run(
        create_app(engine, limits), host=args.host, port=args.port, log_level=args.log_level
    )
    engine.close()
    return 0
