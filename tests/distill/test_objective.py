"""The combined objective against the same weighted sum computed with autograd."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import distill as engine
from distill import InputError, Term, distill, hinton
from tests.distill import inputs
from tests.tolerances import assert_close


def test_hinton_matches_autograd():
    student = inputs.logits((2, 7, 33), torch.float64, 1)
    teacher = inputs.logits((2, 7, 33), torch.float64, 2)
    labels = inputs.labels((2, 7, 33), 3)
    result = hinton(student, teacher, labels, alpha=0.3, temperature=4.0)

    leaf = student.clone().requires_grad_(True)
    rows, t = leaf.reshape(-1, 33), teacher.reshape(-1, 33)
    kl = F.kl_div(F.log_softmax(rows / 4, -1), F.softmax(t / 4, -1), reduction="batchmean") * 16
    expected = 0.3 * kl + 0.7 * F.cross_entropy(rows, labels.reshape(-1))
    (grad,) = torch.autograd.grad(expected, leaf)
    assert_close(result.loss, expected.detach(), torch.float64)
    assert_close(result.grad, grad, torch.float64)
    assert [term.loss for term in result.terms] == ["kl_div", "cross_entropy"]


def test_three_terms_with_mask_and_term_gradients():
    shape = (6, 20)
    student = inputs.logits(shape, torch.float64, 4)
    teacher = inputs.logits(shape, torch.float64, 5)
    labels = inputs.labels(shape, 6)
    mask = torch.tensor([True, True, False, True, False, True])
    terms = [
        Term.kl_div(0.5, teacher_logits=teacher, temperature=2.0),
        Term.bce(0.2, teacher_logits=teacher, pos_weight=torch.full((20,), 2.0, dtype=torch.float64)),
        Term.cross_entropy(0.3, labels=labels, label_smoothing=0.1),
    ]
    result = distill(student, terms, mask=mask, term_grads=True)

    leaf = student.clone().requires_grad_(True)
    rows, t, y = leaf[mask], teacher[mask], labels[mask]
    expected = (
        0.5 * 4 * F.kl_div(F.log_softmax(rows / 2, -1), F.softmax(t / 2, -1), reduction="batchmean")
        + 0.2 * F.binary_cross_entropy_with_logits(rows, torch.sigmoid(t), pos_weight=torch.full((20,), 2.0, dtype=torch.float64))
        + 0.3 * F.cross_entropy(rows, y, label_smoothing=0.1)
    )
    (grad,) = torch.autograd.grad(expected, leaf)
    assert_close(result.loss, expected.detach(), torch.float64)
    assert_close(result.grad, grad, torch.float64)
    summed = sum(term.coefficient * term.result.grad for term in result.terms)
    assert_close(summed, grad, torch.float64)


def test_reduction_none_rejected_in_combined_objective():
    with pytest.raises(InputError) as error:
        distill(torch.randn(2, 3), [Term.kl_div(teacher_logits=torch.randn(2, 3), reduction="none")])
    assert error.value.argument == "terms.0.reduction"


def test_empty_terms_rejected():
    with pytest.raises(InputError):
        distill(torch.randn(2, 3), [])


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s, t: engine.kl_div(s, teacher_logits=t, temperature="2"), "temperature"),
        (lambda s, t: engine.kl_div(s, teacher_logits=t, temperature=True), "temperature"),
        (lambda s, t: engine.cross_entropy(s, teacher_logits=t, label_smoothing="0.1"), "label_smoothing"),
        (lambda s, t: engine.jsd(s, teacher_logits=t, beta=False), "beta"),
        (lambda s, t: engine.distill(s, [engine.Term.kl_div("1", teacher_logits=t)]), "terms.0.coefficient"),
    ],
    ids=["string temperature", "boolean temperature", "string smoothing", "boolean beta", "string coefficient"],
)
def test_options_are_numbers_in_the_engine_too(call, field):
    """As strict as the service: a string or a boolean is not a number."""
    student, teacher = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(InputError) as error:
        call(student, teacher)
    assert error.value.argument == field


def distilbert_inputs(dtype: torch.dtype = torch.float64):
    """A (B, S) = (2, 5) batch: vocabulary 30, hidden size 16, padding at the ends, masked-LM labels on a few tokens."""
    batch, length, vocabulary, hidden = 2, 5, 30, 16
    student, teacher = inputs.logits((batch, length, vocabulary), dtype, 11), inputs.logits((batch, length, vocabulary), dtype, 12)
    student_hidden, teacher_hidden = inputs.logits((batch, length, hidden), dtype, 13), inputs.logits((batch, length, hidden), dtype, 14)
    attention = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    labels = inputs.labels((batch, length, vocabulary), 15)
    labels[torch.tensor([[False, True, False, True, True], [True, False, True, True, True]])] = -100
    return student, teacher, student_hidden, teacher_hidden, attention, labels


def distilbert_terms(teacher, teacher_hidden, labels, temperature=2.0):
    """DistilBERT (Sanh et al. 2019): alpha_ce = 5 (KL at T, × T²), alpha_mlm = 2 (CE), alpha_cos = 1 (hidden states)."""
    return [
        Term.kl_div(5.0, teacher_logits=teacher, temperature=temperature),
        Term.cross_entropy(2.0, labels=labels),
        Term.cosine_embedding_loss(1.0, student="hidden", teacher=teacher_hidden),
    ]


def test_distilbert_objective_matches_autograd():
    """DistilBERT's loss as its distiller computes it: tokens selected by the attention mask for the KL and
    the cosine, `KLDivLoss(reduction="batchmean")` on the selected (tokens, V) × T², cross-entropy with
    ignore_index -100, `CosineEmbeddingLoss` with target 1 on the selected hidden states."""
    student, teacher, student_hidden, teacher_hidden, attention, labels = distilbert_inputs()
    result = distill(
        student,
        distilbert_terms(teacher, teacher_hidden, labels),
        student_features={"hidden": student_hidden},
        mask=attention,
        term_grads=True,
    )

    logits, hidden = student.clone().requires_grad_(True), student_hidden.clone().requires_grad_(True)
    s, t = logits[attention], teacher[attention]
    kl = F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean") * 4
    mlm = F.cross_entropy(logits[attention], labels[attention], ignore_index=-100)
    h, th = hidden[attention], teacher_hidden[attention]
    cos = F.cosine_embedding_loss(h, th, torch.ones(h.shape[0], dtype=h.dtype))
    expected = 5.0 * kl + 2.0 * mlm + 1.0 * cos
    grad, hidden_grad = torch.autograd.grad(expected, (logits, hidden))
    assert_close(result.loss, expected.detach(), torch.float64)
    assert_close(result.grad, grad, torch.float64)
    assert set(result.grads) == {"hidden"}
    assert_close(result.grads["hidden"], hidden_grad, torch.float64)
    assert [term.student for term in result.terms] == ["student_logits", "student_logits", "hidden"]
    assert_close(result.terms[2].result.loss, cos.detach(), torch.float64)
    assert_close(result.terms[2].result.grad, hidden_grad, torch.float64)
    assert torch.all(result.grads["hidden"][~attention] == 0)


def test_feature_terms_on_several_students_and_on_the_logits():
    student = inputs.logits((4, 6), torch.float64, 20)
    features = {"hidden": inputs.logits((4, 8), torch.float64, 21), "attention-map": inputs.logits((4, 3, 3), torch.float64, 22)}
    targets = {name: inputs.logits(tuple(value.shape), torch.float64, 30 + index) for index, (name, value) in enumerate(features.items())}
    terms = [
        Term.mse_loss(0.5, teacher=targets["hidden"], student="hidden"),
        Term.smooth_l1_loss(2.0, teacher=targets["hidden"], student="hidden", beta=0.5, reduction="sum"),
        Term.l1_loss(1.5, teacher=targets["attention-map"], student="attention-map"),
        Term.mse_loss(0.25, teacher=student * 0.5),
    ]
    result = distill(student, terms, student_features=features)
    leaves = {name: value.clone().requires_grad_(True) for name, value in {"student_logits": student, **features}.items()}
    expected = (
        0.5 * F.mse_loss(leaves["hidden"], targets["hidden"])
        + 2.0 * F.smooth_l1_loss(leaves["hidden"], targets["hidden"], beta=0.5, reduction="sum")
        + 1.5 * F.l1_loss(leaves["attention-map"], targets["attention-map"])
        + 0.25 * F.mse_loss(leaves["student_logits"], student * 0.5)
    )
    grads = dict(zip(leaves, torch.autograd.grad(expected, tuple(leaves.values())), strict=True))
    assert_close(result.loss, expected.detach(), torch.float64)
    assert_close(result.grad, grads["student_logits"], torch.float64)
    for name in features:
        assert_close(result.grads[name], grads[name], torch.float64)


def test_a_student_no_term_applies_to_gets_a_zero_gradient():
    student, hidden = torch.randn(3, 4), torch.randn(3, 5)
    result = distill(student, [Term.mse_loss(teacher=torch.zeros(3, 5), student="hidden")], student_features={"hidden": hidden})
    assert torch.equal(result.grad, torch.zeros(3, 4))
    assert_close(result.grads["hidden"], 2 * hidden / 15, torch.float32)
    unused = distill(student, [Term.kl_div(teacher_logits=student)], student_features={"hidden": hidden})
    assert torch.equal(unused.grads["hidden"], torch.zeros(3, 5))
    assert distill(student, [Term.kl_div(teacher_logits=student)], student_features={"hidden": hidden}, compute_grad=False).grads == {}


@pytest.mark.parametrize(
    ("features", "term", "mask", "field", "reason"),
    [
        ({}, Term.mse_loss(teacher=torch.zeros(2, 3), student="hidden"), None, "terms.0.student", "(none given)"),
        ({"hidden": torch.zeros(2, 3)}, Term.mse_loss(teacher=torch.zeros(2, 3), student="hiden"), None, "terms.0.student", "(hidden)"),
        ({"hidden.0": torch.zeros(2, 3)}, Term.mse_loss(teacher=torch.zeros(2, 3)), None, "student_features", "identifier"),
        ({"student_logits": torch.zeros(2, 3)}, Term.mse_loss(teacher=torch.zeros(2, 3)), None, "student_features", "student_logits"),
        (
            {"hidden": torch.zeros(2, 3, dtype=torch.int64)},
            Term.mse_loss(teacher=torch.zeros(2, 3)),
            None,
            "student_features.hidden",
            "floating",
        ),
        (
            {"hidden": torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])},
            Term.mse_loss(teacher=torch.zeros(2, 3), student="hidden"),
            None,
            "student_features.hidden",
            "NaN",
        ),
        ({"hidden": torch.zeros(2, 3)}, Term.mse_loss(teacher=torch.zeros(2, 4), student="hidden"), None, "terms.0.teacher", "shape"),
        (
            {"hidden": torch.zeros(4, 3)},
            Term.mse_loss(teacher=torch.zeros(4, 3), student="hidden"),
            torch.ones(2, dtype=torch.bool),
            "mask",
            "terms.0 applies to student_features.hidden",
        ),
        (
            {"hidden": torch.zeros(2, 3)},
            Term.kl_div(teacher_logits=torch.zeros(2, 3), student="hidden", temperature=0.0),
            None,
            "terms.0.temperature",
            "must be in",
        ),
    ],
)
def test_feature_errors_name_the_field_as_the_request_does(features, term, mask, field, reason):
    with pytest.raises(InputError, match=re.escape(reason)) as error:
        distill(torch.zeros(2, 5), [term], student_features=features, mask=mask)
    assert error.value.argument == field


def test_a_feature_terms_messages_name_its_student():
    hidden = torch.tensor([[1e38, 0.0, 1.0]])
    term = Term.kl_div(teacher_logits=torch.zeros(1, 3), student="hidden", temperature=1e-6)
    with pytest.raises(InputError) as error:
        distill(torch.zeros(1, 2), [term], student_features={"hidden": hidden})
    assert error.value.argument == "terms.0.temperature" and "student_features.hidden / temperature" in error.value.reason
