"""The ``{"shape", "values", "dtype"?}`` tensor form: decoding through both JSON readers, encoding, round trips.

Inputs are real request bodies parsed by :func:`service.codec.body.parse_json_object`, once with the
compiled JSON reader (``values`` and ``shape`` arrive as :class:`NumberArray`) and once with simdjson
alone (lazy ``simdjson.Array``), so each case covers both decoding paths.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
import simdjson
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic_core import PydanticCustomError

from distill import native, wire
from distill.wire import Kind
from service.codec import json_reader, tensors
from service.codec.body import parse_json_object
from service.codec.json_reader import NumberArray
from service.codec.parts import dump_parts
from service.codec.tensors import MAX_DIMS, WireTensor, decode, encode
from service.errors import NotRepresentable, TensorTooLarge

LIMIT = 1 << 20
READERS = [pytest.param(True, id="compiled"), pytest.param(False, id="general")]


def body(value: Any) -> bytes:
    """A request body holding ``value`` as its field ``x`` (numpy arrays written as orjson writes responses)."""
    return orjson.dumps({"x": value}, option=orjson.OPT_SERIALIZE_NUMPY)


def read(
    value: Any, kind: Kind, *, compiled: bool, single: bool = False, limit: int = LIMIT, text: bytes | None = None, scalar: bool = False
) -> WireTensor:
    """Decode field ``x`` of the body holding ``value`` (or of ``text``), with the compiled reader on or off."""
    with native.switched(compiled):
        document = parse_json_object(bytearray(body(value) if text is None else text))
        return decode(document["x"], kind, "x", limit, single=single, scalar=scalar)


def refused(value: Any, kind: Kind, *, compiled: bool, **options: Any) -> PydanticCustomError:
    with pytest.raises(PydanticCustomError) as error:
        read(value, kind, compiled=compiled, **options)
    assert error.value.type == "invalid_tensor"
    return error.value


def same_bits(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal dtype, shape and bit patterns (so -0.0 is not 0.0)."""
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if actual.is_floating_point():
        view = {8: torch.int64, 4: torch.int32, 2: torch.int16}[actual.element_size()]
        return torch.equal(actual.contiguous().view(view), expected.contiguous().view(view))
    return torch.equal(actual, expected)


def values_of(tensor: torch.Tensor, dtype: bool = True) -> dict[str, Any]:
    """The values form of a tensor as a client would write it."""
    form: dict[str, Any] = {"shape": list(tensor.shape), "values": encode(tensor, "values", "x")["values"]}
    if dtype:
        form["dtype"] = wire.NAMES[tensor.dtype]
    return form


# --- which path each reader takes -------------------------------------------------------------------------


@pytest.mark.skipif(not json_reader.enabled(), reason="the compiled JSON reader is not built")
def test_the_compiled_reader_cuts_out_values_and_shape():
    with native.switched(True):
        document = parse_json_object(bytearray(body({"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]})))
    assert isinstance(document["x"]["values"], NumberArray) and isinstance(document["x"]["shape"], NumberArray)


def test_without_the_compiled_reader_values_stay_simdjson_arrays():
    with native.switched(False):
        document = parse_json_object(bytearray(body({"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]})))
        assert isinstance(document["x"]["values"], simdjson.Array)
        tensor = decode(document["x"], Kind.FLOAT, "x", LIMIT).tensor
    assert tensor.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# --- untyped values (no dtype) ------------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", READERS)
def test_untyped_floats_are_float64_or_float32_rounded_once(compiled):
    numbers = [0.1, -2.5, 3, 1e-300, 123456789.123456789]
    wide = read({"shape": [5], "values": numbers}, Kind.FLOAT, compiled=compiled)
    assert wide.encoding == "values" and wide.untyped
    assert same_bits(wide.tensor, torch.tensor(numbers, dtype=torch.float64))
    single = read({"shape": [5], "values": numbers}, Kind.FLOAT, compiled=compiled, single=True)
    assert single.untyped
    assert same_bits(single.tensor, torch.tensor(numbers, dtype=torch.float64).to(torch.float32))


@pytest.mark.parametrize("compiled", READERS)
def test_values_are_shaped_row_major(compiled):
    tensor = read({"shape": [2, 3, 1], "values": [0, 1, 2, 3, 4, 5.5]}, Kind.FLOAT, compiled=compiled).tensor
    assert tensor.shape == (2, 3, 1)
    assert tensor[:, :, 0].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.5]]


@pytest.mark.parametrize("compiled", READERS)
def test_untyped_labels_are_int64_and_masks_bool(compiled):
    labels = read({"shape": [2, 2], "values": [0, 3, -100, 7]}, Kind.INDEX, compiled=compiled)
    assert labels.untyped and same_bits(labels.tensor, torch.tensor([[0, 3], [-100, 7]]))
    mask = read({"shape": [3], "values": [True, False, True]}, Kind.MASK, compiled=compiled)
    assert mask.untyped and same_bits(mask.tensor, torch.tensor([True, False, True]))


@pytest.mark.parametrize("compiled", READERS)
def test_untyped_number_fields_tell_indices_from_floats(compiled):
    indices = read({"shape": [2], "values": [0, 2]}, Kind.NUMBER, compiled=compiled)
    assert same_bits(indices.tensor, torch.tensor([0, 2]))
    floats = read({"shape": [2], "values": [0, 2.5]}, Kind.NUMBER, compiled=compiled)
    assert same_bits(floats.tensor, torch.tensor([0.0, 2.5], dtype=torch.float64))
    whole = read({"shape": [2], "values": [0.0, 2.0]}, Kind.NUMBER, compiled=compiled, single=True)
    assert same_bits(whole.tensor, torch.tensor([0.0, 2.0]))  # a fraction or exponent makes floats


# --- typed values (with dtype) ------------------------------------------------------------------------------


TYPED = [
    (Kind.FLOAT, "float32", [0.1, -2, 3.5], torch.tensor([0.1, -2, 3.5], dtype=torch.float64).float()),
    (Kind.FLOAT, "float64", [0.1, -2, 3.5], torch.tensor([0.1, -2.0, 3.5], dtype=torch.float64)),
    (Kind.FLOAT, "float16", [0.1, -2, 65504], torch.tensor([0.1, -2.0, 65504.0], dtype=torch.float64).half()),
    (Kind.FLOAT, "bfloat16", [0.1, -2, 3.5], torch.tensor([0.1, -2.0, 3.5], dtype=torch.float64).bfloat16()),
    (Kind.INDEX, "int64", [0, -100, 2**53 - 1], torch.tensor([0, -100, 2**53 - 1])),
    (Kind.INDEX, "int64", [0.0, -100.0, 2.0], torch.tensor([0, -100, 2])),
    (Kind.INDEX, "int32", [0, 2**31 - 1, -(2**31)], torch.tensor([0, 2**31 - 1, -(2**31)], dtype=torch.int32)),
    (Kind.INDEX, "int32", [1.0, 2147483647.0, -2147483648.0], torch.tensor([1, 2**31 - 1, -(2**31)], dtype=torch.int32)),
    (Kind.INDEX, "int64", [-0.0, 1e15, -9.223372036854775808e18], torch.tensor([0, 10**15, -(2**63)])),
    (Kind.MASK, "bool", [True, False, True], torch.tensor([True, False, True])),
    (Kind.MASK, "uint8", [1, 0, 255], torch.tensor([True, False, True])),
    (Kind.MASK, "uint8", [1.0, 0.0, 2.0], torch.tensor([True, False, True])),
    (Kind.NUMBER, "int64", [0.0, 2.0, 1], torch.tensor([0, 2, 1])),
    (Kind.NUMBER, "int32", [0, 2, 1], torch.tensor([0, 2, 1], dtype=torch.int32)),
    (Kind.NUMBER, "float32", [0, 2, 1], torch.tensor([0.0, 2.0, 1.0])),
    (Kind.NUMBER, "float64", [0.25, 2, 1], torch.tensor([0.25, 2.0, 1.0], dtype=torch.float64)),
    (Kind.NUMBER, "float16", [0.25, 2, 1], torch.tensor([0.25, 2.0, 1.0], dtype=torch.float16)),
    (Kind.NUMBER, "bfloat16", [0.25, 2, 1], torch.tensor([0.25, 2.0, 1.0], dtype=torch.bfloat16)),
]


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(("kind", "dtype", "values", "expected"), TYPED, ids=[f"{k.name}-{d}-{i}" for i, (k, d, *_) in enumerate(TYPED)])
def test_typed_values_are_converted_to_their_dtype(compiled, kind, dtype, values, expected):
    for single in (False, True):  # the request's dtype does not apply to typed values
        decoded = read({"shape": [3], "values": values, "dtype": dtype}, kind, compiled=compiled, single=single)
        assert decoded.encoding == "values" and not decoded.untyped
        assert same_bits(decoded.tensor, expected), (decoded.tensor, expected)


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_typed_floats_are_their_float64_values_cast_to_the_dtype(compiled, dtype):
    numbers = [0.1, 1.00048828125, 1.0004882812500003, 1.00390625, 3.4e38, -1e-40, 6e-8, 123456.789]
    text = json.dumps({"x": {"shape": [len(numbers)], "dtype": dtype, "values": numbers}}).encode()
    tensor = read(None, Kind.FLOAT, compiled=compiled, text=text).tensor
    assert same_bits(tensor, torch.tensor(numbers, dtype=torch.float64).to(wire.DTYPES[dtype]))


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(
    ("kind", "dtype", "values", "index"),
    [
        (Kind.INDEX, "int64", [0, 0.5], [1]),
        (Kind.INDEX, "int32", [2.0, 1.25, 3.0], [1]),
        (Kind.INDEX, "int64", [1e-300], [0]),
        (Kind.MASK, "uint8", [1, 0.5], [1]),
        (Kind.NUMBER, "int64", [0.0, 2.0, 0.5], [2]),
        (Kind.NUMBER, "int32", [-0.5], [0]),
    ],
)
def test_an_integer_dtype_takes_whole_numbers_only(compiled, kind, dtype, values, index):
    error = refused({"shape": [len(values)], "values": values, "dtype": dtype}, kind, compiled=compiled)
    assert "not a whole number" in error.message() and dtype in error.message()
    assert error.context["index"] == index


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(
    ("kind", "dtype", "values", "index"),
    [
        (Kind.INDEX, "int32", [0, 2**31], [1]),
        (Kind.INDEX, "int32", [-(2**31) - 1], [0]),
        (Kind.INDEX, "int32", [2147483648.0], [0]),
        (Kind.INDEX, "int32", [0, -2147483649.0], [1]),
        (Kind.INDEX, "int64", [1e19], [0]),
        (Kind.INDEX, "int64", [0, -1e19], [1]),
        (Kind.MASK, "uint8", [0, 256], [1]),
        (Kind.MASK, "uint8", [-1], [0]),
        (Kind.NUMBER, "int32", [3e9], [0]),
    ],
)
def test_an_integer_dtype_takes_values_within_its_range(compiled, kind, dtype, values, index):
    error = refused({"shape": [len(values)], "values": values, "dtype": dtype}, kind, compiled=compiled)
    assert f"beyond {dtype}" in error.message()
    assert error.context["index"] == index


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize("kind", [Kind.INDEX, Kind.NUMBER])
def test_two_to_the_63_is_beyond_int64(compiled, kind):
    error = refused({"shape": [2], "values": [0.0, 9223372036854775808.0], "dtype": "int64"}, kind, compiled=compiled)
    assert "beyond int64" in error.message() and error.context["index"] == [1]


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_typed_float_tensor_takes_large_integer_tokens(compiled, dtype):
    """JavaScript writes 1e16 as 10000000000000000: an integer token in a float tensor. With the same
    values untyped, or with the general parser, it is read as a float (rounded); with a float dtype the
    values are "converted to it" and must be too."""
    text = b'{"x": {"shape": [2], "dtype": "' + dtype.encode() + b'", "values": [10000000000000000, 9007199254740993]}}'
    tensor = read(None, Kind.FLOAT, compiled=compiled, text=text).tensor
    assert same_bits(tensor, torch.tensor([1e16, 9007199254740992.0], dtype=wire.DTYPES[dtype]))


@pytest.mark.parametrize("compiled", READERS)
def test_large_integer_tokens_without_dtype_are_floats(compiled):
    text = b'{"x": {"shape": [2], "values": [10000000000000000, 9007199254740993]}}'
    tensor = read(None, Kind.FLOAT, compiled=compiled, text=text).tensor
    assert same_bits(tensor, torch.tensor([1e16, 9007199254740992.0], dtype=torch.float64))


@pytest.mark.parametrize("compiled", READERS)
def test_typed_floats_beyond_the_dtype_become_infinite_for_the_engine_to_refuse(compiled):
    tensor = read({"shape": [3], "values": [1e300, -1e39, 1e5], "dtype": "float16"}, Kind.FLOAT, compiled=compiled).tensor
    assert tensor.dtype == torch.float16 and tensor.tolist() == [math.inf, -math.inf, math.inf]


# --- nulls, 0-d and empty tensors ---------------------------------------------------------------------------


@pytest.mark.parametrize("compiled", READERS)
def test_null_keys_are_absent(compiled):
    plain = read({"shape": [2], "values": [1.5, 2.5]}, Kind.FLOAT, compiled=compiled)
    for extra in ({"dtype": None}, {"data": None}, {"dtype": None, "data": None}):
        nulls = read({"shape": [2], "values": [1.5, 2.5], **extra}, Kind.FLOAT, compiled=compiled)
        assert nulls.untyped and nulls.encoding == "values" and same_bits(nulls.tensor, plain.tensor)
    labels = read({"dtype": None, "shape": [1], "values": [4], "data": None}, Kind.INDEX, compiled=compiled)
    assert same_bits(labels.tensor, torch.tensor([4]))


@pytest.mark.parametrize("compiled", READERS)
def test_a_binary_tensor_with_null_values_is_binary(compiled):
    binary = encode(torch.tensor([1.5, -2.0]), "base64", "x")
    value = {"dtype": "float32", "shape": [2], "data": binary["data"].data.decode(), "values": None}
    decoded = read(value, Kind.FLOAT, compiled=compiled)
    assert decoded.encoding == "base64" and same_bits(decoded.tensor, torch.tensor([1.5, -2.0]))


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(
    ("kind", "values", "dtype", "expected"),
    [
        (Kind.FLOAT, [2.5], None, torch.tensor(2.5, dtype=torch.float64)),
        (Kind.FLOAT, [2.5], "float32", torch.tensor(2.5)),
        (Kind.INDEX, [3], None, torch.tensor(3)),
        (Kind.INDEX, [3.0], "int32", torch.tensor(3, dtype=torch.int32)),
        (Kind.MASK, [True], None, torch.tensor(True)),
        (Kind.NUMBER, [1], None, torch.tensor(1)),
        (Kind.NUMBER, [0.5], None, torch.tensor(0.5, dtype=torch.float64)),
    ],
)
def test_an_empty_shape_with_one_value_is_a_0d_tensor(compiled, kind, values, dtype, expected):
    value = {"shape": [], "values": values} | ({"dtype": dtype} if dtype else {})
    for scalar in (False, True):
        decoded = read(value, kind, compiled=compiled, scalar=scalar)
        assert decoded.encoding == "values" and same_bits(decoded.tensor, expected)


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize("shape", [[0], [2, 0], [0, 3], [0, 3, 0], [1, 0, 1]])
@pytest.mark.parametrize(
    ("kind", "dtype", "expected"),
    [
        (Kind.FLOAT, None, torch.float64),
        (Kind.FLOAT, "float16", torch.float16),
        (Kind.INDEX, None, torch.int64),
        (Kind.INDEX, "int32", torch.int32),
        (Kind.MASK, None, torch.bool),
        (Kind.MASK, "uint8", torch.bool),
        (Kind.NUMBER, "int64", torch.int64),
    ],
)
def test_zero_size_shapes_take_no_values(compiled, shape, kind, dtype, expected):
    value = {"shape": shape, "values": []} | ({"dtype": dtype} if dtype else {})
    tensor = read(value, kind, compiled=compiled).tensor
    assert tensor.shape == tuple(shape) and tensor.dtype == expected and tensor.numel() == 0


@pytest.mark.parametrize("compiled", READERS)
def test_64_dimensions_are_accepted(compiled):
    tensor = read({"shape": [1] * MAX_DIMS, "values": [1.5]}, Kind.FLOAT, compiled=compiled).tensor
    assert tensor.dim() == MAX_DIMS and tensor.item() == 1.5


# --- malformed tensor objects -------------------------------------------------------------------------------


MALFORMED = [
    ("nested values", Kind.FLOAT, {"shape": [2, 2], "values": [[1.0, 2.0], [3.0, 4.0]]}, "flat list"),
    ("nested single row", Kind.FLOAT, {"shape": [1, 2], "values": [[1.0, 2.0]]}, "flat list"),
    ("nested empty", Kind.FLOAT, {"shape": [1, 0], "values": [[]]}, "flat list"),
    ("nested labels", Kind.INDEX, {"shape": [2, 1], "values": [[0], [1]]}, "flat list"),
    ("nested mask", Kind.MASK, {"shape": [2, 1], "values": [[True], [False]]}, "flat list"),
    ("list for a number", Kind.FLOAT, {"shape": [2], "values": [1.0, [2.0]]}, "a list where a number belongs"),
    ("list for a label", Kind.INDEX, {"shape": [2], "values": [1, [2]]}, "a list where a number belongs"),
    ("list for a boolean", Kind.MASK, {"shape": [2], "values": [True, [False]]}, "a list where a boolean belongs"),
    ("too few", Kind.FLOAT, {"shape": [2, 3], "values": [1.0] * 5}, "values has 5 numbers; shape [2, 3] needs 6"),
    ("too many", Kind.FLOAT, {"shape": [2, 3], "values": [1.0] * 7}, "values has 7 numbers; shape [2, 3] needs 6"),
    ("too many labels", Kind.INDEX, {"shape": [1], "values": [1, 2]}, "values has 2 numbers"),
    ("too few mask", Kind.MASK, {"shape": [3], "values": [True, False]}, "values has 2 numbers"),
    ("typed count", Kind.INDEX, {"shape": [3], "values": [1.0, 2.0], "dtype": "int32"}, "values has 2 numbers"),
    ("0-d without value", Kind.FLOAT, {"shape": [], "values": []}, "shape [] needs 1"),
    ("0-d with two", Kind.FLOAT, {"shape": [], "values": [1.0, 2.0]}, "shape [] needs 1"),
    ("values for a zero size", Kind.FLOAT, {"shape": [2, 0], "values": [1.0]}, "shape [2, 0] needs 0"),
    ("values and data", Kind.FLOAT, {"shape": [1], "values": [1.0], "data": "AACAPw=="}, "not both"),
    ("values, data and dtype", Kind.FLOAT, {"dtype": "float32", "shape": [1], "values": [1.0], "data": "AACAPw=="}, "not both"),
    ("no shape", Kind.FLOAT, {"values": [1.0, 2.0]}, "a tensor object has shape and values"),
    ("null shape", Kind.FLOAT, {"shape": None, "values": [1.0, 2.0]}, "a tensor object has shape and values"),
    ("null values", Kind.FLOAT, {"shape": [2], "values": None}, "a tensor object has shape and values"),
    ("unknown key", Kind.FLOAT, {"shape": [1], "values": [1.0], "order": "C"}, "(unknown: ['order'])"),
    ("misspelt key", Kind.INDEX, {"shape": [1], "values": [1], "dtpye": "int64"}, "(unknown: ['dtpye'])"),
    ("string in floats", Kind.FLOAT, {"shape": [2], "values": ["1.0", 2.0]}, "only numbers"),
    ("string in typed floats", Kind.FLOAT, {"shape": [2], "values": [1.0, "2.0"], "dtype": "float64"}, "only numbers"),
    ("boolean in floats", Kind.FLOAT, {"shape": [2], "values": [True, 2.0]}, "only numbers"),
    ("boolean in typed floats", Kind.FLOAT, {"shape": [2], "values": [1.0, False], "dtype": "float32"}, "only numbers"),
    ("null in floats", Kind.FLOAT, {"shape": [2], "values": [None, 2.0]}, "only numbers"),
    ("object in floats", Kind.FLOAT, {"shape": [2], "values": [1.0, {}]}, "only numbers"),
    ("string in labels", Kind.INDEX, {"shape": [2], "values": [1, "2"]}, "only integers"),
    ("boolean in labels", Kind.INDEX, {"shape": [2], "values": [1, True]}, "only integers"),
    ("boolean in typed labels", Kind.INDEX, {"shape": [2], "values": [1, True], "dtype": "int64"}, "only numbers"),
    ("floats in untyped labels", Kind.INDEX, {"shape": [2], "values": [0.0, 2.0]}, "only integers"),
    ("numbers in untyped mask", Kind.MASK, {"shape": [2], "values": [1, 0]}, "true/false"),
    ("numbers in a bool mask", Kind.MASK, {"shape": [2], "values": [1, 0], "dtype": "bool"}, "true/false"),
    ("booleans in a uint8 mask", Kind.MASK, {"shape": [2], "values": [True, False], "dtype": "uint8"}, "only numbers"),
    ("string in number field", Kind.NUMBER, {"shape": [2], "values": [0, "1"]}, "only numbers"),
    ("boolean in number field", Kind.NUMBER, {"shape": [1], "values": [False]}, "only numbers"),
    ("values a number", Kind.FLOAT, {"shape": [1], "values": 1.0}, "flat list of numbers (the shape goes in shape), got a number"),
    ("values a string", Kind.FLOAT, {"shape": [1], "values": "1.0"}, "got a string"),
    ("values an object", Kind.FLOAT, {"shape": [1], "values": {"0": 1.0}}, "got a JSON object"),
    ("values a boolean", Kind.MASK, {"shape": [1], "values": True}, "got a boolean"),
    ("values of objects", Kind.FLOAT, {"shape": [1], "values": [{"v": 1.0}]}, "flat list"),
    ("negative dimension", Kind.FLOAT, {"shape": [2, -3], "values": [1.0] * 6}, "shape must be a list of at most 64 non-negative"),
    ("65 dimensions", Kind.FLOAT, {"shape": [1] * 65, "values": [1.0]}, "shape must be a list of at most 64"),
    ("fractional dimension", Kind.FLOAT, {"shape": [2.5], "values": [1.0, 2.0]}, "non-negative integers"),
    ("float dimension", Kind.FLOAT, {"shape": [2.0], "values": [1.0, 2.0]}, "non-negative integers"),
    ("boolean dimension", Kind.FLOAT, {"shape": [True], "values": [1.0]}, "non-negative integers"),
    ("string dimension", Kind.FLOAT, {"shape": ["2"], "values": [1.0, 2.0]}, "non-negative integers"),
    ("shape a number", Kind.FLOAT, {"shape": 2, "values": [1.0, 2.0]}, "non-negative integers"),
    ("shape an object", Kind.FLOAT, {"shape": {"rows": 2}, "values": [1.0, 2.0]}, "non-negative integers"),
    ("nested shape", Kind.FLOAT, {"shape": [[2]], "values": [1.0, 2.0]}, "non-negative integers"),
    ("unknown dtype", Kind.FLOAT, {"shape": [1], "values": [1.0], "dtype": "float128"}, "dtype must be one of float32, float64"),
    ("dtype a number", Kind.FLOAT, {"shape": [1], "values": [1.0], "dtype": 32}, "got a number"),
    ("dtype a list", Kind.FLOAT, {"shape": [1], "values": [1.0], "dtype": ["float32"]}, "got a JSON array"),
    ("integer dtype for floats", Kind.FLOAT, {"shape": [1], "values": [1.0], "dtype": "int64"}, "got 'int64'"),
    ("bool dtype for floats", Kind.FLOAT, {"shape": [1], "values": [1.0], "dtype": "bool"}, "got 'bool'"),
    ("float dtype for labels", Kind.INDEX, {"shape": [1], "values": [1], "dtype": "float32"}, "dtype must be one of int64, int32"),
    ("uint8 dtype for labels", Kind.INDEX, {"shape": [1], "values": [1], "dtype": "uint8"}, "got 'uint8'"),
    ("int64 dtype for a mask", Kind.MASK, {"shape": [1], "values": [1], "dtype": "int64"}, "dtype must be one of bool, uint8"),
    ("float dtype for a mask", Kind.MASK, {"shape": [1], "values": [1.0], "dtype": "float32"}, "got 'float32'"),
    ("bool dtype for a number field", Kind.NUMBER, {"shape": [1], "values": [True], "dtype": "bool"}, "got 'bool'"),
    ("uint8 dtype for a number field", Kind.NUMBER, {"shape": [1], "values": [1], "dtype": "uint8"}, "got 'uint8'"),
]


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(("kind", "value", "reason"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_values_objects_are_refused(compiled, kind, value, reason):
    for single in (False, True):
        assert reason in refused(value, kind, compiled=compiled, single=single).message()


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(
    ("value", "limit", "reason"),
    [
        ({"shape": [4, 3], "values": [0.0] * 12}, 10, "12 elements exceeds the limit of 10"),
        ({"shape": [2], "values": [0.0] * 11}, 10, "11 elements exceeds the limit of 10"),
        ({"shape": [11], "values": []}, 10, "11 elements"),
        ({"shape": [0, 11], "values": []}, 10, "a dimension of 11"),
        ({"shape": [1 << 40, 1 << 40], "values": [1.0]}, 10, "exceeds the limit of 10"),
        ({"shape": [2**62], "values": [1.0]}, LIMIT, "exceeds the limit"),
        ({"shape": [4, 3], "values": [0] * 12, "dtype": "int32"}, 10, "12 elements"),
    ],
)
def test_over_the_element_limit_is_too_large(compiled, value, limit, reason):
    with pytest.raises(TensorTooLarge) as error:
        read(value, Kind.FLOAT if "dtype" not in value else Kind.INDEX, compiled=compiled, limit=limit)
    assert error.value.field == "x" and reason in error.value.detail


@pytest.mark.parametrize("compiled", READERS)
def test_within_the_element_limit_is_read(compiled):
    assert read({"shape": [2, 5], "values": [0.5] * 10}, Kind.FLOAT, compiled=compiled, limit=10).tensor.shape == (2, 5)


# --- encoding -----------------------------------------------------------------------------------------------


def test_encode_gives_dtype_shape_and_flat_values():
    tensor = torch.tensor([[1.5, -2.0, 0.0], [3.0, 4.25, -0.0]])
    encoded = encode(tensor, "values", "grad")
    assert set(encoded) == {"dtype", "shape", "values"}
    assert encoded["dtype"] == "float32" and encoded["shape"] == [2, 3]
    assert isinstance(encoded["values"], np.ndarray) and encoded["values"].ndim == 1
    assert encoded["values"].dtype == np.float32 and encoded["values"].tolist() == [1.5, -2.0, 0.0, 3.0, 4.25, -0.0]
    assert orjson.loads(b"".join(dump_parts({"grad": encoded}))) == {
        "grad": {"dtype": "float32", "shape": [2, 3], "values": [1.5, -2.0, 0.0, 3.0, 4.25, -0.0]}
    }


def test_encode_writes_a_non_contiguous_tensor_row_major():
    tensor = torch.arange(6, dtype=torch.float64).reshape(2, 3).t()
    encoded = encode(tensor, "values", "grad")
    assert encoded["shape"] == [3, 2] and encoded["values"].tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


@pytest.mark.parametrize(
    ("tensor", "dtype", "values"),
    [
        (torch.tensor(2.5), "float32", [2.5]),
        (torch.tensor([0.1], dtype=torch.float64), "float64", [0.1]),
        (torch.tensor([1.5, 65504.0], dtype=torch.float16), "float16", [1.5, 65504.0]),
        (torch.tensor([1.5, -256.0], dtype=torch.bfloat16), "bfloat16", [1.5, -256.0]),
        (torch.tensor([[1, -100]]), "int64", [1, -100]),
        (torch.tensor([7], dtype=torch.int32), "int32", [7]),
        (torch.tensor([True, False]), "bool", [True, False]),
        (torch.tensor([3, 0], dtype=torch.uint8), "uint8", [3, 0]),
        (torch.empty(2, 0, 3), "float32", []),
    ],
)
def test_encode_every_wire_dtype(tensor, dtype, values):
    encoded = orjson.loads(b"".join(dump_parts(encode(tensor, "values", "grad"))))
    assert encoded == {"dtype": dtype, "shape": list(tensor.shape), "values": values}


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor([1.0, math.inf]),
        torch.tensor([[-math.inf]], dtype=torch.float64),
        torch.tensor([math.nan, 0.0]),
        torch.tensor([60000.0], dtype=torch.float16) * 2,
        torch.tensor(math.nan, dtype=torch.bfloat16),
    ],
)
def test_non_finite_values_are_not_representable(tensor):
    with pytest.raises(NotRepresentable) as error:
        encode(tensor, "values", "grads.hidden")
    assert error.value.field == "grads.hidden"
    with pytest.raises(NotRepresentable):
        encode(tensor, "json", "grads.hidden")
    assert encode(tensor, "base64", "grads.hidden")["shape"] == list(tensor.shape)  # base64 carries them


# --- round trips --------------------------------------------------------------------------------------------


def round_trip(tensor: torch.Tensor, kind: Kind, *, compiled: bool, typed: bool = True, single: bool = False) -> torch.Tensor:
    """``tensor`` encoded as a response would be, read back as a request field."""
    encoded = encode(tensor, "values", "grad")
    if not typed:
        del encoded["dtype"]
    text = b'{"x": ' + b"".join(dump_parts(encoded)) + b"}"
    return read(None, kind, compiled=compiled, single=single, text=text).tensor


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
finite64 = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, shapes, elements=finite32))
def test_any_float32_tensor_round_trips_exactly(array):
    tensor = torch.from_numpy(array)
    for compiled in (True, False):
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled), tensor)
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled, typed=False, single=True), tensor)
        assert same_bits(round_trip(tensor, Kind.NUMBER, compiled=compiled), tensor)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40))
def test_any_float32_bit_pattern_round_trips_exactly(patterns):
    tensor = torch.tensor(patterns, dtype=torch.int32).view(torch.float32)
    tensor = tensor[torch.isfinite(tensor)]
    for compiled in (True, False):
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled), tensor)
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled, typed=False, single=True), tensor)


def test_many_random_float32_bit_patterns_round_trip_exactly():
    patterns = np.random.default_rng(0).integers(-(2**31), 2**31, size=1 << 18, dtype=np.int64).astype(np.int32)
    tensor = torch.from_numpy(patterns).view(torch.float32)
    tensor = tensor[torch.isfinite(tensor)].reshape(-1)
    for compiled in (True, False):
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled), tensor)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, shapes, elements=finite64))
def test_any_float64_tensor_round_trips_exactly(array):
    tensor = torch.from_numpy(array)
    for compiled in (True, False):
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled), tensor)
        assert same_bits(round_trip(tensor, Kind.FLOAT, compiled=compiled, typed=False), tensor)


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_finite_half_precision_value_round_trips_exactly(compiled, dtype):
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    every = every[torch.isfinite(every)].reshape(-1, 8)  # all 63488 (float16) or 65280 (bfloat16) finite values
    assert same_bits(round_trip(every, Kind.FLOAT, compiled=compiled), every)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.int64, shapes, elements=st.integers(-(2**53) + 1, 2**53 - 1)))
def test_any_int64_tensor_round_trips_exactly(array):
    tensor = torch.from_numpy(array)
    for compiled in (True, False):
        assert same_bits(round_trip(tensor, Kind.INDEX, compiled=compiled), tensor)
        assert same_bits(round_trip(tensor, Kind.INDEX, compiled=compiled, typed=False), tensor)
        assert same_bits(round_trip(tensor, Kind.NUMBER, compiled=compiled), tensor)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.int32, shapes))
def test_any_int32_tensor_round_trips_exactly(array):
    tensor = torch.from_numpy(array)
    for compiled in (True, False):
        assert same_bits(round_trip(tensor, Kind.INDEX, compiled=compiled), tensor)


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.bool_, shapes), st.sampled_from([torch.bool, torch.uint8]))
def test_any_mask_round_trips_exactly(array, dtype):
    tensor = torch.from_numpy(array)
    for compiled in (True, False):
        assert same_bits(round_trip(tensor.to(dtype), Kind.MASK, compiled=compiled), tensor)
        assert same_bits(round_trip(tensor, Kind.MASK, compiled=compiled, typed=False), tensor)


@st.composite
def flat_and_shape(draw: st.DrawFn, elements: st.SearchStrategy[Any]) -> tuple[list[Any], list[int]]:
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    return draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape))), shape


def nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [nest(flat[index * step : (index + 1) * step], shape[1:]) for index in range(shape[0])]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # beyond float32, as nested lists
@settings(max_examples=200, deadline=None)
@given(flat_and_shape(finite64 | st.integers(-(2**53) + 1, 2**53 - 1)), st.booleans())
def test_untyped_values_read_as_the_nested_list_of_the_same_numbers(case, single):
    flat, shape = case
    for compiled in (True, False):
        form = read({"shape": shape, "values": flat}, Kind.FLOAT, compiled=compiled, single=single).tensor
        assert form.shape == tuple(shape)
        if math.prod(shape):
            nested = read(nest(flat, shape), Kind.FLOAT, compiled=compiled, single=single).tensor
            assert same_bits(form, nested)
        else:  # nested lists cannot say an empty shape
            assert form.dtype == (torch.float32 if single else torch.float64)


@settings(max_examples=200, deadline=None)
@given(flat_and_shape(st.integers(-(2**53) + 1, 2**53 - 1)))
def test_untyped_label_values_read_as_the_nested_list_of_the_same_integers(case):
    flat, shape = case
    for compiled in (True, False):
        form = read({"shape": shape, "values": flat}, Kind.INDEX, compiled=compiled).tensor
        assert same_bits(form, torch.tensor(flat, dtype=torch.int64).reshape(shape))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=4), st.integers(0, 40))
def test_a_count_other_than_the_shapes_product_is_refused(shape, count):
    needed = math.prod(shape)
    if count == needed:
        count += 1
    for compiled in (True, False):
        error = refused({"shape": shape, "values": [1.0] * count}, Kind.FLOAT, compiled=compiled)
        assert error.message() == f"values has {count} numbers; shape {shape} needs {needed}"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=20), st.booleans())
def test_whole_floats_convert_to_int32_exactly(integers, as_floats):
    numbers: list[Any] = [float(v) for v in integers] if as_floats else integers
    for compiled in (True, False):
        tensor = read({"shape": [len(numbers)], "values": numbers, "dtype": "int32"}, Kind.INDEX, compiled=compiled).tensor
        assert same_bits(tensor, torch.tensor(integers, dtype=torch.int32))


def test_a_json_dumps_values_body_decodes_like_an_orjson_one():
    """Clients write JSON their own way (Python's json spells floats with repr, orjson shortest too)."""
    tensor = torch.randn(4, 7, generator=torch.Generator().manual_seed(3))
    form = {"shape": [4, 7], "values": tensor.reshape(-1).tolist(), "dtype": "float32"}
    for compiled in (True, False):
        from_json = read(None, Kind.FLOAT, compiled=compiled, text=json.dumps({"x": form}).encode()).tensor
        assert same_bits(from_json, tensor) and same_bits(read(form, Kind.FLOAT, compiled=compiled).tensor, tensor)


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize("value", [[True] * 6, [[True]] * 6, {"shape": [6], "values": [True] * 6}], ids=["flat", "nested", "values"])
def test_a_list_as_long_as_simdjson_counts_is_refused_not_truncated(monkeypatch, compiled, value):
    """simdjson counts an array's items in 24 bits: ``len`` stops at 2^24 - 1, and so does ``as_list``. A list
    that long (masks: the compiled reader cuts out numbers, not booleans) is refused, never read short.
    (The parser's count is lowered here so that a 6-item list stands for one of 2^24.)"""
    monkeypatch.setattr(tensors, "SIMDJSON_MAX_ITEMS", 6)
    with pytest.raises(TensorTooLarge, match="send this tensor as"):
        read(value, Kind.MASK, compiled=compiled)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_non_finite_json_answer_says_what_would_carry_it(dtype):
    with pytest.raises(NotRepresentable) as error:
        encode(torch.tensor([1.0, float("nan")], dtype=dtype), "values", "grad")
    assert "not finite" in error.value.detail and "response_encoding=base64" in error.value.detail
    assert ("float32 inputs" in error.value.detail) is (dtype == torch.float16)


def test_a_0d_tensor_in_json_is_a_bare_number():
    assert orjson.loads(b"".join(dump_parts({"loss": encode(torch.tensor(0.25), "json", "loss")}))) == {"loss": 0.25}


@pytest.mark.parametrize("compiled", READERS)
@pytest.mark.parametrize(
    "value",
    [[[True, True], [True, True, True], [True]], [[True], [True, [False]]], [[True, True], []], [True, 1], [True, None], [[True], "true"]],
)
def test_a_nested_mask_is_refused_unless_every_list_fits_its_shape(compiled, value):
    """Counts alone would pass the first (6 values and 4 lists, as a (3, 2) mask has): the lists' layout is checked."""
    assert any(phrase in refused(value, Kind.MASK, compiled=compiled).message() for phrase in ("ragged nesting", "only true/false"))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)))  # [] has no inner shape
def test_any_nested_mask_reads_as_sent(array):
    for compiled in (True, False):
        decoded = read(array.tolist(), Kind.MASK, compiled=compiled).tensor
        assert decoded.dtype == torch.bool and decoded.shape == array.shape and bool((decoded == torch.from_numpy(array)).all())
