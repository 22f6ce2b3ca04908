"""Cross-entropy: hard labels against F.cross_entropy, soft targets against T²·F.cross_entropy(probs)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill import InputError, cross_entropy
from tests.distill import inputs, reference
from tests.tolerances import assert_close, random_mask

TEACHER_KWARG = {"logits": "teacher_logits", "probs": "teacher_probs", "log_probs": "teacher_log_probs"}


def compare(result, ref, student, reduction, mask):
    loss_dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    loss = result.loss if reduction != "none" or mask is None else result.loss.reshape(-1)[mask.reshape(-1)]
    assert_close(loss.reshape(ref.loss.shape), ref.loss, loss_dtype, student)
    assert result.grad.dtype == student.dtype and result.grad.shape == student.shape
    assert_close(result.grad, ref.grad, student.dtype)


def check_hard(student, labels, *, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", mask=None):
    result = cross_entropy(
        student, labels=labels, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction, mask=mask
    )
    ref = reference.ce_hard(
        student, labels, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction, mask=mask
    )
    compare(result, ref, student, reduction, mask)
    return result


def check_soft(student, teacher, kind, *, T=1.0, scale_t2=True, weight=None, label_smoothing=0.0, reduction="mean", mask=None):
    result = cross_entropy(
        student,
        **{TEACHER_KWARG[kind]: teacher},
        temperature=T,
        scale_t2=scale_t2,
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
        mask=mask,
    )
    ref = reference.ce_soft(
        student, teacher, kind, T=T, scale_t2=scale_t2, weight=weight, label_smoothing=label_smoothing, reduction=reduction, mask=mask
    )
    compare(result, ref, student, reduction, mask)


@pytest.mark.parametrize("shape", [s for s in inputs.SHAPES if len(s) > 1])
@pytest.mark.parametrize("dtype", inputs.DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_hard_labels_match_torch(shape, dtype, reduction, weighted, label_smoothing):
    weight = torch.rand(shape[-1], generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype) if weighted else None
    check_hard(
        inputs.logits(shape, dtype, 1),
        inputs.labels(shape, 2, ignore_every=3 if shape[0] > 1 else 0),
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def test_hard_labels_one_dimensional_student_takes_a_scalar_label():
    check_hard(inputs.logits((17,), torch.float64, 4), torch.tensor(5))


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_ignore_index_and_mask(ignore_index, masked):
    shape = (2, 7, 33)
    labels = inputs.labels(shape, 5)
    labels.view(-1)[::4] = ignore_index
    mask = random_mask(shape, torch.Generator().manual_seed(6)) if masked else None
    check_hard(
        inputs.logits(shape, torch.float64, 7),
        labels,
        ignore_index=ignore_index,
        mask=mask,
        weight=torch.rand(33, dtype=torch.float64),
        label_smoothing=0.2,
    )


def test_all_ignored_gives_zero_not_nan():
    result = cross_entropy(torch.randn(3, 4), labels=torch.full((3,), -100))
    assert float(result.loss) == 0.0 and result.normalizer == 0.0 and torch.all(result.grad == 0)


@pytest.mark.parametrize("shape", inputs.SHAPES)
@pytest.mark.parametrize("dtype", inputs.DTYPES)
@pytest.mark.parametrize("kind", ["logits", "probs", "log_probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_targets_match_torch(shape, dtype, kind, reduction):
    check_soft(inputs.logits(shape, dtype, 8), inputs.teacher(shape, dtype, kind, 9), kind, T=2.0, reduction=reduction)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("scale_t2", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("masked", [False, True])
def test_soft_options(T, scale_t2, weighted, label_smoothing, masked):
    shape = (2, 7, 33)
    generator = torch.Generator().manual_seed(10)
    weight = torch.rand(33, generator=generator, dtype=torch.float64) if weighted else None
    mask = random_mask(shape, generator) if masked else None
    check_soft(
        inputs.logits(shape, torch.float64, 11),
        inputs.logits(shape, torch.float64, 12),
        "logits",
        T=T,
        scale_t2=scale_t2,
        weight=weight,
        label_smoothing=label_smoothing,
        mask=mask,
    )


def test_temperature_with_hard_labels_is_an_error():
    with pytest.raises(InputError) as error:
        cross_entropy(torch.randn(2, 3), labels=torch.tensor([0, 1]), temperature=2.0)
    assert error.value.argument == "temperature"


@pytest.mark.parametrize("bad", [3, -1, 99])
def test_labels_out_of_range_name_the_row(bad):
    labels = torch.tensor([[0, 1], [2, bad]])
    with pytest.raises(InputError) as error:
        cross_entropy(torch.randn(2, 2, 3), labels=labels)
    assert (error.value.argument, error.value.index) == ("labels", (1, 1))


def test_float_labels_rejected():
    with pytest.raises(InputError) as error:
        cross_entropy(torch.randn(2, 3), labels=torch.tensor([0.0, 1.0]))
    assert error.value.argument == "labels"


def test_masked_vocabulary():
    student = inputs.logits((4, 12), torch.float64, 13)
    student[:, 9:] = -math.inf
    labels = torch.tensor([0, 3, 8, 1])
    result = cross_entropy(student, labels=labels)
    finite = cross_entropy(student[:, :9], labels=labels)
    assert_close(result.loss, finite.loss, torch.float64)
    assert torch.all(result.grad[:, 9:] == 0)
    with pytest.raises(InputError) as error:
        cross_entropy(student, labels=torch.tensor([0, 10, 1, 1]))
    assert error.value.index == (1, 10)
    with pytest.raises(InputError) as error:
        cross_entropy(student, labels=labels, label_smoothing=0.1)
    assert error.value.index == (0, 9)


@settings(max_examples=50, deadline=None)
@given(
    lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    classes=st.integers(1, 30),
    scale=st.floats(0.1, 50.0),
    label_smoothing=st.floats(0.0, 1.0),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_hard_labels(lead, classes, scale, label_smoothing, reduction, weighted, seed):
    shape = (*lead, classes)
    weight = torch.rand(classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1 if weighted else None
    check_hard(
        inputs.logits(shape, torch.float64, seed, scale=scale),
        inputs.labels(shape, seed + 1),
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


def test_weighted_mean_over_no_kept_rows_is_zero_over_zero():
    """Every row masked: nothing is labelled, so the empty weighted mean answers 0 with normaliser 0 (not a weight error)."""
    result = cross_entropy(torch.randn(3, 4), labels=torch.tensor([0, 1, 2]), weight=torch.ones(4), mask=torch.zeros(3, dtype=torch.bool))
    assert float(result.loss) == 0.0 and result.normalizer == 0.0 and torch.all(result.grad == 0)
