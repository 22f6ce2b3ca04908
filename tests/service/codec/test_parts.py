"""Responses in parts: the same JSON as one orjson document, payloads never copied in."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from service.codec.parts import PartsResponse, Payload, dump_parts


def test_parts_join_to_the_document_with_payloads_as_strings() -> None:
    body = {
        "a\0b": "x\0y",
        "grad": {"dtype": "float32", "data": Payload(b"QUJD")},
        "terms": [{"loss": Payload(b"")}, {"values": np.arange(3, dtype=np.float32)}],
    }
    parts = dump_parts(body)
    assert b"QUJD" in parts and len(parts) == 5
    assert orjson.loads(b"".join(parts)) == {
        "a\0b": "x\0y",
        "grad": {"dtype": "float32", "data": "QUJD"},
        "terms": [{"loss": ""}, {"values": [0.0, 1.0, 2.0]}],
    }


def test_without_payloads_it_is_one_part() -> None:
    assert dump_parts({"loss": 1.5}) == [b'{"loss":1.5}']


def test_other_objects_are_still_refused() -> None:
    with pytest.raises(TypeError):
        dump_parts({"x": object()})


def test_parts_are_sent_under_one_content_length() -> None:
    parts = dump_parts({"data": Payload(b"A" * 100_000), "n": 1})
    app = Starlette(routes=[Route("/", lambda request: PartsResponse(parts))])
    response = TestClient(app).get("/")
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content) == sum(map(len, parts))
    assert response.json() == {"data": "A" * 100_000, "n": 1}
