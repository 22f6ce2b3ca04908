"""Threads for the CPU-bound request steps, encoding before decoding.

Decoding a request and encoding a response hold the GIL, so about one thread per core is all that
helps. When a batch completes, many responses become ready at once; serving those before decoding
newly arrived requests finishes work already paid for first, which keeps the latency tail of a
batched server at that of an unbatched one (benchmarks/batching.py).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

ENCODE = 0
DECODE = 1


class CodecPool:
    """A fixed set of threads taking jobs by priority (``ENCODE`` before ``DECODE``), FIFO within one."""

    def __init__(self, threads: int) -> None:
        self._jobs: queue.PriorityQueue[tuple[int, int, Callable[[], Any] | None, Future[Any] | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"distill-codec-{n}", daemon=True) for n in range(threads)]
        for thread in self._threads:
            thread.start()

    async def run(self, priority: int, function: Callable[..., T], *args: object) -> T:
        """Run ``function(*args)`` on a pool thread and await its result."""
        future: Future[T] = Future()
        self._jobs.put((priority, next(self._order), lambda: function(*args), future))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Finish queued jobs, then stop the threads."""
        for _ in self._threads:
            self._jobs.put((DECODE + 1, next(self._order), None, None))
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            _, _, job, future = self._jobs.get()
            if job is None or future is None:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as error:  # delivered to the awaiting request
                    future.set_exception(error)
            del job, future  # not kept alive (with a request body in its arguments) while this thread waits
