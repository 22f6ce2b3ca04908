"""The compiled JSON tensor reader: exact numbers, and the same documents as the general parser."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
import simdjson
from hypothesis import given, settings
from hypothesis import strategies as st

from distill import native
from service.codec import json_reader
from service.codec.body import parse_json_object
from service.codec.json_reader import MIN_STRING, InexactInteger, NumberArray, PlainString
from service.errors import Refused
from service.http.problems import problem_for

pytestmark = pytest.mark.skipif(not json_reader.enabled(), reason="the JSON reader is not built")


def only_array(text: bytes) -> NumberArray:
    extracted = json_reader.extract(text)
    assert extracted is not None
    (value,) = extracted.values.values()
    assert isinstance(value, NumberArray)
    return value


def bits(values: np.ndarray) -> list[str]:
    return [float(v).hex() for v in values.ravel()]


TOKENS = [
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1",
    "-7",
    "0.1",
    "-1.1258398",
    "1e5",
    "1E+5",
    "2.5e-3",
    "1e-400",
    "-1e-400",
    "4.9e-324",
    "2.4703282292062328e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "1234567890123456789",
    "0.30000000000000004",
    "1.00000000000000011102230246251565404236316680908203125",
    "1.000000000000000111022302462515654042363166809082031250001",
    "123456789.123456789123456789e-30",
    "0.0000000000000000000000000000001234",
    "3.4028235e38",
    "1.17549435e-38",
    "99999999999999999999e-5",
    "1e22",
    "1e23",
    "8.98846567431158e307",
]


@pytest.mark.parametrize("token", TOKENS)
def test_each_number_is_read_as_pythons_json_reads_it(token: str) -> None:
    expected = float(json.loads(token))
    (value,) = only_array(f'{{"x": [{token}]}}'.encode()).floats()
    assert float(value).hex() == expected.hex()


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_shortest_reprs_round_trip_exactly(values: list[float]) -> None:
    array = only_array(json.dumps({"x": values}).encode())
    assert bits(array.floats()) == [v.hex() for v in values]


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=50), st.integers(1, 17))
def test_numbers_printed_to_any_precision_are_correctly_rounded(values: list[float], digits: int) -> None:
    tokens = [f"{v:.{digits}e}" for v in values]
    array = only_array(('{"x": [' + ", ".join(tokens) + "]}").encode())
    assert bits(array.floats()) == [float(t).hex() for t in tokens]


@given(st.lists(st.integers(-(2**53) + 1, 2**53 - 1), min_size=1, max_size=30))
def test_integers_are_exact_and_flagged(values: list[int]) -> None:
    array = only_array(json.dumps({"labels": values}).encode())
    assert array.integral
    assert array.integers().tolist() == values


def test_integers_beyond_float64_precision_are_refused_as_labels() -> None:
    array = only_array(b'{"labels": [9007199254740993]}')
    with pytest.raises(InexactInteger):
        array.integers()


def test_a_fraction_or_exponent_makes_an_array_non_integral() -> None:
    assert not only_array(b'{"labels": [0, 1.0]}').integral
    assert not only_array(b'{"labels": [0, 1e0]}').integral


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("[1]", (1,)),
        ("[[1, 2, 3], [4, 5, 6]]", (2, 3)),
        ("[[[1], [2]], [[3], [4]], [[5], [6]]]", (3, 2, 1)),
        ("[ [ 1 ,2 ] ,\n\t[3,\r\n 4] ]", (2, 2)),
    ],
)
def test_shapes(text: str, shape: tuple[int, ...]) -> None:
    array = only_array(f'{{"x": {text}}}'.encode())
    assert array.shape == shape
    assert array.floats().shape == shape


@pytest.mark.parametrize(
    "value",
    [
        "[]",
        "[[]]",
        "[[1, 2], [3]]",
        "[[1, 2], 3]",
        "[1, [2]]",
        '[1, "2"]',
        "[1, true]",
        "[1, null]",
        "[1, {}]",
        "[1e999]",
        "[-1e999]",
        "[01]",
        "[1.]",
        "[.5]",
        "[+1]",
        "[-]",
        "[1e]",
        "[1e+]",
        "[NaN]",
        "[Infinity]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[1,,2]",
        "[0x10]",
        "[12345678901234567890123]",
        "[" * 40 + "1" + "]" * 40,
    ],
)
def test_what_it_does_not_take_stays_for_the_general_parser(value: str) -> None:
    extracted = json_reader.extract(f'{{"x": {value}, "y": [1.5]}}'.encode())
    if extracted is not None:
        assert [v.shape for v in extracted.values.values()] == [(1,)]
        assert value.encode() in extracted.envelope


def test_only_object_members_are_taken() -> None:
    extracted = json_reader.extract(b'{"terms": [{"t": [1, 2]}, [3, 4]], "s": [[5]]}')
    assert extracted is not None
    assert sorted(v.shape for v in extracted.values.values() if isinstance(v, NumberArray)) == [(1, 1), (2,)]
    assert b"[3, 4]" in extracted.envelope


def test_strings_with_brackets_quotes_and_escapes_are_skipped() -> None:
    text = b'{"a\\"[": "]\\\\\\"[1,2]", "b": [1, 2], "c\\u005d": "x[", "d": [3]}'
    extracted = json_reader.extract(text)
    assert extracted is not None
    assert sorted(v.shape for v in extracted.values.values()) == [(1,), (2,)]
    assert parse_json_object(text)['a"['] == ']\\"[1,2]'


def test_long_plain_data_strings_are_taken_without_copying() -> None:
    payload = "QUJD" * 100
    extracted = json_reader.extract(json.dumps({"student_logits": {"dtype": "float32", "shape": [300], "data": payload}}).encode())
    assert extracted is not None
    strings = [v for v in extracted.values.values() if isinstance(v, PlainString)]
    assert len(strings) == 1 and bytes(strings[0].content()) == payload.encode()


def test_data_strings_with_escapes_or_short_ones_stay() -> None:
    for data in ("QUJD\\/" * 100, "QUJD"):
        extracted = json_reader.extract(f'{{"x": {{"shape": [1], "data": "{data}"}}}}'.encode())
        assert extracted is not None
        assert not any(isinstance(v, PlainString) for v in extracted.values.values())


@pytest.mark.parametrize("text", [b"[1, 2]", b"", b"   ", b'{"a": [1]} x', b'{"a": [1]', b'{"a" [1]}', b"{[1]: 2}", b"\x00"])
def test_non_objects_and_broken_bodies_are_not_followed(text: bytes) -> None:
    assert json_reader.extract(text) is None


def normalise(value: Any) -> Any:
    """A parsed document in plain, type-strict Python: arrays as lists, numbers as float hex."""
    if isinstance(value, dict):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, NumberArray):
        return normalise(value.floats().tolist())
    if isinstance(value, PlainString):
        return ("str", bytes(value.content()).decode("ascii"))
    if isinstance(value, simdjson.Array):
        return normalise(value.as_list())
    if isinstance(value, list):
        return [normalise(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return ("num", float(value).hex())
    return ("str", value)


def parse_both(text: bytes) -> tuple[Any, Any]:
    """The document (or the error status) with the reader, then with the general parser only."""
    results = []
    for compiled in (True, False):
        with native.switched(compiled):
            try:
                results.append(normalise(parse_json_object(text)))
            except Refused as error:
                results.append(("error", problem_for(error).status))
    return results[0], results[1]


finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | finite | st.text(max_size=6)


@st.composite
def rectangular(draw: st.DrawFn) -> list[Any]:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    numbers = st.integers(-(2**63), 2**63 - 1) | finite

    def fill(dims: list[int]) -> list[Any]:
        return [draw(numbers) for _ in range(dims[0])] if len(dims) == 1 else [fill(dims[1:]) for _ in range(dims[0])]

    return fill(shape)


values = st.recursive(
    scalars | rectangular(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(st.text(max_size=8) | st.sampled_from(["data", "shape", "x"]), values, max_size=6)


def render(document: dict[str, Any], style: int) -> bytes:
    if style == 0:
        return json.dumps(document).encode()
    if style == 1:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return json.dumps(document, indent=2).encode()


@settings(max_examples=300)
@given(documents, st.integers(0, 2))
def test_documents_parse_the_same_with_and_without_the_reader(document: dict[str, Any], style: int) -> None:
    compiled, general = parse_both(render(document, style))
    assert compiled == general


@settings(max_examples=300)
@given(
    documents, st.integers(0, 2), st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3)), min_size=1, max_size=3), st.booleans()
)
def test_damaged_documents_fail_or_parse_the_same(
    document: dict[str, Any], style: int, damage: list[tuple[int, bytes]], delete: bool
) -> None:
    text = bytearray(render(document, style))
    for position, insert in damage:
        at = position % (len(text) + 1)
        text[at : at + (1 if delete else 0)] = insert
    compiled, general = parse_both(bytes(text))
    assert compiled == general


def test_large_arrays_match_numpy() -> None:
    generator = np.random.default_rng(0)
    values = generator.standard_normal((64, 500)).astype(np.float32)
    text = json.dumps({"x": values.tolist(), "y": (values * 1e-30).tolist()}).encode()
    parsed = parse_json_object(text)
    assert np.array_equal(parsed["x"].floats(), values.astype(np.float64))
    assert np.array_equal(parsed["y"].floats(), np.array(json.loads(text)["y"]))


def test_placeholders_cannot_be_forged() -> None:
    parsed = parse_json_object(b'{"x": [1], "y": "\\u00000:0"}')
    assert parsed["y"] == "\x000:0"


def test_random_bytes_never_crash() -> None:
    generator = random.Random(0)
    alphabet = b'{}[]",:0123456789.eE+- \ntruefalsnl\\u'
    for _ in range(3000):
        text = bytes(generator.choice(alphabet) for _ in range(generator.randint(0, 40)))
        extracted = json_reader.extract(b'{"x": ' + text + b"}")
        if extracted is not None:
            assert all(math.prod(v.shape) == v.span.count for v in extracted.values.values() if isinstance(v, NumberArray))


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_float32_copies_round_like_a_cast(values: list[float]) -> None:
    array = only_array(json.dumps({"x": values}).encode())
    singles = array.floats(single=True)
    assert singles.dtype == np.float32
    with np.errstate(over="ignore"):  # beyond float32, both give infinity
        assert np.array_equal(singles, array.floats().astype(np.float32))


@pytest.mark.parametrize("special", [b'\\"', b"\\\\", b"\\/", b"\x01", b"\x7f", "é".encode(), b"\xff"])
def test_a_long_string_reads_the_same_whatever_byte_breaks_its_plain_run(special):
    """The scanner takes plain runs 16 bytes at a time: put the first other byte at every offset of a block."""
    for offset in range(40):
        data = b"A" * offset + special + b"B" * (MIN_STRING + 40 - offset)
        text = b'{"x": {"dtype": "uint8", "shape": [1], "data": "' + data + b'"}}'
        compiled, general = parse_both(text)
        assert compiled == general, (special, offset)
