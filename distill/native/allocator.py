"""Keep freed memory in the process instead of returning it to the OS after every call.

glibc's malloc serves blocks of 128 KiB and more with ``mmap`` and unmaps them on ``free``. Every
temporary of a loss call (a few hundred KiB to a few MiB) is then page-faulted and zeroed afresh on
the next call; on a 2-core CPU that made a grouped (384, 1000) KL call 2.5× slower than its
arithmetic (benchmarks/batching.py). Raising the mmap and trim thresholds keeps such blocks in the
heap for reuse. The price is resident memory that stays at its high-water mark (bounded by the
thresholds), which suits a long-running server. No-op where the C library is not glibc.

Threads other than the main one allocate from their own arenas, whose heaps are at most 64 MiB and
are unmapped again when their memory is freed, whatever the thresholds say: a service thread that
decoded a 45 MB JSON body page-faulted 6-12k fresh pages per request (under 4-client load), 1-4k
with one arena. One arena keeps every thread on the reusable main heap; its lock is shared, but
large blocks are few per request and small objects come from Python's own allocator.

What a very large request leaves behind (hundreds of MiB of freed blocks under the mmap threshold)
can be handed back with :func:`release_free_memory`; the service does that after its largest
requests only (:mod:`service.codec.budget`), so the cost, a walk of the heap, is paid only where
the memory would otherwise stay resident.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger("distill")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the heap's free memory to the OS (glibc ``malloc_trim(0)``); True if any was released."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def keep_freed_memory() -> bool:
    """Set glibc's mmap threshold to 64 MiB, trim threshold to 256 MiB and one arena; True if applied.

    Call it before starting threads: threads already running keep the arenas they have.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
    applied = all([bool(mallopt(option, value)) for option, value in settings])
    logger.debug("glibc allocator thresholds %s", "set" if applied else "unchanged")
    return applied
