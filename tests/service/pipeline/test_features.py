"""Feature terms over HTTP: named student tensors in /v1/distill, their gradients, and their errors."""

from __future__ import annotations

import pytest
import torch

import distill
from tests.service.conftest import binary, from_binary
from tests.service.distilbert import HIDDEN, LABELS, LOGITS, MASK, TEACHER, TEACHER_HIDDEN, body
from tests.service.distilbert import expected as objective
from tests.tolerances import assert_close


def distilbert_body(encode) -> dict:
    """The objective with its float tensors through ``encode`` and the mask and labels as lists."""
    return body(encode(LOGITS), encode(HIDDEN), encode(TEACHER), LABELS.tolist(), encode(TEACHER_HIDDEN), MASK.tolist())


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_distilbert_objective_answers_what_the_engine_computes(client, encoding):
    encode = (lambda tensor: tensor.tolist()) if encoding == "json" else binary
    decode = (lambda value: torch.tensor(value)) if encoding == "json" else from_binary
    response = client.post("/v1/distill", json=distilbert_body(encode))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = objective()
    assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(decode(body["grad"]), expected.grad, torch.float32)
    assert set(body["grads"]) == {"hidden"}
    assert_close(decode(body["grads"]["hidden"]), expected.grads["hidden"], torch.float32)
    assert [term["student"] for term in body["terms"]] == ["student_logits", "student_logits", "hidden"]


def test_standalone_feature_loss_matches_the_engine(client):
    response = client.post("/v1/smooth_l1_loss", json={"student": binary(HIDDEN), "teacher": binary(TEACHER_HIDDEN), "beta": 0.5})
    assert response.status_code == 200, response.text
    expected = distill.smooth_l1_loss(HIDDEN, teacher=TEACHER_HIDDEN, beta=0.5)
    assert response.json()["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert torch.equal(from_binary(response.json()["grad"]), expected.grad)


def test_without_named_students_grads_is_empty_and_no_gradient_means_none(client):
    body = {"student_logits": LOGITS.tolist(), "terms": [{"loss": "mse_loss", "teacher": TEACHER.tolist()}]}
    assert client.post("/v1/distill", json=body).json()["grads"] == {}
    answer = client.post("/v1/distill", json=distilbert_body(binary) | {"compute_grad": False}).json()
    assert answer["grad"] is None and answer["grads"] == {}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda body: body["terms"][2].update(student="hiden"), "terms.2.student", "(hidden)"),
        (lambda body: body["terms"][2].update(student="a.b"), "terms.2.student", "a letter or _"),
        (lambda body: body.update(student_features={"hid den": HIDDEN.tolist()}), "student_features", "got 'hid den'"),
        (lambda body: body["student_features"].update(student_logits=HIDDEN.tolist()), "student_features", "another name"),
        (lambda body: body["student_features"].update(hidden=[["x"]]), "student_features.hidden", "numbers"),
        (lambda body: body["student_features"].update(hidden=HIDDEN[:, :2].tolist()), "mask", "terms.2 applies to student_features.hidden"),
        (lambda body: body["terms"][2].update(teacher=TEACHER_HIDDEN[:1].tolist()), "terms.2.teacher", "shape"),
        (lambda body: body["terms"][2].update(reduction="none"), "terms.2.reduction", "'mean' or 'sum'"),
        (
            lambda body: body.update(student_features={f"f{index}": [1.0] for index in range(17)}),
            "student_features",
            "at most 16",
        ),
    ],
)
def test_bad_named_students_are_422_naming_the_field(client, change, field, reason):
    body = distilbert_body(lambda tensor: tensor.tolist())
    change(body)
    response = client.post("/v1/distill", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field and reason in problem["detail"], problem


def test_each_gradient_mirrors_its_own_tensors_encoding(client):
    body = {
        "student_logits": LOGITS.tolist(),
        "student_features": {"hidden": binary(HIDDEN), "listed": HIDDEN.tolist()},
        "terms": [
            {"loss": "mse_loss", "student": "hidden", "teacher": TEACHER_HIDDEN.tolist()},
            {"loss": "mse_loss", "student": "listed", "teacher": TEACHER_HIDDEN.tolist()},
        ],
    }
    answer = client.post("/v1/distill", json=body).json()
    assert isinstance(answer["grad"], list) and isinstance(answer["grads"]["listed"], list)
    assert set(answer["grads"]["hidden"]) == {"dtype", "shape", "data"}
    forced = client.post("/v1/distill", json=body | {"response_encoding": "json"}).json()
    assert isinstance(forced["grads"]["hidden"], list)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda body, big: body["terms"][0].update(teacher_logits=big), "terms.0.teacher_logits"),
        (lambda body, big: body["student_features"].update(hidden=big), "student_features.hidden"),
    ],
)
def test_a_nested_tensor_over_the_element_limit_is_413_naming_its_path(client, change, field):
    body = distilbert_body(lambda tensor: tensor.tolist())
    change(body, {"dtype": "float32", "shape": [1 << 30], "data": ""})
    response = client.post("/v1/distill", json=body)
    assert response.status_code == 413 and response.json()["field"] == field, response.text
