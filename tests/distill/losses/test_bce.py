"""Soft-label BCE: against T²·F.binary_cross_entropy_with_logits and F.binary_cross_entropy + autograd."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill import InputError, bce
from tests.distill import inputs, reference
from tests.tolerances import assert_close, random_mask


def check_logits(student, teacher, kind, *, T=1.0, scale_t2=True, weight=None, pos_weight=None, reduction="mean", mask=None):
    kwarg = "teacher_logits" if kind == "logits" else "teacher_probs"
    result = bce(
        student, **{kwarg: teacher}, temperature=T, scale_t2=scale_t2, weight=weight, pos_weight=pos_weight, reduction=reduction, mask=mask
    )
    ref = reference.bce_logits(
        student, teacher, kind, T=T, scale_t2=scale_t2, weight=weight, pos_weight=pos_weight, reduction=reduction, mask=mask
    )
    compare(result, ref, student, reduction, mask)


def compare(result, ref, student, reduction, mask):
    loss_dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    loss = result.loss if reduction != "none" or mask is None else result.loss.reshape(-1, student.shape[-1])[mask.reshape(-1)]
    assert_close(loss.reshape(ref.loss.shape), ref.loss, loss_dtype, student)
    assert result.grad.dtype == student.dtype and result.grad.shape == student.shape
    assert_close(result.grad, ref.grad, student.dtype)


@pytest.mark.parametrize("shape", inputs.SHAPES)
@pytest.mark.parametrize("dtype", inputs.DTYPES)
@pytest.mark.parametrize("kind", ["logits", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_logits_match_torch(shape, dtype, kind, reduction):
    teacher = inputs.teacher(shape, dtype, "logits" if kind == "logits" else "sigmoid_probs", 2)
    check_logits(inputs.logits(shape, dtype, 1), teacher, kind, T=2.0, reduction=reduction)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("scale_t2", [True, False])
@pytest.mark.parametrize("weights", ["none", "class", "full", "pos_weight", "both"])
@pytest.mark.parametrize("masked", [False, True])
def test_weights_temperature_mask(T, scale_t2, weights, masked):
    shape = (2, 7, 33)
    generator = torch.Generator().manual_seed(3)
    weight = {
        "class": torch.rand(33, generator=generator, dtype=torch.float64),
        "full": torch.rand(2, 7, 33, generator=generator, dtype=torch.float64),
        "both": torch.rand(7, 1, generator=generator, dtype=torch.float64),
    }.get(weights)
    pos_weight = torch.rand(33, generator=generator, dtype=torch.float64) * 3 if weights in ("pos_weight", "both") else None
    mask = random_mask(shape, generator) if masked else None
    check_logits(
        inputs.logits(shape, torch.float64, 4),
        inputs.logits(shape, torch.float64, 5),
        "logits",
        T=T,
        scale_t2=scale_t2,
        weight=weight,
        pos_weight=pos_weight,
        mask=mask,
    )


@pytest.mark.parametrize("shape", inputs.SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["logits", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_probabilities_match_binary_cross_entropy(shape, dtype, kind, reduction, weighted):
    student = inputs.teacher(shape, dtype, "sigmoid_probs", 6)
    teacher = inputs.teacher(shape, dtype, "logits" if kind == "logits" else "sigmoid_probs", 7)
    weight = torch.rand(shape[-1], generator=torch.Generator().manual_seed(8), dtype=dtype) if weighted else None
    kwarg = "teacher_logits" if kind == "logits" else "teacher_probs"
    result = bce(student_probs=student, **{kwarg: teacher}, weight=weight, reduction=reduction)
    compare(result, reference.bce_probs(student, teacher, kind, weight=weight, reduction=reduction, mask=None), student, reduction, None)


def test_probabilities_at_zero_and_one_use_torch_clamps():
    student = torch.tensor([[0.0, 1.0, 0.5, 1.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.3, 0.2, 0.5, 1.0]], dtype=torch.float64)
    result = bce(student_probs=student, teacher_probs=teacher, reduction="sum")
    ref = reference.bce_probs(student, teacher, "probs", weight=None, reduction="sum", mask=None)
    assert_close(result.loss, ref.loss, torch.float64)
    assert_close(result.grad, ref.grad, torch.float64)


def test_temperature_with_student_probabilities_is_an_error():
    with pytest.raises(InputError) as error:
        bce(student_probs=torch.rand(2, 3), teacher_probs=torch.rand(2, 3), temperature=2.0)
    assert error.value.argument == "temperature"


def test_log_probability_teacher_is_rejected():
    with pytest.raises(InputError) as error:
        bce(torch.randn(2, 3), teacher_probs=None, teacher_logits=None)
    assert error.value.argument == "teacher"


@pytest.mark.parametrize("name", ["weight", "pos_weight"])
def test_weight_of_wrong_size(name):
    with pytest.raises(InputError) as error:
        bce(torch.randn(2, 3), teacher_logits=torch.randn(2, 3), **{name: torch.ones(4)})
    assert error.value.argument == name


def test_non_finite_student_logits_named():
    student = torch.randn(2, 3)
    student[1, 2] = -float("inf")
    with pytest.raises(InputError) as error:
        bce(student, teacher_logits=torch.randn(2, 3))
    assert (error.value.argument, error.value.index) == ("student_logits", (1, 2))


@settings(max_examples=50, deadline=None)
@given(
    lead=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    classes=st.integers(1, 30),
    T=st.floats(0.25, 8.0),
    scale=st.floats(0.1, 50.0),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    use_pos_weight=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes_and_values(lead, classes, T, scale, reduction, use_pos_weight, seed):
    shape = (*lead, classes)
    pos_weight = torch.rand(classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 4 if use_pos_weight else None
    check_logits(
        inputs.logits(shape, torch.float64, seed, scale=scale),
        inputs.logits(shape, torch.float64, seed + 1),
        "logits",
        T=T,
        pos_weight=pos_weight,
        reduction=reduction,
    )
