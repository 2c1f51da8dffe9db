"""One model call at a time, shared by concurrent requests: :class:`MicroBatcher`.

Requests that arrive while a batch is generating (or within ``batch_wait_ms`` of the first one)
are merged into a single call when their generation settings (the job's key) agree; a merged call
that fails is re-run one job at a time, so only the offender gets the error. A :class:`Ticket` is
one request's claim: its deadline and disconnection drop its queued jobs.
:class:`BatchingSampler` puts a sampler's ``sample`` calls through the batcher.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

__all__ = ["settle", "BatchStats", "MicroBatcher", "Ticket", "BatchingSampler"]


def settle(future: Future, result: Any = None, exc: BaseException | None = None) -> None:
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
        """Queue ``items`` under ``key``; the future gets their ``len(items)`` results."""
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
            settle(job.future, exc=RuntimeError("the server stopped before this job finished"))
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
                        settle(job.future, exc=CancelledError())
                return
            self.stats.errors += 1
            settle(jobs[0].future, exc=exc)
            return
        self.stats.batches += 1
        self.stats.jobs += len(jobs)
        self.stats.items += len(items)
        self.stats.max_jobs_per_batch = max(self.stats.max_jobs_per_batch, len(jobs))
        start = 0
        for job in jobs:
            settle(job.future, results[start : start + len(job.items)])
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
        """Still wanted: not cancelled and before the deadline."""
        return not self.cancelled and time.monotonic() < self.deadline

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def track(self, future: Future) -> None:
        """Hold ``future`` so that :meth:`cancel` drops it (at once if already cancelled)."""
        with self._lock:
            self._futures.append(future)
            cancelled = self.cancelled
        if cancelled:
            future.cancel()

    def cancel(self) -> None:
        """Drop the request's queued futures and release the threads waiting on running ones."""
        with self._lock:
            self.cancelled = True
            futures, self._futures = self._futures, []
        for future in futures:
            if not future.cancel():  # running: release the thread waiting on it
                settle(future, exc=CancelledError())


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
        """``k`` texts per conversation, from the merged batch this call joins."""
        if self.check is not None:
            self.check(conversations)
        key = ("reward", int(k), bool(greedy), seed)
        ticket = self.ticket
        future = self.batcher.submit(key, conversations, ticket.alive if ticket else None)
        if ticket is not None:
            ticket.track(future)
        return future.result()
