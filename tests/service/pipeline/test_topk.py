"""Top-k teachers over HTTP: both encodings, as a term of the combined objective, and their 422s."""

from __future__ import annotations

import pytest
import torch

import distill
from distill import Term
from tests.service.conftest import binary, from_binary
from tests.tolerances import assert_close

GEN = torch.Generator().manual_seed(11)
STUDENT = torch.randn(2, 3, 50, generator=GEN)
TEACHER_LOG_PROBS = torch.log_softmax(torch.randn(2, 3, 50, generator=GEN) * 2, -1)
INDICES = TEACHER_LOG_PROBS.topk(8, dim=-1).indices.flip(-1)
VALUES = TEACHER_LOG_PROBS.gather(-1, INDICES)


@pytest.mark.parametrize("encoding", ["json", "base64"])
@pytest.mark.parametrize("name", ["kl_div", "jsd", "skew_reverse_kl", "cross_entropy"])
def test_top_k_answers_what_the_engine_computes(client, encoding, name):
    encode = (lambda tensor: tensor.tolist()) if encoding == "json" else binary
    decode = (lambda value: torch.tensor(value)) if encoding == "json" else from_binary
    body = {
        "student_logits": encode(STUDENT),
        "teacher_topk_indices": encode(INDICES.int() if encoding == "base64" else INDICES),
        "teacher_topk_log_probs": encode(VALUES),
        "missing_mass": "tail",
        "temperature": 2.0,
    }
    response = client.post(f"/v1/{name}", json=body)
    assert response.status_code == 200, response.text
    expected = getattr(distill, name)(
        STUDENT, teacher_topk_indices=INDICES, teacher_topk_log_probs=VALUES, missing_mass="tail", temperature=2.0
    )
    answer = response.json()
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(decode(answer["grad"]), expected.grad, torch.float32)


def test_none_answers_one_value_per_row(client):
    body = {
        "student_logits": STUDENT.tolist(),
        "teacher_topk_indices": INDICES.tolist(),
        "teacher_topk_logits": VALUES.tolist(),
        "missing_mass": "renormalize",
        "reduction": "none",
    }
    answer = client.post("/v1/kl_div", json=body).json()
    assert torch.tensor(answer["loss"]).shape == (2, 3)


def test_a_top_k_term_in_the_combined_objective(client):
    labels = torch.tensor([[1, 2, -100], [4, -100, 0]])
    body = {
        "student_logits": binary(STUDENT),
        "terms": [
            {
                "loss": "kl_div",
                "coefficient": 0.5,
                "teacher_topk_indices": INDICES.tolist(),
                "teacher_topk_log_probs": binary(VALUES),
                "missing_mass": "renormalize",
                "temperature": 2.0,
            },
            {"loss": "cross_entropy", "coefficient": 0.5, "labels": labels.tolist()},
        ],
    }
    response = client.post("/v1/distill", json=body)
    assert response.status_code == 200, response.text
    expected = distill.distill(
        STUDENT,
        [
            Term.kl_div(0.5, teacher_topk_indices=INDICES, teacher_topk_log_probs=VALUES, missing_mass="renormalize", temperature=2.0),
            Term.cross_entropy(0.5, labels=labels),
        ],
    )
    assert response.json()["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(from_binary(response.json()["grad"]), expected.grad, torch.float32)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"missing_mass": None}, "missing_mass", "is required"),
        ({"missing_mass": "drop"}, "missing_mass", "renormalize"),
        ({"teacher_topk_indices": [[[0, 0, 1, 2, 3, 4, 5, 6]] * 3] * 2}, "teacher_topk_indices", "repeats"),
        ({"teacher_topk_indices": [[[0.5] * 8] * 3] * 2}, "teacher_topk_indices", "integer"),
        ({"teacher_topk_log_probs": (-VALUES).tolist()}, "teacher_topk_log_probs", "<= 0"),
        ({"teacher_topk_logits": VALUES.tolist()}, "teacher_topk_logits", "both given"),
    ],
)
def test_bad_top_k_teachers_are_422_naming_the_field(client, change, field, reason):
    body = {
        "student_logits": STUDENT.tolist(),
        "teacher_topk_indices": INDICES.tolist(),
        "teacher_topk_log_probs": VALUES.tolist(),
        "missing_mass": "tail",
    } | change
    response = client.post("/v1/reverse_kl", json={key: value for key, value in body.items() if value is not None})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field and reason in problem["detail"], problem


def test_an_infinite_reverse_kl_says_which_policy_keeps_it_finite(client):
    body = {
        "student_logits": STUDENT.tolist(),
        "teacher_topk_indices": INDICES.tolist(),
        "teacher_topk_log_probs": VALUES.tolist(),
        "missing_mass": "renormalize",
    }
    problem = client.post("/v1/reverse_kl", json=body).json()
    assert problem["status"] == 422 and problem["field"] == "missing_mass" and problem["index"] == [0, 0]
    assert "use missing_mass 'tail'" in problem["detail"]
