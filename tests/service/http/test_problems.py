"""Every bad input gets a 4xx problem naming the field; nothing gets a 500."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator

import pytest

from distill import native
from tests.service.conftest import make_client

S = [[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]]
T = [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
P = [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]


@pytest.fixture(params=["compiled", "general"], autouse=True)
def json_reader(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every case twice: with the compiled JSON reader, and with simdjson alone (compiled code off)."""
    with native.switched(request.param == "compiled"):
        yield


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CASES = [
    ("shape mismatch", "kl_div", {"student_logits": S, "teacher_logits": [[1.0, 2.0]]}, 422, "teacher_logits"),
    ("ragged", "kl_div", {"student_logits": [[1.0, 2.0], [3.0]], "teacher_logits": T}, 422, "student_logits"),
    ("list for a number", "kl_div", {"student_logits": [[1.0, 2.0, 3.0], [3.0, 4.0, [5.0]]], "teacher_logits": T}, 422, "student_logits"),
    ("list for a label", "cross_entropy", {"student_logits": S, "labels": [1, [0]]}, 422, "labels"),
    ("list for a mask value", "kl_div", {"student_logits": S, "teacher_logits": T, "mask": [True, [False]]}, 422, "mask"),
    ("mixed nesting", "kl_div", {"student_logits": [[1.0, 2.0], 3.0], "teacher_logits": T}, 422, "student_logits"),
    ("string number", "kl_div", {"student_logits": [["1.0", 2.0, 3.0]], "teacher_logits": [T[0]]}, 422, "student_logits"),
    ("boolean number", "kl_div", {"student_logits": [[True, 2.0, 3.0]], "teacher_logits": [T[0]]}, 422, "student_logits"),
    ("null number", "kl_div", {"student_logits": [[None, 2.0, 3.0]], "teacher_logits": [T[0]]}, 422, "student_logits"),
    ("scalar student", "kl_div", {"student_logits": 1.5, "teacher_logits": [1.5]}, 422, "student_logits"),
    ("empty", "kl_div", {"student_logits": [], "teacher_logits": []}, 422, "student_logits"),
    ("empty rows", "kl_div", {"student_logits": [[]], "teacher_logits": [[]]}, 422, "student_logits"),
    ("temperature zero", "kl_div", {"student_logits": S, "teacher_logits": T, "temperature": 0}, 422, "temperature"),
    ("temperature negative", "kl_div", {"student_logits": S, "teacher_logits": T, "temperature": -2}, 422, "temperature"),
    ("unknown reduction", "kl_div", {"student_logits": S, "teacher_logits": T, "reduction": "avg"}, 422, "reduction"),
    ("misspelt field", "kl_div", {"student_logits": S, "teacher_logits": T, "temprature": 2.0}, 422, "temprature"),
    ("both teachers", "kl_div", {"student_logits": S, "teacher_logits": T, "teacher_probs": P}, 422, "teacher"),
    ("no teacher", "kl_div", {"student_logits": S}, 422, "teacher"),
    ("missing student", "kl_div", {"teacher_logits": T}, 422, "student_logits"),
    ("probs above one", "kl_div", {"student_logits": S, "teacher_probs": [[0.2, 1.3, 0.5], P[1]]}, 422, "teacher_probs"),
    ("probs negative", "bce", {"student_logits": S, "teacher_probs": [[0.2, -0.3, 0.5], P[1]]}, 422, "teacher_probs"),
    ("student probs out of range", "bce", {"student_probs": [[2.0, 0.5, 0.5]], "teacher_probs": [P[0]]}, 422, "student_probs"),
    ("label out of range", "cross_entropy", {"student_logits": S, "labels": [0, 3]}, 422, "labels"),
    ("label negative", "cross_entropy", {"student_logits": S, "labels": [0, -1]}, 422, "labels"),
    ("label not integer", "cross_entropy", {"student_logits": S, "labels": [0, 1.5]}, 422, "labels"),
    ("labels too deep", "cross_entropy", {"student_logits": S, "labels": [[0], [1]]}, 422, "labels"),
    ("labels and teacher", "cross_entropy", {"student_logits": S, "labels": [0, 1], "teacher_logits": T}, 422, "labels"),
    ("temperature with labels", "cross_entropy", {"student_logits": S, "labels": [0, 1], "temperature": 2.0}, 422, "temperature"),
    ("smoothing above one", "cross_entropy", {"student_logits": S, "labels": [0, 1], "label_smoothing": 1.5}, 422, "label_smoothing"),
    ("weight wrong size", "cross_entropy", {"student_logits": S, "labels": [0, 1], "weight": [1.0, 2.0]}, 422, "weight"),
    ("pos_weight wrong size", "bce", {"student_logits": S, "teacher_logits": T, "pos_weight": [1.0, 2.0]}, 422, "pos_weight"),
    ("mask too deep", "kl_div", {"student_logits": S, "teacher_logits": T, "mask": [[True], [False]]}, 422, "mask"),
    ("mask not boolean", "kl_div", {"student_logits": S, "teacher_logits": T, "mask": [1, 0]}, 422, "mask"),
    (
        "base64 length",
        "kl_div",
        {"student_logits": {"dtype": "float32", "shape": [2, 3], "data": b64(b"\0" * 20)}, "teacher_logits": T},
        422,
        "student_logits",
    ),
    (
        "base64 garbage",
        "kl_div",
        {"student_logits": {"dtype": "float32", "shape": [1, 1], "data": "@@@@"}, "teacher_logits": [[1.0]]},
        422,
        "student_logits",
    ),
    (
        "base64 dtype",
        "kl_div",
        {"student_logits": {"dtype": "int8", "shape": [1, 1], "data": b64(b"\0")}, "teacher_logits": [[1.0]]},
        422,
        "student_logits",
    ),
    (
        "base64 extra key",
        "kl_div",
        {"student_logits": {"dtype": "float32", "shape": [1], "data": b64(b"\0" * 4), "order": "C"}, "teacher_logits": [1.0]},
        422,
        "student_logits",
    ),
    (
        "nan in binary",
        "kl_div",
        {"student_logits": {"dtype": "float32", "shape": [1, 2], "data": b64(b"\x00\x00\xc0\x7f" * 2)}, "teacher_logits": [[1.0, 2.0]]},
        422,
        "student_logits",
    ),
    (
        "term reduction none",
        "distill",
        {"student_logits": S, "terms": [{"loss": "kl_div", "teacher_logits": T, "reduction": "none"}]},
        422,
        "terms.0.reduction",
    ),
    ("unknown term loss", "distill", {"student_logits": S, "terms": [{"loss": "mse", "teacher_logits": T}]}, 422, "terms.0.loss"),
    ("term without loss", "distill", {"student_logits": S, "terms": [{"teacher_logits": T}]}, 422, "terms.0.loss"),
    ("bad term label", "distill", {"student_logits": S, "terms": [{"loss": "cross_entropy", "labels": [0, 9]}]}, 422, "terms.0.labels"),
    ("no terms", "distill", {"student_logits": S, "terms": []}, 422, "terms"),
]


@pytest.mark.parametrize(("route", "body", "status", "field"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_a_named_4xx(client, route, body, status, field):
    response = client.post(f"/v1/{route}", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["type"].startswith("https://") and problem["title"] and problem["detail"]
    assert problem["field"] == field


def test_nan_and_infinity_tokens_are_malformed_json(client):
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        response = client.post(
            "/v1/kl_div",
            content=b'{"student_logits": [[' + token + b', 1.0]], "teacher_logits": [[1.0, 1.0]]}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400, token
        assert response.json()["status"] == 400


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"3", b"", b"{", b"not json"])
def test_body_must_be_a_json_object(client, content):
    response = client.post("/v1/kl_div", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_index_of_bad_value_is_reported(client):
    response = client.post("/v1/kl_div", json={"student_logits": S, "teacher_probs": [[0.2, 0.3, 0.5], [0.1, 1.5, 0.8]]})
    assert response.json()["index"] == [1, 1]


def test_body_limit_by_content_length_and_while_streaming():
    with make_client(device="cpu", max_body_bytes=1000) as small:
        big = b'{"student_logits": [' + b"1.0, " * 400 + b'1.0], "teacher_logits": [1.0]}'
        response = small.post("/v1/kl_div", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413

        def chunks():
            for _ in range(50):
                yield b" " * 100

        response = small.post("/v1/kl_div", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["title"] == "Request body too large"


def test_tensor_element_limit():
    with make_client(device="cpu", max_tensor_elements=10) as small:
        response = small.post("/v1/kl_div", json={"student_logits": [[0.0] * 11], "teacher_logits": [[0.0] * 11]})
        assert response.status_code == 413 and response.json()["field"] == "student_logits"
        binary = {"dtype": "float32", "shape": [1000, 1000], "data": ""}
        response = small.post("/v1/kl_div", json={"student_logits": binary, "teacher_logits": [[0.0]]})
        assert response.status_code == 413


def test_float16_overflow_in_json_is_an_error_not_null(client):
    body = {
        "student_probs": {"dtype": "float16", "shape": [1, 2], "data": b64(b"\x00\x00\x00\x3c")},
        "teacher_probs": [[1.0, 0.0]],
        "reduction": "sum",
        "response_encoding": "json",
    }
    response = client.post("/v1/bce", json=body)
    assert response.status_code == 422 and response.json()["field"] == "grad"


def test_unknown_route_and_method_are_problems(client):
    assert client.get("/v1/nope").headers["content-type"] == "application/problem+json"
    assert client.get("/v1/kl_div").status_code == 405


def test_request_validation_errors_from_fastapi_are_problems():
    from fastapi import FastAPI, Query
    from fastapi.testclient import TestClient

    from service.http import problems

    app = FastAPI()
    problems.install(app)

    @app.get("/items")
    def items(count: int = Query(...)) -> dict:
        return {"count": count}

    response = TestClient(app).get("/items", params={"count": "many"})
    assert response.status_code == 422 and response.json()["field"] == "query.count"


def test_every_domain_error_has_a_mapped_problem():
    from distill import DeviceMemoryError, InputError, QueueFull
    from service import errors
    from service.http.problems import PROBLEMS, problem_for

    refusals = [
        cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.Refused) and cls is not errors.Refused
    ]
    assert set(refusals) | {InputError, QueueFull, DeviceMemoryError} == set(PROBLEMS)
    for cls in refusals:
        problem = problem_for(cls("what went wrong", field="x"))
        assert problem.status == PROBLEMS[cls].status and problem.field == "x" and problem.body()["detail"] == "what went wrong"
    assert problem_for(InputError("labels", "bad", (1,))).body()["index"] == [1]
    assert problem_for(QueueFull("full")).headers["Retry-After"] == "1"
    assert problem_for(RuntimeError("a bug")).status == 500


def post_raw(client, route: str, text: str):
    return client.post(f"/v1/{route}", content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "text",
    [
        '{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0]], "x": ' + "[" * 1100 + "]" * 1100 + "}",
        '{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0]], "x": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}",
        '{"student_logits": [[1.0]], "teacher_logits": [[1.0]], "x": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}",
    ],
    ids=["deep lists", "deep objects", "objects past the cap"],
)
def test_unreadable_json_is_a_400_not_a_500(client, text):
    response = post_raw(client, "kl_div", text)
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json", response.text


@pytest.mark.parametrize(
    ("route", "text", "field", "shown"),
    [
        ("kl_div", '{"a": 123456789012345678901234567890}', "a", "123456789012345678901234567890"),
        ("kl_div", '{"student_logits": [[1.0]], "teacher_logits": [[1]], "temperature": 1' + "0" * 20 + "}", "temperature", "1" + "0" * 20),
        ("kl_div", '{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0], [3.0, -1e400]]}', "teacher_logits", "-1e400 at [1, 1]"),
        ("cross_entropy", '{"student_logits": [[1.0, 2.0]], "labels": [18446744073709551616]}', "labels", "18446744073709551616 at [0]"),
        (
            "distill",
            '{"student_logits": [[1.0, 2.0]], "note": "1e999", '
            '"terms": [{"loss": "kl_div", "teacher_logits": [[1.0, 2.0]], "temperature": 2e308}]}',
            "terms.0.temperature",
            "2e308",
        ),
    ],
    ids=["big integer", "big integer option", "float beyond float64 in a tensor", "label beyond 64 bits", "option in a term"],
)
def test_a_number_beyond_64_bits_and_float64_is_named(client, route, text, field, shown):
    response = post_raw(client, route, text)
    problem = response.json()
    assert response.status_code == 422 and problem["type"].endswith("/number-out-of-range"), response.text
    assert problem["field"] == field and shown in problem["detail"]
    if " at [" in shown:  # inside a tensor: the position is also the problem's index, as for other element-wise errors
        assert problem["index"] == json.loads(shown.split(" at ", 1)[1])


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1, 2]], "temperature": -9223372036854775809}', "temperature"),
        ('{"student_logits": [[2.0, -9999999999999999999]], "teacher_logits": [[1, 2]]}', "student_logits"),
        ('{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1, 2]], "temperature": 1' + "0" * 5000 + "}", "temperature"),
    ],
    ids=["just below int64", "in a tensor, both readers alike", "beyond int()'s 4,300 digits"],
)
def test_integers_just_beyond_64_bits_are_named_on_both_readers(client, text, field):
    response = post_raw(client, "kl_div", text)
    assert response.status_code == 422 and response.json()["field"] == field, response.text


@pytest.mark.parametrize(
    "shape",
    [[0, 4294967296, 4294967296], [4294967296, 4294967296, 0], [0, 9223372036854775807, 9223372036854775807], [9007199254740993]],
)
def test_binary_dimensions_are_bounded_even_without_elements(client, shape):
    binary = {"dtype": "float32", "shape": shape, "data": ""}
    response = client.post("/v1/kl_div", json={"student_logits": [[1.0, 2.0]], "teacher_logits": binary})
    assert response.status_code == 413 and response.json()["field"] == "teacher_logits", response.text


@pytest.mark.parametrize("content", [b"1e400", b"[1e400]"])
def test_a_number_out_of_range_outside_an_object_is_malformed(client, content):
    response = client.post("/v1/kl_div", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "field" not in response.json()


def test_tensors_have_at_most_64_dimensions(client):
    nested = "[" * 65 + "1.0" + "]" * 65
    response = post_raw(client, "kl_div", f'{{"student_logits": {nested}, "teacher_logits": {nested}}}')
    assert response.status_code == 422 and response.json()["field"] == "student_logits" and "64 dimensions" in response.json()["detail"]
    binary = {"dtype": "float32", "shape": [1] * 65, "data": b64(b"\0" * 4)}
    response = client.post("/v1/kl_div", json={"student_logits": binary, "teacher_logits": [[1.0]]})
    assert response.status_code == 422 and response.json()["field"] == "student_logits"


def test_a_dtype_that_is_not_a_string_is_named(client):
    binary = {"dtype": {"a": 1}, "shape": [1, 2], "data": b64(b"\0" * 8)}
    response = client.post("/v1/kl_div", json={"student_logits": binary, "teacher_logits": [[1.0, 2.0]]})
    problem = response.json()
    assert response.status_code == 422 and problem["field"] == "student_logits" and "object at 0x" not in problem["detail"]


@pytest.mark.parametrize("value", [1.4e154, 1e7, 1e-7, 0.0])
def test_temperature_outside_its_range_is_named(client, value):
    response = client.post("/v1/kl_div", json={"student_logits": S, "teacher_logits": T, "temperature": value})
    assert response.status_code == 422 and response.json()["field"] == "temperature"


def test_coefficient_outside_its_range_is_named(client):
    terms = [{"loss": "kl_div", "teacher_logits": T}, {"loss": "tvd", "teacher_logits": T, "coefficient": 1e39}]
    response = client.post("/v1/distill", json={"student_logits": S, "terms": terms})
    assert response.status_code == 422 and response.json()["field"] == "terms.1.coefficient"


def test_an_unexpected_error_is_one_logged_500_and_the_connection_stays_usable(caplog):
    import http.client

    from fastapi import FastAPI

    from service.http import problems
    from tests.live import threaded_server

    app = FastAPI()
    problems.install(app)

    @app.get("/bug")
    def bug() -> dict:
        raise RuntimeError("a bug")

    @app.get("/fine")
    def fine() -> dict:
        return {"ok": True}

    with threaded_server(app) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/bug")
        answer = connection.getresponse()
        assert answer.status == 500 and answer.getheader("content-type") == "application/problem+json"
        answer.read()
        connection.request("GET", "/fine")  # the same keep-alive connection
        assert connection.getresponse().status == 200
        connection.close()
    assert sum("unhandled error on GET /bug" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"student_logits": S, "teacher_logits": T, "temperature": "2"}, "temperature"),
        ({"student_logits": S, "teacher_logits": T, "compute_grad": "false"}, "compute_grad"),
        ({"student_logits": S, "teacher_logits": T, "scale_t2": 1}, "scale_t2"),
        ({"student_logits": S, "labels": [0, 1], "ignore_index": "2"}, "ignore_index"),
    ],
    ids=["string temperature", "string flag", "number flag", "string integer"],
)
def test_strings_are_not_numbers_or_booleans(client, body, field):
    route = "cross_entropy" if "labels" in body else "kl_div"
    response = client.post(f"/v1/{route}", json=body)
    assert response.status_code == 422 and response.json()["field"] == field


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"student_logits": [[1.0, 2.0]], "student_logits": [[3.0, 4.0]], "teacher_logits": [[1.0, 2.0]]}', "student_logits"),
        ('{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0]], "temperature": 2, "temperature": 3}', "temperature"),
    ],
)
def test_a_key_given_twice_is_named(client, text, field):
    response = post_raw(client, "kl_div", text)
    assert response.status_code == 422 and response.json()["field"] == field and "more than once" in response.json()["detail"]


def test_a_key_given_twice_in_a_term_is_named_with_its_path(client):
    text = '{"student_logits": [[1.0, 2.0]], "terms": [{"loss": "kl_div", "loss": "bce", "teacher_logits": [[1.0, 2.0]]}]}'
    response = post_raw(client, "distill", text)
    assert response.status_code == 422 and response.json()["field"] == "terms.0.loss"


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "application/json", "content-encoding": "gzip"},
    ],
)
def test_bodies_that_are_not_plain_json_are_415(client, headers):
    response = client.post("/v1/kl_div", content=b'{"student_logits": [[1.0]], "teacher_logits": [[1.0]]}', headers=headers)
    assert response.status_code == 415 and response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "headers", [{}, {"content-type": "application/json; charset=utf-8"}, {"content-type": "application/vnd.distill+json"}]
)
def test_json_bodies_are_read_whatever_their_json_media_type(client, headers):
    response = client.post("/v1/kl_div", content=b'{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 0.0]]}', headers=headers)
    assert response.status_code == 200, response.text


def test_class_weights_that_cancel_are_refused(client):
    response = client.post("/v1/cross_entropy", json={"student_logits": S, "labels": [0, 2], "weight": [1.0, 0.0, -1.0]})
    assert response.status_code == 422 and response.json()["field"] == "weight"
    summed = client.post("/v1/cross_entropy", json={"student_logits": S, "labels": [0, 2], "weight": [1.0, 0.0, -1.0], "reduction": "sum"})
    assert summed.status_code == 200


def test_a_body_of_many_keys_is_refused_at_once_and_briefly(client):
    import time

    keys = ", ".join(f'"k{index}": {index}' for index in range(100_000))
    text = f'{{{keys}, "student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0]]}}'
    start = time.perf_counter()
    response = post_raw(client, "kl_div", text)
    assert time.perf_counter() - start < 5.0  # was 16 s: a lookup per key scanned the object
    assert response.status_code == 413 and len(response.content) < 1024


def test_error_bodies_stay_small_whatever_the_body(client):
    huge_key = "x" * (10 << 20)
    response = post_raw(client, "kl_div", f'{{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0]], "{huge_key}": 1}}')
    assert response.status_code == 422 and len(response.content) < 64 << 10
    many = ", ".join(f'"unknown{index}": {index}' for index in range(250))
    response = post_raw(client, "kl_div", f'{{"student_logits": [[1.0, 2.0]], "teacher_logits": [[1.0, 2.0]], {many}}}')
    assert response.status_code == 422 and len(response.json()["errors"]) <= 20 and len(response.content) < 64 << 10
    twice = post_raw(client, "kl_div", f'{{"{huge_key}": 1, "{huge_key}": 2}}')
    assert twice.status_code == 422 and len(twice.content) < 64 << 10


def test_a_stalled_upload_is_a_408_and_an_abort_is_counted_apart(caplog):
    import socket
    import time

    import httpx

    from service.app import create_app
    from service.settings import Settings
    from tests.live import threaded_server

    head = b"POST /v1/kl_div HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    with threaded_server(create_app(Settings(device="cpu", body_timeout_s=0.5))) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(head + b'{"student_logits": ')
            start = time.monotonic()
            answer = stalled.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5, answer[:200]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as leaving:
            leaving.sendall(head + b'{"student_logits": ')
        time.sleep(1.0)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("distill_requests_total") and "/v1/kl_div" in line]
    assert any('status="408"' in line for line in counted) and any('status="499"' in line for line in counted), counted
    assert not any('status="500"' in line for line in counted)
    assert not any("unhandled error" in record.getMessage() for record in caplog.records)


def test_bodies_in_flight_are_bounded_by_a_byte_budget():
    import socket
    import time

    import httpx

    from service.app import create_app
    from service.settings import Settings
    from tests.live import threaded_server

    small = {"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.5, 0.5]]}
    from service.codec.budget import MEMORY_PER_BODY_BYTE

    budget = math.ceil(10_000 * MEMORY_PER_BODY_BYTE)  # the memory of 10,000 body bytes in flight
    settings = Settings(device="cpu", max_body_bytes=20_000, max_inflight_bytes=budget, body_timeout_s=2.0)
    with threaded_server(create_app(settings)) as port:
        url = f"http://127.0.0.1:{port}/v1/kl_div"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /v1/kl_div HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 9000\r\n\r\n{")
            time.sleep(0.3)
            refused = httpx.post(url, content=b" " * 1500 + httpx.Request("POST", url, json=small).read())
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
            assert httpx.post(url, json=small).status_code == 200  # a small body still fits
        time.sleep(2.5)  # the stalled upload times out and gives its bytes back
        assert httpx.post(url, content=b" " * 1500 + httpx.Request("POST", url, json=small).read()).status_code == 200
        too_big = httpx.post(url, content=b" " * 15_000 + httpx.Request("POST", url, json=small).read())
        assert too_big.status_code == 413 and "in-flight limit" in too_big.json()["detail"]  # within the body limit, over the whole budget


def test_ignore_index_beyond_int64_is_named(client):
    response = client.post("/v1/cross_entropy", json={"student_logits": S, "labels": [-1, 0], "ignore_index": 2**64 - 1})
    assert response.status_code == 422 and response.json()["field"] == "ignore_index"


@pytest.mark.parametrize(
    ("headers", "status"),
    [("Content-Type: application/json\r\nContent-Length: 5000", 413), ("Content-Type: text/plain\r\nContent-Length: 500", 415)],
)
def test_a_body_refused_before_it_is_read_closes_the_connection(headers, status):
    """The unread body would otherwise be taken for the next request on the connection."""
    import socket

    from service.app import create_app
    from service.settings import Settings
    from tests.live import threaded_server

    with (
        threaded_server(create_app(Settings(device="cpu", max_body_bytes=1000))) as port,
        socket.create_connection(("127.0.0.1", port), timeout=10) as connection,
    ):
        connection.sendall(f"POST /v1/kl_div HTTP/1.1\r\nHost: t\r\n{headers}\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):  # the server closes the connection
            answer += chunk
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"connection: close" in answer.lower()
