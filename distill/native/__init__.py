"""The native boundary: compiled CPU code, how it is loaded, and the switch that turns it off.

* :mod:`distill.native.loader`: loading a compiled library (with a struct-layout check) and the
  process-wide on/off switch (``DISTILL_NATIVE``).
* :mod:`distill.native.kernels`: the fused loss kernels' ctypes declarations, calls and adapters.
* :mod:`distill.native.allocator`: glibc allocator settings for long-running processes.
* ``csrc/``: the kernels' C++ sources.
"""

from distill.native import kernels
from distill.native.allocator import keep_freed_memory
from distill.native.loader import enabled, load_library, set_enabled, switched


def kernels_in_use() -> str:
    """The loss kernels in use: ``avx512``, ``avx2`` or ``baseline`` (compiled), or ``torch`` (eager ops)."""
    return kernels.instruction_set() if kernels.enabled() else "torch"


__all__ = ["enabled", "keep_freed_memory", "kernels", "kernels_in_use", "load_library", "set_enabled", "switched"]
