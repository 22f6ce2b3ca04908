"""Reading request bodies: a size limit enforced while streaming, and JSON parsing.

The limit is checked against ``Content-Length`` before anything is read and again as chunks arrive,
so an oversized body is refused (413) without buffering it. Parsing first cuts the tensors out of the
body with the compiled reader (:mod:`service.codec.json_reader`, which parses their numbers in the same pass,
outside the GIL), then parses the rest with simdjson: objects become dicts, arrays of objects (``terms``)
become lists, the cut-out tensors come back in their placeholders' places, and any other array stays
a lazy simdjson array for the tensor decoder (:mod:`service.codec.tensors`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import simdjson
from starlette.requests import ClientDisconnect, Request

from service.codec import json_reader, number_range
from service.errors import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    DuplicateKey,
    MalformedBody,
    NotAnObject,
    NumberOutOfRange,
    TooManyKeys,
    UnsupportedMediaType,
    UpgradeWithBody,
)

T = TypeVar("T")


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int, timeout: float, reserve: Callable[[int], None], *, binary: bool = False) -> bytearray:
    """The whole body, refused (:class:`BodyTooLarge`) as soon as it is known to exceed ``limit`` bytes.

    ``reserve`` is called with the bytes about to be held (a declared Content-Length at once, else
    each chunk as it arrives) and may refuse them (see :mod:`service.codec.budget`).

    A declared length is read into one buffer of that size, chunk by chunk: collecting the chunks
    and joining them would hold the body twice at its peak. The buffer is a bytearray, which
    CPython keeps NUL-terminated (the compiled reader relies on it), and which the parsers read
    without another copy.

    Raises:
        UnsupportedMediaType: the body is declared as something other than JSON (a missing
            Content-Type is read as JSON; ``binary`` also admits application/octet-stream, for
            JSON followed by raw tensor bytes), or has a Content-Encoding.
        BodyTooLarge: it exceeds ``limit``.
        Overloaded: ``reserve`` refused the bytes.
        BodyTimeout: it has not arrived ``timeout`` seconds after the request began.
        UpgradeWithBody: it was declared but lost to an upgrade offer (``Upgrade: h2c``), which
            uvicorn's httptools parser takes as the start of another protocol.
        ClientDisconnected: the client went away before it arrived.
    """
    check_media_type(request.headers.get("content-type"), request.headers.get("content-encoding"), binary=binary)
    declared = request.headers.get("content-length", "")
    length = int(declared) if declared.isdigit() else None
    if length is not None:
        if length > limit:
            raise too_large(limit)
        reserve(length)

    async def chunks() -> bytearray:
        body = bytearray(length or 0)
        size = 0
        async for chunk in request.stream():
            end = size + len(chunk)
            if end > limit:
                raise too_large(limit)
            if end <= len(body):
                body[size:end] = chunk
            else:  # no length declared
                reserve(len(chunk))
                body += chunk
            size = end
        del body[size:]
        return body

    try:
        body = await _within(chunks(), timeout)  # one timer for the whole body, not one per chunk
    except asyncio.TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise ClientDisconnected("the client disconnected before sending its whole body") from None
    offered = "upgrade" in request.headers and "upgrade" in request.headers.get("connection", "").lower()
    if not body and (length or "transfer-encoding" in request.headers) and offered:
        raise UpgradeWithBody(
            "the request offers a protocol upgrade (Upgrade header) and sends a body, which this HTTP/1.1 server's parser "
            "does not read (uvicorn issue 2722): send it without the offer (Java's HttpClient: version HTTP_1_1)"
        )
    return body


async def _within(awaitable: Coroutine[Any, Any, T], seconds: float) -> T:
    """``awaitable`` or :class:`asyncio.TimeoutError` after ``seconds``.

    ``asyncio.timeout`` (3.11+) keeps the read in the request's own task; ``wait_for`` before 3.12
    wraps it in a new one, a round trip through the event loop on every request.
    """
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def check_media_type(content_type: str | None, content_encoding: str | None, *, binary: bool = False) -> None:
    """JSON bodies only (``application/json`` or ``…+json``; none declared is JSON; with ``binary``
    also ``application/octet-stream``), unencoded.

    A form or text body is refused rather than read: browsers send those cross-site without a
    preflight, which would let any web page drive a keyless deployment.
    """
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json") and not (binary and media == "application/octet-stream"):
            raise UnsupportedMediaType(f"send the body as application/json, not {media[:64]!r}")
    if content_encoding is not None and content_encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(f"Content-Encoding {content_encoding.strip()[:32]!r} is not decoded here; send the body unencoded")


def _duplicate(keys: list[str], path: tuple[str | int, ...]) -> DuplicateKey:
    """The error for the first key that an object gives twice (a linear scan: objects may be large)."""
    seen: set[str] = set()
    duplicate = keys[0]
    for key in keys:
        if key in seen:
            duplicate = key
            break
        seen.add(key)
    where = ".".join(map(str, (*path, duplicate)))
    where = where if len(where) <= MAX_FIELD else where[:MAX_FIELD] + "…"
    return DuplicateKey(f"{where}: the key is given more than once", field=where)


#: Field paths in errors are cut to this many characters (keys are client text of any length).
MAX_FIELD = 200

_parsers = threading.local()


def _parse(body: bytes | bytearray) -> Any:
    """Parse with this thread's parser: reusing one halves the time (its buffers are already mapped).

    A parser cannot be reused while values from its last document are alive (an exception may still
    hold some); then this thread gets a fresh one. Every other parser error is the body's: invalid
    JSON (ValueError), or valid JSON that simdjson cannot hold (RuntimeError: an integer beyond 64
    bits, nesting deeper than its limit).
    """
    parser = getattr(_parsers, "parser", None)
    if parser is not None:
        try:
            return parser.parse(body)
        except RuntimeError as error:
            if "re-use a parser" not in str(error):
                raise
    _parsers.parser = simdjson.Parser()
    return _parsers.parser.parse(body)


def parse_json_object(body: bytes | bytearray) -> dict[str, Any]:
    """Parse a JSON object body.

    A bytearray body is the caller's to give up: it is emptied as soon as the document no longer
    needs it (its tensors were all parsed into numbers by the compiled reader), so that the body and
    its tensors' float32 copies are not held at once.

    Raises:
        MalformedBody: the body is empty, not valid JSON, or nests objects deeper than
            :data:`MAX_OBJECT_DEPTH`.
        NumberOutOfRange: it holds a number beyond 64-bit integers and float64, whose field
            :func:`~service.codec.number_range.locate` found (else MalformedBody).
        NotAnObject: it is JSON but not an object.
        DuplicateKey: an object names a key twice.
    """
    if not body or body.isspace():  # strip() would copy a bytearray
        raise MalformedBody("the request body is empty; send a JSON object")
    extracted = json_reader.extract(body)
    try:
        document = _parse(extracted.envelope if extracted else body)
    except (ValueError, RuntimeError) as error:
        number = number_range.locate(body) if "NUMBER_ERROR" in str(error) or "BIGINT_ERROR" in str(error) else None
        if number is not None:
            raise NumberOutOfRange(number.detail(), field=number.field, index=number.index or None) from None
        raise MalformedBody(f"the body is not JSON that can be read: {error}") from None
    if not isinstance(document, simdjson.Object):
        raise NotAnObject("the request body must be a JSON object")
    if isinstance(body, bytearray) and extracted is not None and not extracted.refers_to_body():
        body.clear()  # every number is parsed and the envelope is its own copy: the body is no longer needed
    return _convert(document, extracted.values if extracted else {}, ())


#: Objects with more keys than this are refused before their keys are looked up (each lookup scans the
#: object, so a body of many keys would cost their square); a request object has about twenty.
MAX_KEYS = 256
#: Objects and lists of objects nested deeper than this are refused; a request nests four at most
#: (body → terms → term → tensor object). Tensor number arrays are not counted (their own limit is
#: their dimension count).
MAX_OBJECT_DEPTH = 32


_SCALARS = (int, float, bool, type(None))


def _convert(value: Any, extracted: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    """Objects to dicts (and lists of objects to lists) down to the tensors, which stay as parsed."""
    kind = type(value)
    if kind is str:
        return extracted.get(value, value)
    if kind in _SCALARS:
        return value
    if len(path) > MAX_OBJECT_DEPTH and isinstance(value, simdjson.Object | simdjson.Array | dict | list):
        raise MalformedBody(f"objects are nested deeper than {MAX_OBJECT_DEPTH} levels")
    if isinstance(value, simdjson.Object):
        if len(value) > MAX_KEYS:  # counted in C, before any key becomes a Python string
            where = ".".join(map(str, path))[:MAX_FIELD]
            detail = f"{where or 'the body'} has {len(value)} keys; an object of a request has at most {MAX_KEYS}"
            raise TooManyKeys(detail, field=where or None)
        keys = list(value.keys())
        if len(set(keys)) != len(keys):
            raise _duplicate(keys, path)
        if any("\0" in key for key in keys):  # simdjson looks keys up as C strings; items() converts eagerly but sees them
            return {key: _convert(item, extracted, (*path, key)) for key, item in value.items()}
        return {key: _convert(value[key], extracted, (*path, key)) for key in keys}
    if isinstance(value, simdjson.Array) and len(value) and isinstance(value[0], simdjson.Object):
        return [_convert(item, extracted, (*path, index)) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _convert(item, extracted, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_convert(item, extracted, (*path, index)) for index, item in enumerate(value)]
    if isinstance(value, str):
        return extracted.get(value, value)
    return value
