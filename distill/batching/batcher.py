"""Dynamic batching: coalesce concurrent requests into one engine call per compatible group.

Callers :meth:`Batcher.submit` validated work (a :class:`~distill.rows.prepared.Prepared`, or any callable
for work that cannot be batched, such as the combined objective) and get a
:class:`concurrent.futures.Future`. One worker thread owns the device: it takes the oldest queued
request with every queued request of the same group key (same math, same code path), up to ``max_batch_rows`` kept rows and
``max_batch_elements`` elements, and computes the group with :func:`~distill.batching.group.run_group`.

Adaptive waiting: the worker waits for company (at most ``max_wait_ms`` from the oldest request's
arrival) only while more work is on its way, that is while some caller is inside
:meth:`Batcher.incoming` (the service: while a request is being decoded and validated). A request
that finds nothing else queued or on its way is computed at once, so a lone client never pays the
wait; under load, requests that arrive while a group computes are queued and grouped without waiting.
A small request (at most ``inline_max_elements``) that finds the worker idle, nothing queued and no
other request on its way is computed in the submitting thread itself: handing it to the worker and
its result back costs two thread wake-ups (0.09 ms in the service, more than computing an (8, 1000)
KL), and there is nobody to group it with. The worker does not start a group meanwhile.

Failure isolation: requests are validated before they are queued, so a group fails only through an
error found while computing (say teacher mass on a -inf student class); the group is then recomputed
one request at a time, so only the request at fault fails. CUDA out-of-memory splits a group in halves
and retries; a single request that still does not fit fails with :class:`DeviceMemoryError`.
The queue is bounded: :class:`QueueFull` when it is, never unbounded memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from distill.batching.group import run_group
from distill.rows.prepared import Prepared, run


class QueueFull(RuntimeError):
    """The queue holds ``max_queue`` requests (or the batcher is closing): try again later."""


class DeviceMemoryError(RuntimeError):
    """A single request does not fit in device memory."""


class BatchObserver(Protocol):
    """Hooks for metrics; the service implements them with Prometheus."""

    def queued(self, depth: int) -> None: ...

    def batch(self, requests: int, rows: int, waits: list[float]) -> None: ...


Work = Prepared | Callable[[], Any]


@dataclass(eq=False)
class _Job:
    work: Work
    future: Future[Any]
    arrived: float = field(default_factory=time.monotonic)

    @property
    def group_key(self) -> Any:
        return self.work.group_key if isinstance(self.work, Prepared) else None

    @property
    def rows(self) -> int:
        return self.work.rows.n_kept if isinstance(self.work, Prepared) else 0

    @property
    def elements(self) -> int:
        return self.work.rows.n_kept * self.work.rows.n_classes if isinstance(self.work, Prepared) else 0


class Batcher:
    """Groups compatible requests into single engine calls on one worker thread.

    Args:
        max_wait_ms: how long the oldest request may wait for company (0: take what is queued).
        max_batch_rows / max_batch_elements: limits of one group (kept rows; rows × classes).
        max_queue: queued requests beyond which :meth:`submit` raises :class:`QueueFull`.
        enabled: ``False`` computes every request alone (a group of one), for comparison.
        inline_max_elements: the largest request (rows × classes) computed in the submitting thread
            when nothing else is queued, computing or on its way (0: never).
        observer: optional metrics hooks.
    """

    def __init__(
        self,
        *,
        max_wait_ms: float = 2.0,
        max_batch_rows: int = 8192,
        max_batch_elements: int = 1 << 24,
        max_queue: int = 1024,
        enabled: bool = True,
        inline_max_elements: int = 1 << 16,
        observer: BatchObserver | None = None,
    ) -> None:
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_rows = max_batch_rows
        self.max_batch_elements = max_batch_elements
        self.max_queue = max_queue
        self.enabled = enabled
        self.inline_max_elements = inline_max_elements
        self.observer = observer
        self._pending: deque[_Job] = deque()
        self._incoming = 0
        self._computing = False  # a group (or an inline request) holds the device
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="distill-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting to be computed."""
        return len(self._pending)

    def submit(self, work: Work) -> Future[Any]:
        """Queue validated work; the future resolves to its result (or its exception).

        Small work that finds the batcher idle is computed before this returns (see the module
        docstring), its future already resolved.
        """
        job = _Job(work, Future())
        with self._condition:
            if self._closing:
                raise QueueFull("the batcher is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are queued (limit {self.max_queue})")
            inline = self._alone(job)
            if inline:
                self._computing = True
            else:
                self._pending.append(job)
                self._condition.notify()
            depth = len(self._pending)
        if inline:
            self._compute_inline(job)
        elif self.observer:
            self.observer.queued(depth)
        return job.future

    def _alone(self, job: _Job) -> bool:
        """Whether ``job`` is small and nothing else is queued, computing or on its way (the caller's own
        announcement aside). Called holding the lock."""
        return (
            isinstance(job.work, Prepared)
            and 0 < job.elements <= self.inline_max_elements
            and not self._pending
            and not self._computing
            and self._incoming <= 1
        )

    def _compute_inline(self, job: _Job) -> None:
        try:
            if self.observer:
                self.observer.batch(1, job.rows, [0.0])
            self._execute([job])
        finally:
            with self._condition:
                self._computing = False
                if self._pending:  # queued behind this request: wake the worker (else nothing to do)
                    self._condition.notify()

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce work on its way (submit it inside the block): the worker may wait for it to join a group."""
        with self._condition:
            self._incoming += 1
        try:
            yield
        finally:
            with self._condition:
                self._incoming -= 1
                if self._incoming == 0 and self._pending:  # the only change a waiting worker acts on (submit notifies itself)
                    self._condition.notify()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, finish everything queued, and stop the worker."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            now = time.monotonic()
            try:
                if self.observer:
                    self.observer.batch(len(group), sum(job.rows for job in group), [now - job.arrived for job in group])
                    self.observer.queued(len(self._pending))
                self._execute(group)
            except Exception as error:  # a bug must fail its requests, not stop the worker
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(error)
            del group  # the inputs are not kept alive while this thread waits for the next group
            with self._condition:
                self._computing = False

    def _next_group(self) -> list[_Job] | None:
        """Block until work is queued; return the oldest request and its compatible company."""
        with self._condition:
            while not self._pending or self._computing:
                if self._closing and not self._pending:
                    return None
                self._condition.wait()
            head = self._pending[0]
            if head.group_key is None or not self.enabled:
                self._computing = True
                return [self._pending.popleft()]
            deadline = head.arrived + self.max_wait
            while True:
                group, full = self._collect(head)
                remaining = deadline - time.monotonic()
                if full or remaining <= 0 or self._closing or self._incoming == 0:
                    break
                self._condition.wait(remaining)
            for job in group:
                self._pending.remove(job)
            self._computing = True
            return group

    def _collect(self, head: _Job) -> tuple[list[_Job], bool]:
        """Queued jobs with the head's group key, oldest first, within the limits; and whether it is full."""
        group = [head]
        rows, elements = head.rows, head.elements
        for job in list(self._pending)[1:]:
            if job.group_key != head.group_key:
                continue
            if rows + job.rows > self.max_batch_rows or elements + job.elements > self.max_batch_elements:
                return group, True
            group.append(job)
            rows += job.rows
            elements += job.elements
        return group, rows >= self.max_batch_rows or elements >= self.max_batch_elements

    def _execute(self, group: list[_Job]) -> None:
        """Compute a group; if it fails, recompute its requests one by one so only the culprit fails."""
        live = [job for job in group if job.future.set_running_or_notify_cancel()]
        if live:
            self._settle(live)

    def _settle(self, jobs: list[_Job]) -> None:
        try:
            results = self._compute([job.work for job in jobs])
        except Exception as error:
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            for job in jobs:
                self._settle([job])
            return
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)

    def _compute(self, works: list[Work]) -> list[Any]:
        """One group on the device; on CUDA out-of-memory, halves the group and tries again."""
        try:
            if len(works) == 1:
                work = works[0]
                return [run(work) if isinstance(work, Prepared) else work()]
            return run_group(works)  # type: ignore[arg-type]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(works) == 1:
                raise DeviceMemoryError("the request does not fit in device memory") from None
            middle = len(works) // 2
            return self._compute(works[:middle]) + self._compute(works[middle:])
