"""The combined objective against the same weighted sum computed with autograd."""

from __future__ import annotations

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
