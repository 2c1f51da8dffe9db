"""One retrying client for OpenAI-compatible ``/chat/completions`` endpoints (teacher and judge).

The cold-start teacher (:class:`r1reward.curation.OpenAITeacher`, GPT-4o in the paper) and the
consistency judge (:class:`r1reward.judges.OpenAIJudge`, Qwen2.5-VL-7B-Instruct behind vLLM in
the paper) make the same call: POST a chat-completions body, read ``choices[0].message.content``.
:class:`ChatClient` makes it once, for both:

- the address comes from arguments or environment variables (:func:`endpoint`), never from code;
- every attempt has a timeout; a refused or broken connection, a reply that is not HTTP, a
  timeout, HTTP 429 and 5xx are retried ``max_retries`` times, waiting ``backoff``,
  ``2 * backoff``, ... seconds (optionally with up to ``jitter`` of extra random delay);
- other 4xx are not retried; a 200 whose body is not a chat completion is retried only when
  ``retry_bad_replies`` (a sampling teacher may answer properly next time; a greedy judge would
  fail the same way again);
- a call that gets no reply text raises :class:`ChatError`, whose ``kind`` names the last failure
  and whose ``attempts`` list one message per failed attempt; callers turn it into a recorded
  failure, never a crash;
- one pooled HTTP client and one thread pool (:attr:`ChatClient.pool`) bound the requests in
  flight to ``concurrency``.

:func:`image_to_data_url` turns an image into the ``image_url`` an OpenAI body carries.
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ChatClient", "ChatError", "endpoint", "image_to_data_url"]


def image_to_data_url(image: Any) -> str:
    """A PIL image, a local path, or an existing ``data:``/``http(s):`` URL as an image URL string."""
    if isinstance(image, str) and image.startswith(("data:", "http://", "https://")):
        return image
    if isinstance(image, str | Path):
        path = Path(image)
        mime = {".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".gif": "gif"}.get(
            path.suffix.lower(), "png"
        )
        return f"data:image/{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def endpoint(
    owner: str,
    env: str,
    base_url: str | None,
    model: str | None,
    api_key: str | None,
    *,
    key_fallback: str | None = None,
) -> tuple[str, str, str | None]:
    """``(base_url, model, api_key)`` from the arguments, else ``${env}_BASE_URL``, ``_MODEL``,
    ``_API_KEY`` (then ``$key_fallback`` for the key).

    Raises:
        ValueError: naming ``owner`` and the variable, when no base URL or no model is given.
    """
    base_url = base_url or os.environ.get(f"{env}_BASE_URL")
    model = model or os.environ.get(f"{env}_MODEL")
    if not base_url:
        raise ValueError(f"{owner}: no base URL; pass base_url=... or set ${env}_BASE_URL")
    if not model:
        raise ValueError(f"{owner}: no model name; pass model=... or set ${env}_MODEL")
    if api_key is None:
        api_key = os.environ.get(f"{env}_API_KEY") or (
            os.environ.get(key_fallback) if key_fallback else None
        )
    return base_url, model, api_key


class ChatError(Exception):
    """A chat-completions call that got no reply text.

    Attributes:
        kind: the last failure: ``timeouts``, ``connect_errors``, ``bad_responses`` (not HTTP, or
            a 2xx that is not a chat completion) or ``http_errors``.
        attempts: one message per failed attempt, in order.
    """

    def __init__(self, kind: str, attempts: list[str]) -> None:
        super().__init__(f"{len(attempts)} request(s) failed: " + " | ".join(attempts))
        self.kind, self.attempts = kind, attempts


class _Attempt(Exception):
    def __init__(self, kind: str, message: str, retry: bool) -> None:
        super().__init__(message)
        self.kind, self.retry = kind, retry


class ChatClient:
    """POST chat-completions bodies to ``{base_url}/chat/completions`` with retries.

    Args:
        owner: names the user in errors and threads (``"OpenAIJudge"``).
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key: sent as ``Authorization: Bearer`` when not empty.
        timeout: seconds allowed for each phase (connect, write, read between bytes) of one attempt.
        max_retries: extra attempts after a retryable failure (see the module docstring).
        backoff: the first backoff delay in seconds; retry ``k`` waits ``backoff * 2**(k-1)``.
        jitter: each wait is stretched by a random fraction in ``[0, jitter)``.
        retry_bad_replies: retry a 2xx whose body is not a chat completion.
        concurrency: the size of :attr:`pool` and of the HTTP connection pool.
        on_attempt: called with the attempt index (0 = first, ``k`` = retry ``k``) before each
            request is sent, after any backoff wait (for counters).

    Raises:
        ValueError: ``concurrency < 1``, ``max_retries < 0`` or ``timeout <= 0``.
    """

    def __init__(
        self,
        owner: str,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float,
        max_retries: int,
        backoff: float,
        jitter: float = 0.0,
        retry_bad_replies: bool = False,
        concurrency: int = 8,
        on_attempt: Callable[[int], None] | None = None,
    ) -> None:
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError(
                f"{owner}: expected concurrency >= 1, max_retries >= 0, timeout > 0; got "
                f"{concurrency}, {max_retries}, {timeout}"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.jitter = float(jitter)
        self.retry_bad_replies = retry_bad_replies
        self.on_attempt = on_attempt
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        #: the worker threads that callers fan their requests out on
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=owner)

    def complete(self, body: dict[str, Any]) -> str:
        """The reply text of one chat-completions ``body``, after retries.

        Raises:
            ChatError: no reply text was obtained (see the module docstring for what is retried).
        """
        messages: list[str] = []
        kind = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                time.sleep(delay * (1 + self.jitter * random.random()) if self.jitter else delay)
            if self.on_attempt is not None:
                self.on_attempt(attempt)
            try:
                return self._attempt(body)
            except _Attempt as failure:
                messages.append(str(failure))
                kind = failure.kind
                if not failure.retry:
                    break
        raise ChatError(kind, messages)

    def _attempt(self, body: dict[str, Any]) -> str:
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _Attempt("timeouts", f"timeout ({type(exc).__name__}): {exc}", True) from exc
        except httpx.TransportError as exc:  # refused, reset, DNS, protocol garbage
            kind = "connect_errors" if isinstance(exc, httpx.ConnectError) else "bad_responses"
            raise _Attempt(kind, f"{type(exc).__name__}: {exc}", True) from exc
        status = response.status_code
        if status >= 400:
            retry = status == 429 or status >= 500
            raise _Attempt("http_errors", f"HTTP {status}: {response.text[:200]}", retry)
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            message = f"not a chat completion ({type(exc).__name__}): {response.text[:200]}"
            raise _Attempt("bad_responses", message, self.retry_bad_replies) from exc
        if not isinstance(text, str):
            message = f"message.content is {type(text).__name__}, expected text"
            raise _Attempt("bad_responses", message, self.retry_bad_replies)
        return text

    def close(self) -> None:
        """Release the thread pool and the HTTP connections."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
