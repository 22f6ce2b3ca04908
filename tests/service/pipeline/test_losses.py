"""Every endpoint answers exactly what the engine computes, in both encodings."""

from __future__ import annotations

import pytest
import torch

import distill
from tests.service.conftest import binary, from_binary
from tests.tolerances import assert_close

GEN = torch.Generator().manual_seed(0)
STUDENT = torch.randn(2, 3, 5, generator=GEN)
TEACHER = torch.randn(2, 3, 5, generator=GEN)
LABELS = torch.randint(0, 5, (2, 3), generator=GEN)
MASK = torch.tensor([[True, False, True], [True, True, False]])


def post(client, route, body):
    response = client.post(f"/v1/{route}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("encoding", ["json", "base64"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_kl_div(client, encoding, reduction):
    wire = (lambda t: t.tolist()) if encoding == "json" else binary
    body = post(
        client,
        "kl_div",
        {
            "student_logits": wire(STUDENT),
            "teacher_logits": wire(TEACHER),
            "temperature": 2.0,
            "reduction": reduction,
            "mask": MASK.tolist(),
        },
    )
    expected = distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=2.0, reduction=reduction, mask=MASK)
    grad = torch.tensor(body["grad"]) if encoding == "json" else from_binary(body["grad"])
    assert_close(grad, expected.grad, torch.float32)
    if reduction == "none":
        loss = torch.tensor(body["loss"]) if encoding == "json" else from_binary(body["loss"])
        assert_close(loss, expected.loss, torch.float32)
    else:
        assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
        assert body["normalizer"] == expected.normalizer
    assert body["loss_sum"] == pytest.approx(expected.loss_sum, rel=1e-6)


def test_bce_with_weights_and_probabilities(client):
    weight, pos_weight = torch.rand(5, generator=GEN), torch.rand(5, generator=GEN) * 2
    body = post(
        client,
        "bce",
        {
            "student_logits": STUDENT.tolist(),
            "teacher_logits": TEACHER.tolist(),
            "temperature": 2.0,
            "weight": weight.tolist(),
            "pos_weight": pos_weight.tolist(),
        },
    )
    expected = distill.bce(STUDENT, teacher_logits=TEACHER, temperature=2.0, weight=weight, pos_weight=pos_weight)
    assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(torch.tensor(body["grad"]), expected.grad, torch.float32)
    probs, targets = torch.sigmoid(STUDENT), torch.sigmoid(TEACHER)
    body = post(client, "bce", {"student_probs": probs.tolist(), "teacher_probs": targets.tolist(), "reduction": "sum"})
    expected = distill.bce(student_probs=probs, teacher_probs=targets, reduction="sum")
    assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)


@pytest.mark.parametrize("target", ["labels", "teacher_logits", "teacher_probs"])
def test_cross_entropy(client, target):
    value = {"labels": LABELS, "teacher_logits": TEACHER, "teacher_probs": torch.softmax(TEACHER, -1)}[target]
    options = {"label_smoothing": 0.1, "weight": torch.rand(5, generator=GEN)}
    body = post(
        client,
        "cross_entropy",
        {"student_logits": binary(STUDENT), target: binary(value), "label_smoothing": 0.1, "weight": options["weight"].tolist()},
    )
    expected = distill.cross_entropy(STUDENT, **{target: value}, **options)
    assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(from_binary(body["grad"]), expected.grad, torch.float32)


def test_distill_hinton_and_term_grads(client):
    body = post(
        client,
        "distill",
        {
            "student_logits": STUDENT.tolist(),
            "mask": MASK.tolist(),
            "term_grads": True,
            "terms": [
                {"loss": "kl_div", "coefficient": 0.7, "teacher_logits": TEACHER.tolist(), "temperature": 4.0},
                {"loss": "cross_entropy", "coefficient": 0.3, "labels": LABELS.tolist()},
            ],
        },
    )
    expected = distill.hinton(STUDENT, TEACHER, LABELS, alpha=0.7, temperature=4.0, mask=MASK)
    assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(torch.tensor(body["grad"]), expected.grad, torch.float32)
    assert [term["name"] for term in body["terms"]] == ["kl_div", "cross_entropy"]
    assert all(term["grad"] is not None for term in body["terms"])


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_dtypes_round_trip_in_base64(client, dtype):
    torch_dtype = getattr(torch, dtype)
    student, teacher = STUDENT.to(torch_dtype), TEACHER.to(torch_dtype)
    body = post(client, "kl_div", {"student_logits": binary(student), "teacher_logits": binary(teacher)})
    assert body["grad"]["dtype"] == dtype
    expected = distill.kl_div(student, teacher_logits=teacher)
    assert torch.equal(from_binary(body["grad"]), expected.grad)


def test_json_lists_take_the_request_dtype(client):
    body = post(
        client,
        "kl_div",
        {
            "student_logits": STUDENT.double().tolist(),
            "teacher_logits": TEACHER.double().tolist(),
            "dtype": "float64",
            "response_encoding": "base64",
        },
    )
    assert body["grad"]["dtype"] == "float64"
    expected = distill.kl_div(STUDENT.double(), teacher_logits=TEACHER.double())
    assert torch.equal(from_binary(body["grad"]), expected.grad)


def test_response_encoding_override_and_no_gradient(client):
    body = post(client, "kl_div", {"student_logits": binary(STUDENT), "teacher_logits": binary(TEACHER), "response_encoding": "json"})
    assert isinstance(body["grad"], list)
    body = post(client, "kl_div", {"student_logits": STUDENT.tolist(), "teacher_logits": TEACHER.tolist(), "compute_grad": False})
    assert body["grad"] is None


def test_one_dimensional_student_and_scalar_label(client):
    body = post(client, "cross_entropy", {"student_logits": [1.0, 2.0, 0.5], "labels": 1})
    expected = distill.cross_entropy(torch.tensor([1.0, 2.0, 0.5]), labels=torch.tensor(1))
    assert body["loss"] == pytest.approx(float(expected.loss), rel=1e-6)


def test_all_ignored_labels_answer_zero(client):
    body = post(client, "cross_entropy", {"student_logits": [[1.0, 2.0]], "labels": [-100]})
    assert body["loss"] == 0.0 and body["normalizer"] == 0.0
