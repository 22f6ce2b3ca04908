"""The compiled JSON tensor reader (``csrc/json_tensors.cpp``) and its ctypes glue.

Why: a JSON request at (64, 32000) holds 4M numbers. Through a general JSON parser each number
becomes part of a document first, with the GIL held throughout, so one large request stalls every
other request's decoding and encoding and the event loop. This reader parses the tensors' numbers
straight into a buffer in C++ with the GIL released (ctypes releases it for the call), at the
general parser's speed per number, so concurrent requests decode on all cores:

* :func:`extract` finds the tensors in a body (object members holding non-empty rectangular arrays
  of numbers, and long base64 ``data`` strings) and returns the body with each replaced by a short
  placeholder string, for the general parser to read the rest. What the scanner does not follow
  (malformed, ragged or mixed arrays, non-numbers) stays in place, so such inputs get the same
  errors as without it.
* :class:`NumberArray` is one extracted array, its numbers already parsed (in the same pass),
  copied out as floats or integers when its field asks for them.

When the library is not built or compiled code is switched off (:mod:`distill.native`),
:func:`extract` returns None and the whole body goes through the general parser. Responses are
written by orjson either way.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import numpy as np

from distill import native

MAX_DIMS = 32
MAX_SPANS = 256
MIN_STRING = 256
_FLOAT64_OUT, _INT64_OUT, _FLOAT32_OUT = 0, 1, 2


class JsonSpan(ctypes.Structure):
    _fields_ = (
        ("start", ctypes.c_int64),
        ("end", ctypes.c_int64),
        ("kind", ctypes.c_int32),
        ("integral", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("count", ctypes.c_int64),
        ("offset", ctypes.c_int64),
        ("shape", ctypes.c_int64 * MAX_DIMS),
    )


_SPAN_ARRAY, _SPAN_STRING = 0, 1


def _load() -> ctypes.CDLL | None:
    library = native.load_library("service.codec._json_tensors", {"JsonSpan": JsonSpan})
    if library is None:
        return None
    library.distill_json_extract.argtypes = (
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.POINTER(JsonSpan),
        ctypes.c_int64,
        ctypes.POINTER(ctypes.c_int64),
    )
    library.distill_json_extract.restype = ctypes.c_void_p
    library.distill_json_free.argtypes = (ctypes.c_void_p,)
    library.distill_json_free.restype = None
    library.distill_json_values.argtypes = (ctypes.c_void_p, ctypes.POINTER(JsonSpan), ctypes.c_int, ctypes.c_void_p)
    library.distill_json_values.restype = ctypes.c_int
    return library


_LIBRARY = _load()


def enabled() -> bool:
    """Whether the reader is built, loaded, and not switched off (:func:`distill.native.set_enabled`)."""
    return _LIBRARY is not None and native.enabled()


class InexactInteger(ValueError):
    """An integer of magnitude 2^53 or more, which the reader (storing float64) may not hold exactly."""


class _Document:
    """The library's store of one body's parsed numbers, freed with this object."""

    __slots__ = ("handle",)

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __del__(self) -> None:  # 0.2 µs per document, weakref.finalize 0.8; the library outlives every document
        if _LIBRARY is not None:
            _LIBRARY.distill_json_free(self.handle)


@dataclass(frozen=True, slots=True)
class NumberArray:
    """An extracted array of JSON numbers, already parsed: its shape, and its values on request."""

    document: _Document
    span: JsonSpan
    shape: tuple[int, ...]
    integral: bool

    def floats(self, single: bool = False) -> np.ndarray:
        """The numbers as float64, shaped; as float32 with ``single`` (each float64 value rounded)."""
        return self._copy(np.float32, _FLOAT32_OUT) if single else self._copy(np.float64, _FLOAT64_OUT)

    def integers(self) -> np.ndarray:
        """The numbers as int64 (only for an integral array); :class:`InexactInteger` from magnitude 2^53 on."""
        assert self.integral
        return self._copy(np.int64, _INT64_OUT)

    def _copy(self, dtype: type, kind: int) -> np.ndarray:
        values: np.ndarray = np.empty(self.shape, dtype=dtype)
        assert _LIBRARY is not None
        if _LIBRARY.distill_json_values(self.document.handle, ctypes.byref(self.span), kind, values.ctypes.data) != 0:
            raise InexactInteger("an integer of magnitude 2^53 or more")
        return values

    def __repr__(self) -> str:
        return f"<array of {self.span.count} numbers, shape {list(self.shape)}>"


@dataclass(frozen=True, slots=True)
class PlainString:
    """An extracted string of printable ASCII without escapes (a base64 payload), unread."""

    body: bytes | bytearray
    start: int
    end: int

    def content(self) -> memoryview:
        """The characters between the quotes, without copying."""
        return memoryview(self.body)[self.start + 1 : self.end - 1]

    def __repr__(self) -> str:
        return f"<string of {self.end - self.start - 2} characters>"


@dataclass(frozen=True)
class Extracted:
    """A body with its tensors cut out: the remaining JSON and what each placeholder stands for."""

    envelope: bytes
    values: dict[str, NumberArray | PlainString]

    def refers_to_body(self) -> bool:
        """Whether any value is read from the original body (a base64 string left in place)."""
        return any(isinstance(value, PlainString) for value in self.values.values())


def extract(body: bytes | bytearray) -> Extracted | None:
    """Cut the tensors out of a JSON object body; None when the reader is off or takes nothing.

    ``body`` is read in place: CPython keeps both bytes and bytearray objects NUL-terminated, as the
    reader requires.
    """
    if not enabled() or not body:
        return None
    assert _LIBRARY is not None
    spans = (JsonSpan * MAX_SPANS)()
    found = ctypes.c_int64(0)
    address = ctypes.addressof(ctypes.c_char.from_buffer(body)) if isinstance(body, bytearray) else body
    handle = _LIBRARY.distill_json_extract(address, len(body), MIN_STRING, spans, MAX_SPANS, ctypes.byref(found))
    if handle is None:
        raise MemoryError("no memory to parse the request body")
    document = _Document(handle)
    count = found.value
    if count <= 0:
        return None
    prefix = "\0" + os.urandom(8).hex() + ":"
    quoted = b'"\\u0000' + prefix[1:].encode()
    pieces: list[bytes | bytearray] = []
    values: dict[str, NumberArray | PlainString] = {}
    position = 0
    for index in range(count):
        span = JsonSpan.from_buffer_copy(spans[index])
        pieces += (body[position : span.start], quoted, str(index).encode(), b'"')
        position = span.end
        if span.kind == _SPAN_STRING:
            values[f"{prefix}{index}"] = PlainString(body, span.start, span.end)
        else:
            values[f"{prefix}{index}"] = NumberArray(document, span, tuple(span.shape[: span.ndim]), bool(span.integral))
    pieces.append(body[position:])
    return Extracted(b"".join(pieces), values)
