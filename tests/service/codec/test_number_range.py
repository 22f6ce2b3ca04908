import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.codec import number_range
from service.codec.number_range import OutOfRange, locate


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"t": 1e400}', OutOfRange("t", (), "1e400")),
        (b'{"t": -18446744073709551617}', OutOfRange("t", (), "-18446744073709551617")),
        (b'{"a": {"b": [1, {"c": [0, 0, [7, 1E+999]]}]}}', OutOfRange("a.b.1.c", (2, 1), "1E+999")),
        (b'{"s": "x, 1e999", "k\\"ey": [1e999]}', OutOfRange('k"ey', (0,), "1e999")),
        (b'{"n": [[1e-300, 2e300], [1.5, 9e999]]}', OutOfRange("n", (1, 1), "9e999")),
        (b'{"t": -9223372036854775809}', OutOfRange("t", (), "-9223372036854775809")),
        (b'{"s": "1' + b"0" * 5000 + b'", "t": [1' + b"0" * 5000 + b"]}", OutOfRange("t", (0,), "1" + "0" * 39 + "…")),
    ],
)
def test_the_first_number_out_of_range_and_its_field(body, expected):
    assert locate(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"t": 18446744073709551615, "u": -9223372036854775808, "v": 1.7e308, "w": 1e-400}',
        b'{"t": "1e999"}',
        b'{"t": 01}',
        b'{"t": 0.1234567890123456789012345678}',
        b"[1, 2, 1e999]",  # not an object: no field to name
        b"1e999",
    ],
)
def test_numbers_that_a_parser_holds_or_that_are_not_numbers_are_not_reported(body):
    assert locate(body) is None


def test_long_numbers_are_cut():
    found = locate(b'{"t": ' + b"9" * 1000 + b"}")
    assert found is not None and len(found.token) == number_range.MAX_SHOWN + 1


def test_the_search_is_bounded(monkeypatch):
    body = b'{"n": [' + b"[1e-300]," * 5000 + b"1e999]}"
    assert locate(body) is None  # more candidates than MAX_CANDIDATES before the number
    monkeypatch.setattr(number_range, "MAX_CANDIDATES", 10_000)
    monkeypatch.setattr(number_range, "MAX_TOKENS", 100)
    assert locate(body) is None  # more structure than MAX_TOKENS before the number
    monkeypatch.setattr(number_range, "MAX_TOKENS", 100_000)
    assert locate(body) == OutOfRange("n", (5000,), "1e999")


def test_a_large_tensor_costs_a_few_tokens_per_row(monkeypatch):
    row = b"[" + b"0.5, " * 9999 + b"0.5]"
    body = b'{"x": [' + b", ".join([row] * 64) + b'], "t": 1e999}'
    monkeypatch.setattr(number_range, "MAX_TOKENS", 200)  # 640,000 numbers, 64 rows
    monkeypatch.setattr(number_range, "MAX_BODY_BYTES", len(body))
    assert locate(body) == OutOfRange("t", (), "1e999")


JSON = st.recursive(
    st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@given(JSON)
def test_the_path_matches_where_the_number_was_put(value):
    body = json.dumps({"root": value, "bad": [value, 1]}).encode()
    body = body[: body.rindex(b"1]}")] + b"1e999]}"
    assert locate(body) == OutOfRange("bad", (1,), "1e999")


def test_large_bodies_are_not_searched():
    body = b'{"s": "' + b" " * number_range.MAX_BODY_BYTES + b'", "t": 1e999}'
    assert locate(body) is None


def test_strings_of_escapes_are_walked_at_c_speed(monkeypatch):
    """A string of escaped quotes is one token; it once took the expression 9× longer per byte."""
    monkeypatch.setattr(number_range, "MAX_TOKENS", 10)
    assert locate(b'{"s": "' + b'\\"' * 100_000 + b'", "t": 1e999}') == OutOfRange("t", (), "1e999")
