"""An asyncio dynamic batcher in front of the engine.

Requests (``Job``: one or more rows for one adapter) wait in one queue per (kind, adapter). A
collector takes a batch when a worker is free. While other requests are still being prepared (the
server is parsing, tokenizing or loading their adapter: ``preparing``), it waits at most
``max_wait_ms`` after the oldest waiting request for them to arrive and fill the batch up to
``max_batch_size`` rows; when none is, waiting could only add latency (a lone client would pay
``max_wait_ms`` on every request), so the batch starts at once and later arrivals join the next.
It fills the batch round-robin over the adapters with work (one request per adapter per turn), so
a busy adapter cannot starve the others; the adapter served first rotates from batch to batch.
Requests for different adapters share one engine call (the engine routes rows per adapter).
Engine calls run in worker threads.

If an engine call fails, each request of the batch is retried alone, so one bad request (an
adapter that fails to load, say) fails only itself. A full queue refuses new work (``Overloaded``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class Overloaded(Exception):
    """The queue holds ``max_queue`` rows already."""


@dataclass
class Job:
    kind: str  # "generate" | "classify": rows of one kind share an engine call
    adapter: str | None  # the fairness key (None: the bare base)
    rows: list[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    multi_adapter_batches: int = 0  # batches whose rows used two or more adapters (or base + adapter)
    most_adapters: int = 0
    retried_batches: int = 0


# run(kind, rows) -> one result per row; called in a worker thread.
Runner = Callable[[str, list[Any]], list[Any]]


class Batcher:
    def __init__(self, run: Runner, *, max_batch_size: int = 16, max_wait_ms: float = 5.0, max_queue: int = 256,
                 workers: int = 1, on_batch: Callable[[str, int, int, float], None] | None = None,
                 on_wait: Callable[[str, float], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or workers < 1:
            raise ValueError("max_batch_size, max_queue and workers must be positive")
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.workers = workers
        self.on_batch = on_batch
        self.on_wait = on_wait
        self.stats = BatcherStats()
        self._queues: dict[tuple[str, str | None], collections.deque[Job]] = {}
        self._order: collections.deque[tuple[str, str | None]] = collections.deque()
        self._queued_rows = 0
        self._preparing = 0  # requests on their way to submit()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="adapters-batch")
        self._task = asyncio.create_task(self._collect(), name="adapters-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._running):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            for job in queue:
                if not job.future.done():
                    job.future.set_exception(Overloaded("the server is shutting down"))
        self._queues.clear()
        self._order.clear()
        self._queued_rows = 0
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # ---- the request side ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Around the work a request does before ``submit`` (it is left before submitting): a
        batch waits for such requests, and only for them."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1
            if self._arrived is not None:
                self._arrived.set()  # a waiting collector looks again: it may start now

    async def submit(self, kind: str, adapter: str | None, rows: list[Any]) -> list[Any]:
        """Queue ``rows`` for ``adapter`` and wait for their results (in order)."""
        if not self.alive:
            raise Overloaded("the batcher is not running")
        if len(rows) > self.max_batch_size:
            raise ValueError(f"{len(rows)} rows in one request; max_batch_size is {self.max_batch_size}")
        if self._queued_rows + len(rows) > self.max_queue:
            raise Overloaded(f"the queue is full ({self._queued_rows} rows waiting, max_queue={self.max_queue})")
        job = Job(kind, adapter, list(rows), asyncio.get_running_loop().create_future())
        key = (kind, adapter)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = collections.deque()
            self._order.append(key)
        queue.append(job)
        self._queued_rows += len(rows)
        self._arrived.set()
        return await job.future

    # ---- the collector --------------------------------------------------------------------------------
    async def _collect(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._next_batch()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[Job]:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queued_rows:
                self._arrived.clear()
                await self._arrived.wait()
            oldest = min(q[0].enqueued for q in self._queues.values() if q)
            deadline = loop.time() + max(0.0, oldest + self.max_wait - time.monotonic())
            while self._preparing and self._fillable() < self.max_batch_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            batch = self._take()
            if batch:
                return batch

    def _fillable(self) -> int:
        kind = self._first_kind()
        return sum(len(j.rows) for (k, _), q in self._queues.items() if k == kind for j in q)

    def _first_kind(self) -> str | None:
        for key in self._order:
            if self._queues.get(key):
                return key[0]
        return None

    def _take(self) -> list[Job]:
        """One batch of one kind, round-robin over adapters: one request per adapter per turn."""
        kind = self._first_kind()
        batch: list[Job] = []
        rows = 0
        progress = True
        while progress and rows < self.max_batch_size:
            progress = False
            for key in self._order:
                queue = self._queues[key]
                if key[0] != kind:
                    continue
                while queue and queue[0].future.done():  # the client went away
                    self._queued_rows -= len(queue.popleft().rows)
                if queue and rows + len(queue[0].rows) <= self.max_batch_size:
                    job = queue.popleft()
                    self._queued_rows -= len(job.rows)
                    batch.append(job)
                    rows += len(job.rows)
                    progress = True
                    if rows >= self.max_batch_size:
                        break
        # The adapter served first this time goes to the back of the rotation; empty queues leave it.
        self._order.rotate(-1)
        for key in [k for k in self._order if not self._queues[k]]:
            self._order.remove(key)
            del self._queues[key]
        return batch

    # ---- running a batch ---------------------------------------------------------------------------------
    async def _execute(self, batch: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            now = time.monotonic()
            if self.on_wait:
                for job in batch:
                    self.on_wait(job.kind, now - job.enqueued)
            outcomes = await loop.run_in_executor(self._executor, self._run_batch, batch)
            for job, outcome in zip(batch, outcomes):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
        except BaseException as exc:  # the executor itself failed (shutdown): fail the batch
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc if isinstance(exc, Exception) else Overloaded("cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._slots.release()

    def _run_batch(self, batch: list[Job]) -> list[Any]:
        """In a worker thread: one engine call for the whole batch; on failure, each job alone."""
        kind = batch[0].kind
        rows = [row for job in batch for row in job.rows]
        started = time.monotonic()
        adapters = len({job.adapter for job in batch})
        self.stats.batches += 1
        self.stats.rows += len(rows)
        self.stats.largest_batch = max(self.stats.largest_batch, len(rows))
        self.stats.most_adapters = max(self.stats.most_adapters, adapters)
        if adapters > 1:
            self.stats.multi_adapter_batches += 1
        try:
            results = self.run(kind, rows)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            self.stats.retried_batches += 1
            outcomes: list[Any] = []
            for job in batch:
                try:
                    outcomes.append(self.run(kind, job.rows))
                except Exception as one:
                    outcomes.append(one)
            return outcomes
        finally:
            if self.on_batch:
                self.on_batch(kind, len(rows), adapters, time.monotonic() - started)
        outcomes, at = [], 0
        for job in batch:
            outcomes.append(results[at:at + len(job.rows)])
            at += len(job.rows)
        return outcomes
