"""The FastAPI application of ``r1reward serve``: :func:`create_app` and its endpoints.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/reward``,
``POST /v1/reward/reference``, ``POST /v1/reward/group`` and ``POST /get_reward`` (the rules they
share are in :mod:`r1reward.serve`). Each endpoint validates its request model
(:mod:`~r1reward.serve.schema`), goes through the app's :class:`~r1reward.serve.guard.Guard` and
answers errors in OpenAI's envelope.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request  # FastAPI's; imported here for the endpoints' annotations

from r1reward.reward_api import (
    GetRewardRequest,
    GroupRequest,
    ReferenceRequest,
    RequestError,
    get_reward,
    group_reward,
    reference_reward,
)
from r1reward.serve.batching import Ticket
from r1reward.serve.engine import ChatChoice, Engine
from r1reward.serve.guard import Guard
from r1reward.serve.limits import Access, Limits
from r1reward.serve.middleware import AccessMiddleware, BodyLimitMiddleware
from r1reward.serve.schema import APIError, ChatRequest, ClientGone, RewardRequest, error_body
from r1reward.verdicts import BatchedVerdicts, PairScore, score_pair

__all__ = ["create_app"]


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


def _add_error_handlers(app: Any) -> None:
    """Every error ``app`` answers in OpenAI's envelope: :class:`APIError` with its status, a
    request that fails its model as 400 naming the field, unknown routes as 404 listing the
    routes, and anything else as 500."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.param), status_code=exc.status)

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, exc: ClientGone) -> JSONResponse:  # nobody reads it
        return JSONResponse(error_body(499, "client closed the request"), status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc.errors())
        return JSONResponse(error_body(400, message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            path = request.url.path.encode("utf-8", "backslashreplace").decode()
            message = f"{message}: {request.method} {path} (routes: GET /health, "
            message += "GET /v1/models, POST /v1/chat/completions, POST /v1/reward, "
            message += "POST /v1/reward/reference, POST /v1/reward/group, POST /get_reward)"
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        message = f"internal error: {type(exc).__name__}: {exc!r:.300}"
        return JSONResponse(error_body(500, message), status_code=500)


def _chat_max_tokens(request: ChatRequest, limits: Limits) -> int:
    """The request's completion budget (``max_completion_tokens``, else ``max_tokens``, else
    512 capped by ``--max-tokens``); 400 on ``stream`` or an ``n`` or budget out of bounds."""
    if request.stream:
        raise APIError(400, "stream=true is not supported by this server", "stream")
    if not 1 <= request.n <= limits.max_n:
        raise APIError(400, f"n={request.n} is out of range; allowed 1 <= n <= {limits.max_n}", "n")
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
    return max_tokens


def _chat_completion(
    model: str, prompt_tokens: int, choices: Sequence[ChatChoice]
) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` answer for ``choices`` (usage counted in tokens)."""
    completion_tokens = sum(c.completion_tokens for c in choices)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
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


def _pair_reward(scorer: BatchedVerdicts, request: RewardRequest, images: list[Any]) -> PairScore:
    """``/v1/reward``: :func:`r1reward.verdicts.score_pair` -- ``score`` is P(response_1 better)
    from the verdict distribution, never null; the votes are the second estimate."""
    return score_pair(
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


def create_app(engine: Engine, limits: Limits | None = None, access: Access | None = None) -> Any:
    """The FastAPI application around a loaded :class:`Engine`, wrapped in the access and body
    middlewares. ``app.state.guard`` is its :class:`Guard` (for endpoints added later)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

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

    _add_error_handlers(app)

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
        max_tokens = _chat_max_tokens(request, limits)
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
        return _chat_completion(engine.name, prompt_tokens, choices)

    async def scored(http: Request, ticket: Ticket, fn: Callable[[], Any]) -> Any:
        """:meth:`Guard.run` for a scoring call; a request the scorer refuses is a 400."""
        try:
            return await guard.run(http, ticket, fn)
        except RequestError as exc:
            raise APIError(400, str(exc), exc.param) from exc

    async def judged(http: Request, request: Any, judge: Callable[..., Any]) -> Any:
        """A reward endpoint with one question: ``k`` and the image count checked, the request
        admitted, its images decoded, then ``judge(scorer, request, images)`` on the work pool."""
        guard.check_k(request.k)
        guard.check_images(request.images)
        async with guard.admit() as ticket:
            params = [f"images.{i}" for i in range(len(request.images))]
            images = await guard.images(ticket, request.images, params)
            scorer = guard.verdicts(ticket, "question")
            return await scored(http, ticket, lambda: judge(scorer, request, images))

    @app.post("/v1/reward")
    async def reward(request: RewardRequest, http: Request) -> dict[str, Any]:
        result = await judged(http, request, _pair_reward)
        return {"id": f"reward-{next(counter)}", "model": engine.name, **result.to_dict()}

    @app.post("/v1/reward/reference")
    async def reward_reference(request: ReferenceRequest, http: Request) -> dict[str, Any]:
        body = await judged(http, request, reference_reward)
        return {"id": f"reward-{next(counter)}", "model": engine.name, **body}

    @app.post("/v1/reward/group")
    async def reward_group(request: GroupRequest, http: Request) -> dict[str, Any]:
        body = await judged(http, request, group_reward)
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
