"""Feature matching (mse, l1, smooth L1, cosine): against F.* on the flattened, masked rows + autograd."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import distill
from distill import LOSSES, InputError
from distill.rows.prepared import run
from tests.distill import inputs, reference
from tests.distill.grouping import run_grouped
from tests.tolerances import assert_as_accurate_as_torch, assert_close, random_mask

NAMES = ("mse_loss", "l1_loss", "smooth_l1_loss", "cosine_embedding_loss")
REDUCTIONS = ("mean", "sum", "none")


def torch_loss(name: str, student: torch.Tensor, teacher: torch.Tensor, reduction: str, beta: float) -> torch.Tensor:
    """PyTorch's function on (rows, H) tensors."""
    if name == "cosine_embedding_loss":
        return F.cosine_embedding_loss(student, teacher, torch.ones(student.shape[0], dtype=student.dtype), reduction=reduction)
    if name == "smooth_l1_loss":
        return F.smooth_l1_loss(student, teacher, reduction=reduction, beta=beta)
    return getattr(F, name)(student, teacher, reduction=reduction)


def expected(name, student, teacher, reduction="mean", beta=1.0, mask=None, compute=None) -> reference.Reference:
    """PyTorch on the kept rows in ``compute`` (default: float64 for float64, else float32), autograd's gradient."""
    compute = compute or (torch.float64 if student.dtype == torch.float64 else torch.float32)
    rows = reference.teacher_rows(teacher, mask, compute)
    return reference.run(student.to(compute), mask, lambda s: torch_loss(name, s, rows, reduction, beta))


def kept(name, loss, student, mask):
    """A ``none`` answer restricted to the kept rows (as the reference gives them)."""
    if mask is None or loss.dim() == 0:
        return loss
    if name == "cosine_embedding_loss":
        return loss.reshape(-1)[mask.reshape(-1)]
    return loss.reshape(-1, student.shape[-1])[mask.reshape(-1)]


def options(name: str, beta: float) -> dict[str, float]:
    return {"beta": beta} if name == "smooth_l1_loss" else {}


def check(name, student, teacher, *, reduction="mean", beta=1.0, mask=None):
    result = getattr(distill, name)(student, teacher=teacher, reduction=reduction, mask=mask, **options(name, beta))
    assert result.grad is not None and result.grad.dtype == student.dtype and result.grad.shape == student.shape
    if student.dtype == torch.float64:
        ref = expected(name, student, teacher, reduction, beta, mask)
        assert_close(kept(name, result.loss, student, mask).reshape(ref.loss.shape), ref.loss, torch.float64)
        if name == "cosine_embedding_loss":
            assert_cosine_gradient_as_accurate_as_torch(result.grad, ref.grad, ref.grad, student, 0.0)
        else:
            assert_close(result.grad, ref.grad, torch.float64)
    else:
        exact = expected(name, student, teacher, reduction, beta, mask, torch.float64)
        theirs = expected(name, student, teacher, reduction, beta, mask)
        stored = torch.finfo(student.dtype).eps if student.dtype in (torch.float16, torch.bfloat16) else 0.0
        ours = kept(name, result.loss, student, mask).reshape(exact.loss.shape)
        assert_as_accurate_as_torch(ours, theirs.loss, exact.loss, stored)
        if name == "cosine_embedding_loss":
            assert_cosine_gradient_as_accurate_as_torch(result.grad, theirs.grad.to(student.dtype), exact.grad, student, stored)
        else:
            assert_as_accurate_as_torch(result.grad, theirs.grad.to(student.dtype), exact.grad, stored)
    return result


def assert_cosine_gradient_as_accurate_as_torch(ours, theirs, exact, student, stored):
    """Row by row, our error is at most 4× PyTorch's plus 16 ulps of the row's natural scale (float64: our
    distance from PyTorch's float64 answer, ``theirs`` = ``exact``, is at most those ulps).

    The gradient cos·ŝ/|s| − t̂/|s| is the part of t̂ orthogonal to ŝ, over |s|: for nearly parallel
    rows (always, for rows of one feature) it is a difference of two terms of size 1/|s| that cancel,
    and every float32 evaluation, PyTorch's included, is exact there only to ulps of 1/|s|. So the
    scale is 1/|s| per row, not the exact answer's own (near-zero) size.
    """
    width = student.shape[-1]
    rows = [tensor.reshape(-1, width).double() for tensor in (ours, theirs, exact, student)]
    scale = (1.0 / rows[3].norm(dim=1).clamp_min(1e-300)).nan_to_num(0.0)  # masked rows may hold NaN
    ours_error, their_error = ((row - rows[2]).abs().amax(dim=1) for row in rows[:2])
    eps = torch.finfo(torch.float64 if student.dtype == torch.float64 else torch.float32).eps
    assert torch.all(ours_error <= 4 * their_error + (16 * eps + stored) * scale), (ours_error, their_error, scale)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", inputs.SHAPES)
@pytest.mark.parametrize("dtype", inputs.DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_torch(name, shape, dtype, reduction):
    check(name, inputs.logits(shape, dtype, 1), inputs.logits(shape, dtype, 2), reduction=reduction, beta=0.5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_masked_rows_are_dropped(name, reduction):
    shape = (3, 5, 24)
    mask = random_mask(shape, torch.Generator().manual_seed(3))
    student, teacher = inputs.logits(shape, torch.float64, 4), inputs.logits(shape, torch.float64, 5)
    student[~mask] = math.nan  # never inspected
    result = check(name, student, teacher, reduction=reduction, mask=mask)
    assert torch.all(result.grad[~mask] == 0)
    rows = int(mask.sum())
    if reduction == "mean":
        assert result.normalizer == (rows if name == "cosine_embedding_loss" else rows * shape[-1])


@pytest.mark.parametrize("beta", [0.0, 1e-3, 0.5, 1.0, 3.0, 1e6])
def test_smooth_l1_across_beta_and_at_the_branch_point(beta):
    student = inputs.logits((6, 40), torch.float64, 6)
    teacher = student.clone()
    teacher[0, :4] = student[0, :4] + torch.tensor([beta, -beta, 0.0, beta / 2], dtype=torch.float64)  # |d| = β, d = 0
    check("smooth_l1_loss", student, teacher, beta=beta)


@pytest.mark.parametrize("beta", [1e-50, 1e-40, 1e39, 1e300])
def test_smooth_l1_with_beta_at_the_edge_of_float32(beta):
    # β that rounds to 0 (or a subnormal) or overflows in float32: PyTorch's answers there, which the
    # compiled kernel leaves to the torch path (0 and inf) or computes (subnormal β)
    student, teacher = inputs.logits((3, 20), torch.float32, 8), inputs.logits((3, 20), torch.float32, 9)
    check("smooth_l1_loss", student, teacher, beta=beta)


@pytest.mark.parametrize("name", ("l1_loss", "smooth_l1_loss"))
def test_zero_difference_has_zero_gradient_as_in_pytorch(name):
    student = inputs.logits((2, 5), torch.float64, 7)
    result = check(name, student, student.clone(), beta=0.0)
    assert torch.all(result.grad == 0) and float(result.loss) == 0.0


def test_cosine_of_a_zero_row_is_pytorchs():
    student = inputs.logits((3, 8), torch.float64, 8)
    student[1] = 0.0
    teacher = inputs.logits((3, 8), torch.float64, 9)
    teacher[2] = 0.0
    check("cosine_embedding_loss", student, teacher)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("offset", [1e3, 1e6])
def test_large_float32_magnitudes_are_as_accurate_as_torch(name, offset):
    student = inputs.logits((16, 64), torch.float32, 10) + offset
    teacher = inputs.logits((16, 64), torch.float32, 11) + offset
    check(name, student, teacher, beta=0.5)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    rows=st.integers(1, 6),
    width=st.integers(1, 40),
    scale=st.floats(1e-3, 1e3),
    beta=st.floats(0.0, 10.0),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**16),
)
def test_random_inputs_match_torch(name, rows, width, scale, beta, reduction, seed):
    student = inputs.logits((rows, width), torch.float64, seed, scale)
    teacher = inputs.logits((rows, width), torch.float64, seed + 1, scale)
    check(name, student, teacher, reduction=reduction, beta=beta)


@pytest.mark.parametrize("name", NAMES)
def test_a_group_answers_each_request_as_alone(name):
    prepare = LOSSES[name].prepare
    group = []
    for index in range(6):
        lead = [(3,), (2, 5), (7,)][index % 3]
        mask = torch.ones(lead, dtype=torch.bool)
        mask.view(-1)[-1] = index % 2 == 0
        student, teacher = inputs.logits((*lead, 13), torch.float32, index), inputs.logits((*lead, 13), torch.float32, 50 + index)
        group.append(prepare(student, teacher=teacher, reduction=REDUCTIONS[index % 3], mask=mask, **options(name, 0.5)))
    assert len({item.key for item in group}) == 1
    for grouped, item in zip(run_grouped(group), group, strict=True):
        alone = run(item)
        torch.testing.assert_close(grouped.loss, alone.loss)
        torch.testing.assert_close(grouped.grad, alone.grad)
        assert (grouped.loss_sum, grouped.normalizer) == pytest.approx((alone.loss_sum, alone.normalizer))


@pytest.mark.parametrize(
    ("arguments", "field", "reason"),
    [
        ({"teacher": torch.zeros(2, 4)}, "teacher", "must equal the student's shape"),
        ({"teacher": torch.zeros(2, 3, dtype=torch.int64)}, "teacher", "floating"),
        ({"teacher": torch.tensor([[0.0, math.inf, 0.0], [0.0, 0.0, 0.0]])}, "teacher", "+inf"),
        ({"student": torch.tensor([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]])}, "student", "NaN"),
        ({"student": torch.tensor([[0.0, -math.inf, 0.0], [0.0, 0.0, 0.0]])}, "student", "-inf"),
        ({"student": torch.zeros(2, 3, dtype=torch.int64)}, "student", "floating"),
        ({"reduction": "batchmean"}, "reduction", "mean, sum, none"),
        ({"mask": torch.ones(3, dtype=torch.bool)}, "mask", "leading shape"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_field(name, arguments, field, reason):
    call = {"student": torch.zeros(2, 3), "teacher": torch.zeros(2, 3)} | arguments
    with pytest.raises(InputError, match=re.escape(reason)) as caught:
        getattr(distill, name)(call.pop("student"), **call)
    assert caught.value.argument == field


@pytest.mark.parametrize("beta", [-1.0, math.nan, "1"])
def test_beta_must_be_a_non_negative_number(beta):
    with pytest.raises(InputError) as caught:
        distill.smooth_l1_loss(torch.zeros(2, 3), teacher=torch.zeros(2, 3), beta=beta)
    assert caught.value.argument == "beta"


@pytest.mark.parametrize("beta", [1e-300, 1e-46, 1e39, 1e300])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_smooth_l1_at_betas_beyond_the_compute_dtype_is_pytorchs(beta, dtype):
    student = torch.tensor([[0.5, -1.0], [1.0, 1.0]], dtype=dtype)
    teacher = torch.tensor([[0.4, -0.8], [1.0, 0.5]], dtype=dtype)
    result = distill.smooth_l1_loss(student, teacher=teacher, beta=beta)
    leaf = student.to(torch.float32 if dtype == torch.bfloat16 else dtype).requires_grad_(True)
    loss = F.smooth_l1_loss(leaf, teacher.to(leaf.dtype), beta=beta)
    (grad,) = torch.autograd.grad(loss, leaf)
    torch.testing.assert_close(result.loss.float(), loss.detach().float(), rtol=1e-6, atol=1e-45)
    bf16 = dtype == torch.bfloat16  # its smallest subnormal is 9e-41: stored gradients below it are 0
    torch.testing.assert_close(result.grad.float(), grad.float(), rtol=1e-2 if bf16 else 1e-6, atol=1e-40 if bf16 else 1e-44)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "cosine_embedding_loss"])
def test_a_wider_teacher_must_fit_the_students_compute_dtype(name):
    student, teacher = inputs.logits((2, 5), torch.float32, 1), inputs.logits((2, 5), torch.float64, 2)
    teacher[1, 3] = -1e300
    with pytest.raises(InputError) as raised:
        getattr(distill, name)(student, teacher=teacher)
    assert raised.value.argument == "teacher" and raised.value.index == (1, 3) and "float32's range" in raised.value.reason
    kept = getattr(distill, name)(student, teacher=teacher, mask=torch.tensor([True, False]))  # a dropped row may hold anything
    assert math.isfinite(kept.loss_sum)


def test_beta_beyond_float64_is_an_input_error():
    student = inputs.logits((2, 3), torch.float32, 5)
    with pytest.raises(InputError, match="float64's range"):
        distill.smooth_l1_loss(student, teacher=student, beta=10**400)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "cosine_embedding_loss"])
def test_the_loss_does_not_depend_on_asking_for_the_gradient(name):
    for seed in range(20):
        student, teacher = inputs.logits((4, 300), torch.float32, seed), inputs.logits((4, 300), torch.float32, 100 + seed)
        with_grad = getattr(distill, name)(student, teacher=teacher, reduction="sum")
        assert getattr(distill, name)(student, teacher=teacher, reduction="sum", compute_grad=False).loss_sum == with_grad.loss_sum
