"""Running the app with uvicorn: :class:`ServerSettings` (connection limits and timeouts) and
:class:`BackgroundServer` (the app on a thread and a free port, for tests, benchmarks and
notebooks).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from r1reward.serve.middleware import header_timeout_protocol

__all__ = ["ServerSettings", "BackgroundServer"]


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
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start uvicorn and wait until it accepts connections (``RuntimeError`` after
        ``timeout`` seconds)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit, wait for it (graceful-shutdown timeout + 10 s), free the port."""
        self.server.should_exit = True
        self.thread.join(timeout=self.settings.timeout_graceful_shutdown + 10)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
