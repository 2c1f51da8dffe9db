"""The ASGI layers around the app and uvicorn's protocol: what is refused before a route runs.

:class:`AccessMiddleware` checks the ``Host`` header and the API key before the body is read;
:class:`BodyLimitMiddleware` caps the body's size and the time between its parts;
:func:`header_timeout_protocol` closes a connection whose request head does not arrive in time.
Each answers in OpenAI's error envelope (:func:`~r1reward.serve.schema.error_body`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any

from r1reward.serve.limits import Access, is_loopback
from r1reward.serve.schema import error_body

__all__ = ["BodyLimitMiddleware", "AccessMiddleware", "header_timeout_protocol"]


async def _send_error(
    send: Callable, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(error_body(status, message)).encode()
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
            if name not in allowed and not is_loopback(name):
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
