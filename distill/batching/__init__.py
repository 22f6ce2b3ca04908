"""Computing many requests at once: compatible requests in one kernel call, and the batching loop.

* :mod:`~distill.batching.group`: one engine call for requests that share a key, solo answers each.
* :mod:`~distill.batching.batcher`: the worker thread that coalesces concurrent requests into groups.
"""

from distill.batching.batcher import Batcher, BatchObserver, DeviceMemoryError, QueueFull, Work
from distill.batching.group import run_group

__all__ = ["BatchObserver", "Batcher", "DeviceMemoryError", "QueueFull", "Work", "run_group"]
