"""Loading the project's compiled libraries, and the one switch that turns compiled code off.

Both libraries (the fused loss kernels, ``distill.native._kernels``, and the service's JSON tensor
reader, ``service.codec._json_tensors``) are plain C ABI libraries called through ctypes, which
releases the GIL during each call. They are optional: built by ``pip install`` when a C++ compiler
is present, and when one is missing, fails to load, or disagrees with the Python declarations, the
engine computes on torch ops and the service reads JSON with simdjson alone, with the same results
to float tolerance.

Layout check: each library exports ``distill_abi_size(name)``, the ``sizeof`` of every struct it
takes. :func:`load_library` compares it with ``ctypes.sizeof`` of the declaration and refuses the
library (with a logged reason) on any mismatch, so a stale build is never called with a layout it
does not expect.

The switch: compiled code is used unless it is switched off, by ``DISTILL_NATIVE=0`` in the
environment when the engine is imported, by the service's ``native`` setting (the same variable,
read through its settings), or by :func:`set_enabled` / :func:`switched` at run time.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

logger = logging.getLogger("distill")

_enabled = os.environ.get("DISTILL_NATIVE", "1") != "0"


def load_library(module: str, structs: Mapping[str, type[ctypes.Structure]]) -> ctypes.CDLL | None:
    """A compiled extension of this project (e.g. ``distill.native._kernels``) as a ctypes library.

    Returns None, logging why, when it was not built, does not load, or reports a struct size that
    differs from the ctypes declaration in ``structs`` (name → declaration).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        logger.info("%s is not built; using the fallback (torch ops, or simdjson for JSON)", module)
        return None
    try:
        library = ctypes.CDLL(spec.origin)
        abi_size = library.distill_abi_size
    except (OSError, AttributeError) as error:
        logger.warning("%s does not load (%s); using the fallback (torch ops, or simdjson for JSON)", module, error)
        return None
    abi_size.argtypes = (ctypes.c_char_p,)
    abi_size.restype = ctypes.c_int64
    for name, declaration in structs.items():
        compiled, declared = abi_size(name.encode()), ctypes.sizeof(declaration)
        if compiled != declared:
            logger.warning(
                "%s: struct %s is %d bytes compiled, %d declared; using the fallback (torch ops, or simdjson for JSON)",
                module,
                name,
                compiled,
                declared,
            )
            return None
    return library


def enabled() -> bool:
    """Whether compiled code may be used (the switch; whether a library loaded is its module's business)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Turn compiled code on or off for the whole process, from the next call on."""
    global _enabled
    _enabled = on


@contextmanager
def switched(on: bool) -> Iterator[None]:
    """Compiled code on or off within a ``with`` block (tests and benchmarks compare the two)."""
    before = _enabled
    set_enabled(on)
    try:
        yield
    finally:
        set_enabled(before)
