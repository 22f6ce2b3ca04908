"""The LLM divergences over HTTP: a GKD-style request, GKD's recipe as one objective, named errors."""

from __future__ import annotations

import math

import pytest
import torch

import distill
from tests.distill import reference
from tests.service.conftest import binary


def gkd_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 3, 11, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(2, 3, 11, generator=generator, dtype=torch.float64) * 2
    mask = torch.tensor([[True, True, False], [True, False, False]])
    return student, teacher, mask


def test_gkd_request_returns_the_formula_value(client):
    student, teacher, mask = gkd_inputs()
    body = {"student_logits": student.tolist(), "teacher_logits": teacher.tolist(), "mask": mask.tolist(), "beta": 0.5, "temperature": 2.0}
    response = client.post("/v1/jsd", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = reference.divergence("jsd", 0.5, student, teacher, "logits", T=2.0, scale_t2=True, reduction="batchmean", mask=mask)
    assert answer["normalizer"] == 3.0 and answer["reduction"] == "batchmean"
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=2e-6)
    grad = torch.tensor(answer["grad"], dtype=torch.float64)
    assert torch.all(grad[~mask] == 0)
    torch.testing.assert_close(grad, expected.grad, rtol=1e-5, atol=1e-7)


def test_gkd_recipe_is_one_objective(client):
    student, teacher, mask = gkd_inputs()
    labels = torch.tensor([[1, 4, 0], [7, 2, 3]])
    terms = [
        {"loss": "cross_entropy", "coefficient": 0.5, "labels": labels.tolist()},
        {"loss": "jsd", "coefficient": 0.5, "teacher_logits": binary(teacher.float()), "beta": 0.5, "temperature": 2.0},
    ]
    response = client.post("/v1/distill", json={"student_logits": binary(student.float()), "mask": mask.tolist(), "terms": terms})
    assert response.status_code == 200, response.text
    answer = response.json()
    ce = distill.cross_entropy(student.float(), labels=labels, mask=mask)
    jsd = distill.jsd(student.float(), teacher_logits=teacher.float(), beta=0.5, temperature=2.0, mask=mask)
    assert answer["loss"] == pytest.approx(0.5 * float(ce.loss) + 0.5 * float(jsd.loss), rel=1e-6)
    assert [term["name"] for term in answer["terms"]] == ["cross_entropy", "jsd"]


@pytest.mark.parametrize("route", ["jsd", "skew_kl", "skew_reverse_kl"])
def test_parameters_outside_the_unit_interval_are_named(client, route):
    field = "beta" if route == "jsd" else "alpha"
    response = client.post(f"/v1/{route}", json={"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.0, 1.0]], field: 1.5})
    assert response.status_code == 422 and response.json()["field"] == field


def test_infinite_reverse_kl_names_the_teacher_class(client):
    body = {"student_logits": [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], "teacher_probs": [[0.2, 0.3, 0.5], [0.5, 0.0, 0.5]]}
    response = client.post("/v1/reverse_kl", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["field"] == "teacher_probs" and problem["index"] == [1, 1] and "infinite" in problem["detail"]


def test_masked_vocabulary_is_finite_in_every_divergence(client):
    student = binary(torch.tensor([[1.0, -math.inf, 3.0]]))  # JSON has no -inf: the student goes as base64
    body = {"student_logits": student, "teacher_probs": [[0.4, 0.0, 0.6]], "response_encoding": "json"}
    for route in ("jsd", "reverse_kl", "skew_kl", "skew_reverse_kl", "tvd"):
        response = client.post(f"/v1/{route}", json=body)
        assert response.status_code == 200, (route, response.text)
        assert response.json()["grad"][0][1] == 0.0


def test_a_coefficient_beyond_float32_is_a_client_error_not_a_server_error(client):
    student = [[0.0, 1.0, 2.0], [0.5, 0.1, -0.5]]
    terms = [
        {"loss": "jsd", "teacher_logits": student},
        {"loss": "tvd", "teacher_probs": [[0.2, 0.3, 0.5], [0.4, 0.2, 0.4]], "coefficient": 1e39},
    ]
    response = client.post("/v1/distill", json={"student_logits": student, "terms": terms})
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
