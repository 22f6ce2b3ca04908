"""KL divergence: loss and gradient against T²·F.kl_div + autograd."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distill import InputError, kl_div
from tests.distill import inputs, reference
from tests.tolerances import TOLERANCE, assert_close, random_mask

TEACHER_KWARG = {"logits": "teacher_logits", "probs": "teacher_probs", "log_probs": "teacher_log_probs"}


def check(student, teacher, kind, *, T=1.0, scale_t2=True, reduction="batchmean", mask=None):
    result = kl_div(student, **{TEACHER_KWARG[kind]: teacher}, temperature=T, scale_t2=scale_t2, reduction=reduction, mask=mask)
    ref = reference.kl(student, teacher, kind, T=T, scale_t2=scale_t2, reduction=reduction, mask=mask)
    loss_dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    loss = result.loss if reduction != "none" or mask is None else result.loss.reshape(-1, student.shape[-1])[mask.reshape(-1)]
    assert_close(loss.reshape(ref.loss.shape), ref.loss, loss_dtype, student)
    assert result.grad is not None and result.grad.dtype == student.dtype and result.grad.shape == student.shape
    assert_close(result.grad, ref.grad, student.dtype)
    return result


@pytest.mark.parametrize("shape", inputs.SHAPES)
@pytest.mark.parametrize("dtype", inputs.DTYPES)
@pytest.mark.parametrize("kind", ["logits", "probs", "log_probs"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_matches_torch(shape, dtype, kind, reduction):
    check(inputs.logits(shape, dtype, 1), inputs.teacher(shape, dtype, kind, 2), kind, T=2.0, reduction=reduction)


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("scale_t2", [True, False])
@pytest.mark.parametrize("kind", ["logits", "probs", "log_probs"])
@pytest.mark.parametrize("masked", [False, True])
def test_temperature_and_mask(T, scale_t2, kind, masked):
    shape = (2, 7, 33)
    mask = random_mask(shape, torch.Generator().manual_seed(3)) if masked else None
    check(inputs.logits(shape, torch.float64, 4), inputs.teacher(shape, torch.float64, kind, 5), kind, T=T, scale_t2=scale_t2, mask=mask)


def test_masked_rows_get_zero_gradient_and_are_not_counted():
    student = inputs.logits((4, 10), torch.float64, 6)
    teacher = inputs.logits((4, 10), torch.float64, 7)
    mask = torch.tensor([True, False, True, False])
    result = kl_div(student, teacher_logits=teacher, mask=mask)
    assert result.normalizer == 2
    assert torch.all(result.grad[~mask] == 0)
    kept = kl_div(student[mask], teacher_logits=teacher[mask])
    assert_close(result.loss, kept.loss, torch.float64)


def test_mask_ignores_garbage_in_dropped_rows():
    student = inputs.logits((3, 5), torch.float64, 8)
    student[1] = math.nan
    teacher = inputs.logits((3, 5), torch.float64, 9)
    result = kl_div(student, teacher_logits=teacher, mask=torch.tensor([True, False, True]))
    assert math.isfinite(float(result.loss))


def test_batchmean_of_3d_input_divides_by_tokens_not_batch():
    student = inputs.logits((2, 7, 33), torch.float64, 10)
    teacher = inputs.logits((2, 7, 33), torch.float64, 11)
    result = kl_div(student, teacher_logits=teacher)
    assert result.normalizer == 14
    assert result.loss_sum / 14 == pytest.approx(float(result.loss), rel=1e-12)


def test_negative_infinity_classes_in_both_give_finite_loss_and_zero_grad():
    student = inputs.logits((5, 20), torch.float64, 12)
    teacher = inputs.logits((5, 20), torch.float64, 13)
    student[:, 15:] = -math.inf
    teacher[:, 15:] = -math.inf
    result = kl_div(student, teacher_logits=teacher, temperature=2.0)
    assert math.isfinite(float(result.loss))
    assert torch.all(result.grad[:, 15:] == 0)
    finite = kl_div(student[:, :15], teacher_logits=teacher[:, :15], temperature=2.0)
    assert_close(result.loss, finite.loss, torch.float64)
    assert_close(result.grad[:, :15], finite.grad, torch.float64)


def test_zero_probability_teacher_classes():
    """0·log 0 = 0 for probabilities and for log-probabilities of -inf.

    PyTorch's ``log_target=True`` gives NaN there (exp(-inf)·(-inf)); the engine gives the value
    PyTorch computes for the same distribution given as probabilities.
    """
    student = inputs.logits((4, 9), torch.float64, 14)
    probs = torch.softmax(inputs.logits((4, 9), torch.float64, 15), dim=-1)
    probs[:, :3] = 0
    probs /= probs.sum(-1, keepdim=True)
    from_probs = check(student, probs, "probs")
    from_log_probs = kl_div(student, teacher_log_probs=probs.log())
    assert_close(from_log_probs.loss, from_probs.loss, torch.float64)
    assert_close(from_log_probs.grad, from_probs.grad, torch.float64)


def test_teacher_mass_where_student_is_negative_infinity_names_row_and_class():
    student = inputs.logits((3, 6), torch.float64, 16)
    student[2, 4] = -math.inf
    with pytest.raises(InputError) as error:
        kl_div(student, teacher_logits=inputs.logits((3, 6), torch.float64, 17))
    assert error.value.argument == "student_logits"
    assert error.value.index == (2, 4)


def test_extreme_logits_stay_finite():
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]])
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, 0.0]])
    result = kl_div(student, teacher_logits=teacher, temperature=0.5)
    assert math.isfinite(float(result.loss)) and bool(torch.isfinite(result.grad).all())
    check(student.double(), teacher.double(), "logits", T=0.5)


def test_without_gradient():
    result = kl_div(inputs.logits((3, 4), torch.float32, 18), teacher_logits=inputs.logits((3, 4), torch.float32, 19), compute_grad=False)
    assert result.grad is None


def test_chunking_does_not_change_the_answer(monkeypatch):
    student = inputs.logits((37, 50), torch.float64, 20)
    teacher = inputs.logits((37, 50), torch.float64, 21)
    mask = random_mask((37, 50), torch.Generator().manual_seed(22))
    whole = kl_div(student, teacher_logits=teacher, mask=mask, reduction="none")
    monkeypatch.setattr("distill.rows.layout.CHUNK_ELEMENTS", 120)
    chunked = kl_div(student, teacher_logits=teacher, mask=mask, reduction="none")
    assert torch.equal(whole.loss, chunked.loss) and torch.equal(whole.grad, chunked.grad)


@settings(max_examples=60, deadline=None)
@given(
    lead=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    classes=st.integers(1, 40),
    T=st.floats(0.25, 8.0),
    scale=st.floats(0.1, 30.0),
    kind=st.sampled_from(["logits", "probs", "log_probs"]),
    reduction=st.sampled_from(["batchmean", "sum", "mean", "none"]),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes_and_values(lead, classes, T, scale, kind, reduction, seed):
    shape = (*lead, classes)
    student = inputs.logits(shape, torch.float64, seed, scale=scale)
    teacher = inputs.teacher(shape, torch.float64, kind, seed + 1)
    check(student, teacher, kind, T=T, reduction=reduction)


def test_float16_matches_float32_computation():
    student = inputs.logits((8, 100), torch.float16, 23)
    teacher = inputs.logits((8, 100), torch.float16, 24)
    result = kl_div(student, teacher_logits=teacher, temperature=2.0)
    assert result.loss.dtype == torch.float32 and result.grad.dtype == torch.float16
    upcast = kl_div(student.float(), teacher_logits=teacher.float(), temperature=2.0)
    assert_close(result.loss, upcast.loss, torch.float32)
    assert float((result.grad.float() - upcast.grad).abs().max()) <= TOLERANCE[torch.float16] * float(upcast.grad.abs().max())
