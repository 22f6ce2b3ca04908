"""Tensor wire formats: JSON nested lists and base64 binary objects, decoded without per-float Python.

Three encodings, chosen per tensor by the client:

* ``{"shape": [...], "values": [...]}`` (encoding ``values``): the shape and the numbers row-major in
  one flat list, as the Open Inference Protocol and TF Serving send them. ``dtype`` is optional: without
  it float values take the request's ``dtype``; with it the values are converted to it (integer dtypes
  take whole numbers only). This is the form the OpenAPI spec publishes: client generators handle a
  plain object with typed arrays, where recursive lists in a ``oneOf`` break them.
* ``{"dtype": ..., "shape": [...], "data": "<base64>"}`` (``base64``), little-endian, row-major.
* nested JSON lists of numbers (``json``), any depth ≥ 1 (a bare number or boolean for 0-d labels and
  masks); float tensors are read as float64 and cast to the request's ``dtype`` (default float32).
  Accepted on every route and answered in kind, but not published in the spec (see above).

Tensors arrive from :mod:`service.codec.body` already cut out of the body by the compiled reader
(:class:`~service.codec.json_reader.NumberArray`, numbers already parsed, copied out as the field's
kind needs; base64 ``data`` as a :class:`~service.codec.json_reader.PlainString`), or, when the reader is off
or did not take them, as lazy simdjson arrays: their numbers are copied into a buffer in C (strictly:
strings, booleans and null are rejected) and the nesting is checked with one length test per inner
array. Never one Python object per number. Responses encode tensors the same two ways. The binary
format itself (dtype names, byte order, bfloat16) is :mod:`distill.wire`, shared with the client.
"""

from __future__ import annotations

import binascii
import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pybase64
import simdjson
import torch
from pydantic_core import PydanticCustomError

from distill import wire
from distill.wire import Kind
from service.codec.json_reader import InexactInteger, NumberArray, PlainString
from service.codec.parts import Payload
from service.errors import NotRepresentable, TensorTooLarge

Encoding = Literal["json", "base64", "values"]
#: Most dimensions a tensor may have (PyTorch's limit).
MAX_DIMS = 64


@dataclass(frozen=True)
class WireTensor:
    """A decoded tensor and the encoding it arrived in (responses mirror the student's).

    ``untyped``: its floats came without a dtype of their own (nested lists, ``values`` without
    ``dtype``), so the request's ``dtype`` says what they compute in.
    """

    tensor: torch.Tensor
    encoding: Encoding
    untyped: bool = False


def _bad(detail: str, index: tuple[int, ...] | None = None) -> PydanticCustomError:
    """A 422-bound tensor error; pydantic attaches the field's full path (e.g. ``terms.0.labels``)."""
    return PydanticCustomError("invalid_tensor", "{reason}", {"reason": detail, "index": list(index) if index else None})


def _too_large(field: str, elements: int | str, limit: int) -> TensorTooLarge:
    what = f"{elements} elements" if isinstance(elements, int) else elements
    return TensorTooLarge(f"{field}: {what} exceeds the limit of {limit} elements", field=field)


def decode(value: Any, kind: Kind, field: str, max_elements: int, single: bool = False, scalar: bool = False) -> WireTensor:
    """Decode one tensor field from its parsed JSON value.

    JSON floats are float64 unless ``single`` (the request computes in float32): then they are
    rounded to float32 in the one copy out of the parsed document, the values a later cast would give.
    With ``scalar`` a bare JSON number is a 0-d tensor (float64, or int64 for an integer of a
    :attr:`Kind.NUMBER` field). A :attr:`Kind.NUMBER` array of integers is int64, else float.
    """
    if isinstance(value, NumberArray):
        return WireTensor(_decode_numbers(value, kind, field, max_elements, single), "json", untyped=True)
    if isinstance(value, simdjson.Array):
        return WireTensor(_decode_nested(value, kind, field, max_elements, single), "json", untyped=True)
    if isinstance(value, dict):
        if None in value.values():  # null is absent, as generated clients send it
            value = {key: item for key, item in value.items() if item is not None}
        if "values" in value:
            return _decode_values(value, kind, field, max_elements, single)
        return WireTensor(_decode_binary(value, kind, field, max_elements), "base64")
    if kind is Kind.INDEX and isinstance(value, int) and not isinstance(value, bool):
        return WireTensor(torch.tensor(value, dtype=torch.int64), "json", untyped=True)
    if scalar and kind in (Kind.FLOAT, Kind.NUMBER) and isinstance(value, int | float) and not isinstance(value, bool):
        integer = kind is Kind.NUMBER and isinstance(value, int)
        if integer and not -(2**63) <= value < 2**63:
            raise _bad("holds an integer beyond int64")
        return WireTensor(torch.tensor(value, dtype=torch.int64 if integer else torch.float64), "json", untyped=True)
    if kind is Kind.MASK and isinstance(value, bool):
        return WireTensor(torch.tensor(value), "json", untyped=True)
    expected = "a {shape, values} or {dtype, shape, data} object, or a nested list of numbers"
    raise _bad(f"must be {expected}, got a {_json_type(value)}")


#: simdjson counts an array's items in 24 bits: ``len`` (and ``as_list``) stop at this many.
SIMDJSON_MAX_ITEMS = (1 << 24) - 1


def _nested_shape(array: simdjson.Array, field: str, max_elements: int, check: bool = True) -> tuple[int, ...]:
    """Shape of a nested array, refused past ``max_elements`` before anything else is read; with ``check``,
    also checking that every inner array has the same length as its siblings (one Python step per inner
    array, which callers that get the check otherwise skip)."""
    shape: list[int] = []
    node: Any = array
    while isinstance(node, simdjson.Array):
        if len(shape) == MAX_DIMS:
            raise _bad(f"has more than {MAX_DIMS} dimensions")
        if len(node) >= SIMDJSON_MAX_ITEMS:
            raise TensorTooLarge(
                f"{field}: a JSON list of {SIMDJSON_MAX_ITEMS} or more items is more than the JSON parser here counts; "
                "send this tensor as {dtype, shape, data} (base64)",
                field=field,
            )
        shape.append(len(node))
        if len(node) == 0:
            break
        node = node[0]
    if math.prod(shape) > max_elements:
        raise _too_large(field, math.prod(shape), max_elements)
    if check:
        _check_level(array, tuple(shape), ())
    return tuple(shape)


def _check_level(node: simdjson.Array, shape: tuple[int, ...], at: tuple[int, ...]) -> None:
    depth = len(at)
    if depth == len(shape) - 1:
        return
    for position, child in enumerate(node):
        where = (*at, position)
        if not isinstance(child, simdjson.Array) or len(child) != shape[depth + 1]:
            length = len(child) if isinstance(child, simdjson.Array) else "a number"
            raise _bad(f"ragged nesting: expected a list of {shape[depth + 1]} at {list(where)}, got {length}", where)
        _check_level(child, shape, where)


def _check_leaves(array: simdjson.Array, shape: tuple[int, ...]) -> None:
    """Refuse an array nested in place of a number at the innermost level (``[[1, 2], [3, [4]]]``).

    :func:`_check_level` stops above the innermost lists so that it never visits a number from
    Python; once the values are known to be numbers (or booleans), the count of ``[`` in the
    minified text (C speed) equals the count of lists the shape implies exactly when no list
    stands in for a number.
    """
    expected = sum(math.prod(shape[:depth]) for depth in range(len(shape)))
    minified = cast(bytes, array.mini)  # bytes at run time; pysimdjson's stubs say str
    if minified.count(b"[") != expected:
        raise _bad(f"ragged nesting: a list where a number belongs for shape {list(shape)}")


def _decode_nested(array: simdjson.Array, kind: Kind, field: str, max_elements: int, single: bool) -> torch.Tensor:
    shape = _nested_shape(array, field, max_elements, check=kind is not Kind.MASK)
    elements = math.prod(shape)
    if kind is Kind.MASK:
        return _decode_mask(array, shape)
    floating = kind is Kind.FLOAT
    try:
        buffer = array.as_buffer(of_type="d" if floating else "i")
    except (TypeError, ValueError):
        if kind is not Kind.NUMBER:
            what = "numbers" if floating else "integers"
            raise _bad(f"must hold only {what} (no strings, booleans, null or objects)") from None
        floating = True  # not all integers: a float tensor
        try:
            buffer = array.as_buffer(of_type="d")
        except (TypeError, ValueError):
            raise _bad("must hold only numbers (no strings, booleans, null or objects)") from None
    values = np.frombuffer(buffer, dtype=np.float64 if floating else np.int64)
    if values.size != elements:
        raise _bad(f"mixed nesting: {values.size} numbers for shape {list(shape)}")
    _check_leaves(array, shape)
    return torch.from_numpy(values.astype(np.float32 if single and floating else values.dtype)).reshape(shape)


def _decode_mask(array: simdjson.Array, shape: tuple[int, ...]) -> torch.Tensor:
    """Nested JSON booleans, read from the array's minified text at C speed (no Python object per value
    or per inner list: a mask over millions of rows is a list of millions of lists).

    The text may hold only brackets, commas, ``true`` and ``false``; with the values taken out it must be
    exactly the brackets and commas of ``shape``; what is left of each value is one letter (t or f).
    """
    text = cast(bytes, array.mini)  # bytes at run time; pysimdjson's stubs say str
    if text.translate(None, b"[],truefals"):
        raise _bad("must hold only true/false")
    if text.translate(None, b"truefals") != _skeleton(shape):
        raise _bad(f"ragged nesting: lists of different lengths, or a list where a boolean belongs, for shape {list(shape)}")
    letters = np.frombuffer(text.translate(None, b"[],rueals"), dtype=np.uint8)
    return torch.from_numpy(letters == ord("t")).reshape(shape)


def _skeleton(shape: tuple[int, ...]) -> bytes:
    """The brackets and commas of a nested JSON list of ``shape``, without its values."""
    inner = _skeleton(shape[1:]) if len(shape) > 1 else b""
    return b"[" + ((inner + b",") * shape[0])[:-1] + b"]" if shape[0] else b"[]"


def _decode_numbers(array: NumberArray, kind: Kind, field: str, max_elements: int, single: bool) -> torch.Tensor:
    elements = math.prod(array.shape)
    if elements > max_elements:
        raise _too_large(field, elements, max_elements)
    if kind is Kind.MASK:
        raise _bad("must hold only true/false")
    if kind is Kind.INDEX and not array.integral:
        raise _bad("must hold only integers (no strings, booleans, null or objects)")
    floating = kind is Kind.FLOAT or (kind is Kind.NUMBER and not array.integral)
    try:
        values = array.floats(single) if floating else array.integers()
    except InexactInteger as error:
        raise _bad(f"holds {error}") from None
    return torch.from_numpy(values)


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value, for messages (never a Python object's repr)."""
    if isinstance(value, dict | simdjson.Object):
        return "JSON object"
    if isinstance(value, list | simdjson.Array | NumberArray):
        return "JSON array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def read_shape(value: Any, field: str, max_elements: int) -> tuple[int, ...]:
    """A tensor's declared shape from its parsed JSON value (a binary tensor's ``shape``, an Open
    Inference Protocol input's): at most :data:`MAX_DIMS` non-negative integers, their product and
    each of them within ``max_elements`` (``[0, 2^32, 2^32]`` has no elements, but is refused).

    Raises:
        ValueError: not such a list (the message is the reason, to follow the field's name).
        TensorTooLarge: beyond ``max_elements`` (naming ``field``).
    """
    if isinstance(value, NumberArray):
        try:
            listed = value.integers().tolist() if value.integral and len(value.shape) == 1 and value.shape[0] <= MAX_DIMS else None
        except InexactInteger:
            raise _too_large(field, "a dimension of 2^53 or more", max_elements) from None
    else:
        listed = value.as_list() if isinstance(value, simdjson.Array) and len(value) <= MAX_DIMS else value
    if isinstance(listed, list) and len(listed) > MAX_DIMS:
        raise ValueError(f"has more than {MAX_DIMS} dimensions")
    if not isinstance(listed, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in listed):
        raise ValueError(f"must be a list of at most {MAX_DIMS} non-negative integers")
    shape = tuple(listed)
    elements = math.prod(shape)
    if elements > max_elements or any(dimension > max_elements for dimension in shape):
        raise _too_large(field, elements if elements > max_elements else f"a dimension of {max(shape)}", max_elements)
    return shape


#: What a tensor object holds, for messages.
OBJECT_KEYS = "shape and values (dtype optional), or dtype, shape and data"


def _check_keys(value: dict[str, Any], keys: set[str], required: set[str]) -> None:
    unknown = sorted(set(value) - keys)
    if unknown or not required <= set(value):
        raise _bad(f"a tensor object has {OBJECT_KEYS}" + (f" (unknown: {unknown})" if unknown else ""))


def _dtype(name: Any, kind: Kind) -> str:
    if not isinstance(name, str) or name not in kind.dtypes:
        got = repr(name) if isinstance(name, str) else f"a {_json_type(name)}"
        raise _bad(f"dtype must be one of {', '.join(kind.dtypes)}, got {got}")
    return name


def _shape(value: Any, field: str, max_elements: int) -> tuple[int, ...]:
    try:
        return read_shape(value, field, max_elements)
    except ValueError as error:
        raise _bad(f"shape {error}") from None


#: How ``values`` with a dtype are read before the conversion: floats as floats (any JSON number), booleans
#: as booleans; integer dtypes as numbers, so that whole floats (2.0, as some generated clients write
#: them) are taken and the conversion can check them.
_READ_AS = {**dict.fromkeys(Kind.FLOAT.value, Kind.FLOAT), "bool": Kind.MASK}


def _decode_values(value: dict[str, Any], kind: Kind, field: str, max_elements: int, single: bool) -> WireTensor:
    """``{"shape": [...], "values": [...], "dtype"?: ...}``: a flat row-major list and its shape.

    Without ``dtype`` the values are read as a nested list of the same kind would be. With it they
    are read as numbers (booleans for ``bool``) and converted: to a float dtype by rounding, to an
    integer dtype only when every value is a whole number within its range.
    """
    if "data" in value:
        raise _bad("a tensor object has values or data, not both")
    _check_keys(value, {"dtype", "shape", "values"}, {"shape", "values"})
    shape = _shape(value["shape"], field, max_elements)
    dtype_name = None if value.get("dtype") is None else _dtype(value["dtype"], kind)
    flat = value["values"]
    read_as = kind if dtype_name is None else _READ_AS.get(dtype_name, Kind.NUMBER)
    single = single if dtype_name is None else dtype_name == "float32"  # float32 values: no float64 copy on the way
    if isinstance(flat, NumberArray) and len(flat.shape) == 1:
        tensor = _decode_numbers(flat, read_as, field, max_elements, single)
    elif isinstance(flat, simdjson.Array) and not (len(flat) and isinstance(flat[0], simdjson.Array)):
        tensor = _decode_nested(flat, read_as, field, max_elements, single)
    else:
        raise _bad(f"values must be a flat list of numbers (the shape goes in shape), got {_nesting(flat)}")
    elements = math.prod(shape)
    if tensor.numel() != elements:
        raise _bad(f"values has {tensor.numel()} numbers; shape {list(shape)} needs {elements}")
    tensor = tensor.reshape(shape)  # before the conversion, so that its errors name the element by its position in shape
    if dtype_name is not None:
        tensor = _convert(tensor, dtype_name)
    return WireTensor(tensor.bool() if kind is Kind.MASK else tensor, "values", untyped=dtype_name is None)


def _nesting(value: Any) -> str:
    if isinstance(value, list):  # the parser makes a list of an array of objects
        return "a list of objects"
    return "a nested list" if isinstance(value, NumberArray | simdjson.Array) else f"a {_json_type(value)}"


def _convert(tensor: torch.Tensor, dtype_name: str) -> torch.Tensor:
    """Values read from JSON as the wire dtype ``dtype_name`` says they are."""
    dtype = wire.DTYPES[dtype_name]
    if dtype.is_floating_point or dtype == torch.bool or tensor.dtype == dtype:
        return tensor.to(dtype)
    info = torch.iinfo(dtype)
    if tensor.is_floating_point():
        whole = torch.isfinite(tensor) & (tensor == tensor.round())
        if not bool(whole.all()):
            position = tuple(int(i) for i in torch.nonzero(~whole)[0])
            raise _bad(f"holds {float(tensor[position])!r}, not a whole number, for dtype {dtype_name}", position)
    # float64 holds info.max + 1 (a power of two) exactly, not info.max (int64's rounds up to 2^63)
    outside = (tensor < info.min) | (tensor >= info.max + 1 if tensor.is_floating_point() else tensor > info.max)
    if bool(outside.any()):
        position = tuple(int(i) for i in torch.nonzero(outside)[0])
        raise _bad(f"holds {tensor[position].item()!r}, beyond {dtype_name}", position)
    return tensor.to(dtype)


def _decode_binary(value: dict[str, Any], kind: Kind, field: str, max_elements: int) -> torch.Tensor:
    if "data" not in value and set(value) <= {"dtype", "shape"}:
        raise _bad(f"a tensor object has {OBJECT_KEYS}: this one has neither values nor data")
    _check_keys(value, {"dtype", "shape", "data"}, {"dtype", "shape", "data"})
    dtype_name, data = _dtype(value["dtype"], kind), value["data"]
    shape = _shape(value["shape"], field, max_elements)
    elements = math.prod(shape)
    if isinstance(data, PlainString):
        data = data.content()
    elif not isinstance(data, str):
        raise _bad("data must be a base64 string")
    try:
        raw = pybase64.b64decode_as_bytearray(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("data is not valid base64") from None
    itemsize = wire.itemsize(dtype_name)
    if len(raw) != elements * itemsize:
        raise _bad(f"data has {len(raw)} bytes; {dtype_name} × shape {list(shape)} needs {elements * itemsize}")
    tensor = wire.from_bytes(raw, dtype_name, shape)
    return tensor.bool() if kind is Kind.MASK else tensor


def encode(tensor: torch.Tensor, encoding: Encoding, field: str) -> Any:
    """Encode a result tensor: a numpy array (orjson writes nested lists), a ``values`` object (its
    shape and a flat numpy array), or a base64 object.

    The base64 text goes into the response as a :class:`~service.codec.parts.Payload`: sent as its
    own part of the body, so it is neither decoded to ``str`` nor copied into the JSON text (11 MB at
    (64, 32000) float32).

    JSON has no NaN or infinity (orjson would write null), so a non-finite value in a JSON
    response is an error rather than a silent null; base64 carries such values faithfully.
    """
    tensor = tensor.detach().cpu().contiguous()
    if encoding == "base64":
        data = Payload(pybase64.b64encode(wire.to_bytes(tensor).data))
        return {"dtype": wire.NAMES[tensor.dtype], "shape": list(tensor.shape), "data": data}
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        half = " (or send float32 inputs: a half-precision result overflows sooner)" if tensor.element_size() == 2 else ""
        raise NotRepresentable(
            f"{field} has values that are not finite (inf or NaN) in {wire.NAMES[tensor.dtype]}, which JSON cannot carry; "
            f"ask for response_encoding=base64{half}",
            field=field,
        )
    # Half precision as float32 (exactly the same values, and the same text: orjson writes float16 through
    # float32): numpy has no bfloat16, and orjson's float16 arrays once failed in CI in a way not reproduced.
    values = tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
    flat = values.reshape(-1).numpy()  # 1-D: numpy before 2.0 holds at most 32 dimensions, tensors up to 64
    if encoding == "values":
        return {"dtype": wire.NAMES[tensor.dtype], "shape": list(tensor.shape), "values": flat}
    if not tensor.dim():
        return flat[0]  # a bare number (orjson writes numpy scalars, not 0-d arrays)
    try:
        return flat.reshape(tensor.shape)
    except ValueError:  # more dimensions than this numpy holds: nested lists the slow way (rare shapes)
        return values.tolist()


def encode_number(value: float, field: str) -> float:
    """A scalar for a JSON response, refusing NaN and infinity."""
    if not math.isfinite(value):
        raise NotRepresentable(f"{field} is {value}", field=field)
    return value
