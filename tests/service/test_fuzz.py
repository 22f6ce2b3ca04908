"""No request body gets a 5xx: hypothesis-generated and damaged bodies against every route.

Generated documents use each route's real field names (so they reach validation and the engine) with
values of every JSON type, huge and tiny numbers, deep nesting and random binary-tensor objects; damaged
documents are valid requests with bytes inserted or deleted. Every answer must be a 2xx or a 4xx
problem+json.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill import LOSSES
from service.pipeline.schemas import REQUESTS
from tests.service.conftest import make_client

ROUTES = [*LOSSES, "distill"]
DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool", "uint8", "int8", "", 1]

numbers = (
    st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 1, -1, 0.5, 1e-320, 1e154, 1e308, -1e308, 2**63, 2**64])
)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=8)
binary = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(DTYPES),
        "shape": st.lists(st.integers(-1, 4), max_size=4) | scalars,
        "data": st.binary(max_size=64).map(lambda raw: base64.b64encode(raw).decode()) | scalars,
    }
)
matrices = st.integers(1, 3).flatmap(lambda c: st.lists(st.lists(numbers | scalars, min_size=c, max_size=c), min_size=1, max_size=3))
values = st.recursive(
    scalars | binary | matrices,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    route = draw(st.sampled_from(ROUTES))
    fields = list(REQUESTS[route].model_fields)
    names = draw(st.lists(st.sampled_from([*fields, "extra"]), min_size=1, max_size=6, unique=True))
    document = {name: draw(values) for name in names}
    if route == "distill" and draw(st.booleans()):
        term = {
            "loss": draw(st.sampled_from([*LOSSES, "mse", 3, None])),
            **draw(
                st.dictionaries(
                    st.sampled_from(["teacher_logits", "labels", "coefficient", "beta", "temperature", "reduction"]), values, max_size=3
                )
            ),
        }
        document["terms"] = [term]
    return route, document


@pytest.fixture(scope="module")
def fuzz_client():
    with make_client(device="cpu") as client:
        yield client


def check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(documents())
def test_generated_documents_never_get_a_5xx(fuzz_client, case):
    route, document = case
    check(fuzz_client.post(f"/v1/{route}", content=json.dumps(document), headers={"content-type": "application/json"}))


VALID = {
    "kl_div": {"student_logits": [[1.0, 2.0, 3.0]], "teacher_logits": [[0.5, 0.1, 0.2]], "temperature": 2.0},
    "distill": {"student_logits": [[1.0, 2.0]], "terms": [{"loss": "jsd", "teacher_probs": [[0.5, 0.5]], "beta": 0.3}]},
}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 200), st.binary(max_size=4)), min_size=1, max_size=4), st.booleans()
)
def test_damaged_bodies_never_get_a_5xx(fuzz_client, route, damage, delete):
    text = bytearray(json.dumps(VALID[route]).encode())
    for position, insert in damage:
        at = position % (len(text) + 1)
        text[at : at + (1 if delete else 0)] = insert
    check(fuzz_client.post(f"/v1/{route}", content=bytes(text), headers={"content-type": "application/json"}))
