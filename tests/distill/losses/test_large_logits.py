"""Softmax losses at large logits: float32 as accurate as PyTorch's own float32, at offsets up to 1e6.

Softmax losses are shift invariant, and PyTorch forms them from max-shifted logits; the engine must
not cancel a large logit against a large log-sum-exp. Errors are measured against float64 on the same
(float32) numbers, relative to PyTorch's float32 error there.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import distill
from tests.distill import inputs
from tests.tolerances import assert_as_accurate_as_torch

OFFSETS = [0.0, 1e3, 1e6]


def autograd(loss_of, student: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = student.detach().to(dtype).requires_grad_(True)
    loss = loss_of(leaf)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def check(ours, loss_of, student: torch.Tensor) -> None:
    exact = autograd(loss_of, student, torch.float64)
    theirs = autograd(loss_of, student, torch.float32)
    for mine, torch32, truth in zip((ours.loss, ours.grad), theirs, exact, strict=True):
        assert_as_accurate_as_torch(mine, torch32, truth)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_kl_div(offset, kind):
    student = inputs.logits((6, 300), torch.float32, 1) + offset
    raw = inputs.logits((6, 300), torch.float32, 2) - offset
    teacher = raw if kind == "logits" else torch.softmax(raw.double() / 2, -1).float()

    def reference(s):
        target = F.softmax(teacher.to(s.dtype) / 2, -1) if kind == "logits" else teacher.to(s.dtype)
        return F.kl_div(F.log_softmax(s / 2, -1), target, reduction="batchmean") * 4

    ours = distill.kl_div(student, **{f"teacher_{kind}": teacher}, temperature=2.0)
    check(ours, reference, student)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_hard_cross_entropy(offset, smoothing):
    student = inputs.logits((6, 300), torch.float32, 3) + offset
    labels = inputs.labels((6, 300), 4)
    weight = torch.linspace(0.5, 1.5, 300)

    def reference(s):
        return F.cross_entropy(s, labels, weight=weight.to(s.dtype), label_smoothing=smoothing)

    check(distill.cross_entropy(student, labels=labels, weight=weight, label_smoothing=smoothing), reference, student)


@pytest.mark.parametrize("offset", OFFSETS)
def test_soft_cross_entropy(offset):
    student = inputs.logits((6, 300), torch.float32, 5) + offset
    teacher = inputs.logits((6, 300), torch.float32, 6) + offset

    def reference(s):
        return F.cross_entropy(s / 2, F.softmax(teacher.to(s.dtype) / 2, -1), label_smoothing=0.1) * 4

    check(distill.cross_entropy(student, teacher_logits=teacher, temperature=2.0, label_smoothing=0.1), reference, student)


def test_equal_large_logits_give_log_2():
    result = distill.cross_entropy(torch.tensor([[1e8, 1e8]]), labels=torch.tensor([1]))
    assert float(result.loss) == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("temperature", [2.0, 4.0])
def test_kl_div_on_the_readme_example(temperature):
    """A small KL of two close distributions (O(1) terms summing to 0.1): one shared rounding of a
    row's normaliser, 1e-7 absolute, was 1.3e-5 relative at T = 4 (PyTorch's own error: 2e-6)."""
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    teacher = torch.tensor([[1.5, 1.0, -0.5], [0.0, 0.0, 1.0]])

    def reference(s):
        target = F.log_softmax(teacher.to(s.dtype) / temperature, -1)
        return F.kl_div(F.log_softmax(s / temperature, -1), target, log_target=True, reduction="batchmean") * temperature**2

    check(distill.kl_div(student, teacher_logits=teacher, temperature=temperature), reference, student)


@pytest.mark.parametrize("offset", OFFSETS)
def test_kl_div_of_a_student_close_to_its_teacher(offset):
    """Late in distillation the student nearly matches the teacher and the KL is small against its terms."""
    student = inputs.logits((64, 1000), torch.float32, 7) + offset
    teacher = student + 0.1 * inputs.logits((64, 1000), torch.float32, 8)

    def reference(s):
        target = F.log_softmax(teacher.to(s.dtype) / 2, -1)
        return F.kl_div(F.log_softmax(s / 2, -1), target, log_target=True, reduction="batchmean") * 4

    check(distill.kl_div(student, teacher_logits=teacher, temperature=2.0), reference, student)
