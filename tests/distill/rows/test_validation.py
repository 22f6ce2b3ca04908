"""Bad input raises one typed error naming the argument and the first bad index."""

from __future__ import annotations

import math

import pytest
import torch

from distill import InputError, bce, cross_entropy, kl_div, resolve_device


def error_of(call) -> InputError:
    with pytest.raises(InputError) as info:
        call()
    return info.value


@pytest.mark.parametrize(("value", "reason"), [(math.nan, "NaN"), (math.inf, "+inf")])
def test_non_finite_student(value, reason):
    student = torch.randn(2, 3, 4)
    student[1, 2, 0] = value
    error = error_of(lambda: kl_div(student, teacher_logits=torch.randn(2, 3, 4)))
    assert (error.argument, error.index) == ("student_logits", (1, 2, 0)) and reason in error.reason


def test_row_without_finite_logit():
    student = torch.randn(3, 4)
    student[2] = -math.inf
    error = error_of(lambda: kl_div(student, teacher_logits=torch.randn(3, 4)))
    assert (error.argument, error.index) == ("student_logits", (2,))


def test_nan_teacher():
    teacher = torch.randn(3, 4)
    teacher[0, 3] = math.nan
    error = error_of(lambda: cross_entropy(torch.randn(3, 4), teacher_logits=teacher))
    assert (error.argument, error.index) == ("teacher_logits", (0, 3))


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_probabilities_out_of_range(value):
    probs = torch.full((2, 4), 0.25)
    probs[1, 1] = value
    error = error_of(lambda: kl_div(torch.randn(2, 4), teacher_probs=probs))
    assert (error.argument, error.index) == ("teacher_probs", (1, 1))


def test_positive_log_probabilities():
    log_probs = torch.full((2, 4), -1.0)
    log_probs[0, 2] = 0.5
    error = error_of(lambda: kl_div(torch.randn(2, 4), teacher_log_probs=log_probs))
    assert (error.argument, error.index) == ("teacher_log_probs", (0, 2))


def test_shape_mismatch():
    error = error_of(lambda: kl_div(torch.randn(2, 4), teacher_logits=torch.randn(2, 5)))
    assert error.argument == "teacher_logits"


@pytest.mark.parametrize("given", [{}, {"teacher_logits": torch.randn(2, 3), "teacher_probs": torch.full((2, 3), 1 / 3)}])
def test_teacher_both_or_neither(given):
    assert error_of(lambda: kl_div(torch.randn(2, 3), **given)).argument == "teacher"


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature(temperature):
    assert error_of(lambda: kl_div(torch.randn(2, 3), teacher_logits=torch.randn(2, 3), temperature=temperature)).argument == "temperature"


def test_unknown_reduction():
    assert error_of(lambda: bce(torch.randn(2, 3), teacher_logits=torch.randn(2, 3), reduction="batchmean")).argument == "reduction"


def test_empty_and_integer_students():
    assert error_of(lambda: kl_div(torch.randn(0, 3), teacher_logits=torch.randn(0, 3))).argument == "student_logits"
    assert error_of(lambda: kl_div(torch.ones(2, 3, dtype=torch.int64), teacher_logits=torch.randn(2, 3))).argument == "student_logits"
    assert error_of(lambda: kl_div(torch.tensor(1.0), teacher_logits=torch.tensor(1.0))).argument == "student_logits"


@pytest.mark.parametrize("mask", [torch.ones(3, dtype=torch.bool), torch.ones(2)])
def test_mask_of_wrong_shape_or_dtype(mask):
    assert error_of(lambda: kl_div(torch.randn(2, 3), teacher_logits=torch.randn(2, 3), mask=mask)).argument == "mask"


def test_label_smoothing_range():
    error = error_of(lambda: cross_entropy(torch.randn(2, 3), labels=torch.tensor([0, 1]), label_smoothing=1.5))
    assert error.argument == "label_smoothing"


def test_fully_masked_batch_gives_zero():
    result = kl_div(torch.randn(2, 3), teacher_logits=torch.randn(2, 3), mask=torch.zeros(2, dtype=torch.bool))
    assert float(result.loss) == 0.0 and result.normalizer == 0.0 and torch.all(result.grad == 0)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert error_of(lambda: resolve_device("tpu")).argument == "device"
    if not torch.cuda.is_available():
        assert error_of(lambda: resolve_device("cuda")).argument == "device"
