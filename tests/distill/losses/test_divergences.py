"""LLM divergences (jsd, reverse_kl, skew_kl, skew_reverse_kl, tvd) against their formulas + autograd.

float64 results are held to the float64 reference; float32 (and float16/bfloat16, computed in float32)
results to a small multiple of PyTorch's own float32 error on the same numbers, also at logits offset
by up to 1e6 (softmax divergences are shift invariant).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import distill
from distill import InputError
from tests.distill import inputs, reference
from tests.tolerances import TOLERANCE, assert_as_accurate_as_torch, assert_close, random_mask

TEACHER_KWARG = {"logits": "teacher_logits", "probs": "teacher_probs", "log_probs": "teacher_log_probs"}
PARAMETER = {"jsd": "beta", "skew_kl": "alpha", "skew_reverse_kl": "alpha"}
CASES = [
    *(("jsd", beta) for beta in (0.0, 0.1, 0.5, 0.9, 1.0)),
    ("reverse_kl", 0.0),
    *(("skew_kl", alpha) for alpha in (0.0, 0.1, 0.5, 1.0)),
    *(("skew_reverse_kl", alpha) for alpha in (0.0, 0.1, 0.5, 1.0)),
    ("tvd", 0.0),
]
IDS = [f"{name}-{parameter}" for name, parameter in CASES]


def compute(name, parameter, student, teacher, kind, **options):
    extra = {PARAMETER[name]: parameter} if name in PARAMETER else {}
    return getattr(distill, name)(student, **{TEACHER_KWARG[kind]: teacher}, **extra, **options)


def check(name, parameter, student, teacher, kind, *, T=1.0, scale_t2=True, reduction="batchmean", mask=None):
    result = compute(name, parameter, student, teacher, kind, temperature=T, scale_t2=scale_t2, reduction=reduction, mask=mask)
    options = {"T": T, "scale_t2": scale_t2, "reduction": reduction, "mask": mask}
    exact = reference.divergence(name, parameter, student.double(), teacher.double(), kind, **options)
    loss = result.loss if reduction != "none" or mask is None else result.loss.reshape(-1, student.shape[-1])[mask.reshape(-1)]
    assert result.grad is not None and result.grad.dtype == student.dtype and result.grad.shape == student.shape
    if student.dtype == torch.float64:
        assert_close(loss.reshape(exact.loss.shape), exact.loss, torch.float64, student)
        assert_close(result.grad, exact.grad, torch.float64)
        return result
    torch32 = reference.divergence(name, parameter, student.float(), teacher.float(), kind, **options)
    stored = TOLERANCE[student.dtype] if student.dtype != torch.float32 else 0.0
    assert_as_accurate_as_torch(loss.reshape(exact.loss.shape), torch32.loss, exact.loss, stored)
    assert_as_accurate_as_torch(result.grad, torch32.grad, exact.grad, stored)
    return result


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=IDS)
@pytest.mark.parametrize("kind", ["logits", "probs", "log_probs"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_matches_the_formula_in_float64(name, parameter, kind, reduction):
    shape = (2, 5, 33)
    mask = random_mask(shape, torch.Generator().manual_seed(9)) if reduction != "none" else None
    student = inputs.logits(shape, torch.float64, 1)
    check(name, parameter, student, inputs.teacher(shape, torch.float64, kind, 2), kind, T=2.0, reduction=reduction, mask=mask)


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=IDS)
@pytest.mark.parametrize("shape", inputs.SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_float32_is_as_accurate_as_pytorch(name, parameter, shape, dtype):
    check(name, parameter, inputs.logits(shape, dtype, 3), inputs.teacher(shape, dtype, "logits", 4), "logits", T=1.5)


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=IDS)
@pytest.mark.parametrize("offset", [1e3, 1e6])
def test_large_logits_are_as_accurate_as_pytorch(name, parameter, offset):
    student = inputs.logits((8, 300), torch.float32, 5) + offset
    teacher = inputs.logits((8, 300), torch.float32, 6) - offset
    check(name, parameter, student, teacher, "logits", T=2.0)


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=IDS)
@pytest.mark.parametrize("scale_t2", [True, False])
def test_temperature_scaling(name, parameter, scale_t2):
    student, teacher = inputs.logits((6, 20), torch.float64, 7), inputs.logits((6, 20), torch.float64, 8)
    check(name, parameter, student, teacher, "logits", T=4.0, scale_t2=scale_t2)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_follows_trl_generalized_jsd(beta):
    """TRL's generalized_jsd_loss convention: mixture in log space, KL end points, Σ / tokens, no T²."""
    student, teacher = inputs.logits((3, 4, 50), torch.float64, 10), inputs.logits((3, 4, 50), torch.float64, 11)
    T = 2.0
    s, t = F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1)
    if beta == 0.0:
        per_token = F.kl_div(s, t, reduction="none", log_target=True)
    elif beta == 1.0:
        per_token = F.kl_div(t, s, reduction="none", log_target=True)
    else:
        mixture = torch.logsumexp(torch.stack([s + math.log(1 - beta), t + math.log(beta)]), dim=0)
        per_token = beta * F.kl_div(mixture, t, reduction="none", log_target=True) + (1 - beta) * F.kl_div(
            mixture, s, reduction="none", log_target=True
        )
    expected = per_token.sum() / (3 * 4)
    result = distill.jsd(student, teacher_logits=teacher, beta=beta, temperature=T, scale_t2=False)
    assert_close(result.loss, expected, torch.float64)


def test_jsd_jumps_at_the_end_points():
    student, teacher = inputs.logits((4, 9), torch.float64, 12), inputs.logits((4, 9), torch.float64, 13)
    forward = distill.kl_div(student, teacher_logits=teacher).loss
    near_zero = distill.jsd(student, teacher_logits=teacher, beta=1e-9).loss
    assert float(near_zero) < 1e-6 * float(forward)
    assert_close(distill.jsd(student, teacher_logits=teacher, beta=0.0).loss, forward, torch.float64)
    assert_close(
        distill.reverse_kl(student, teacher_logits=teacher).loss, distill.jsd(student, teacher_logits=teacher, beta=1.0).loss, torch.float64
    )


def test_skew_end_points_are_the_kl_divergences_and_zero():
    student, teacher = inputs.logits((4, 9), torch.float64, 14), inputs.logits((4, 9), torch.float64, 15)
    forward = distill.kl_div(student, teacher_logits=teacher)
    assert_close(distill.skew_kl(student, teacher_logits=teacher, alpha=0.0).grad, forward.grad, torch.float64)
    reverse = distill.reverse_kl(student, teacher_logits=teacher)
    assert_close(distill.skew_reverse_kl(student, teacher_logits=teacher, alpha=0.0).grad, reverse.grad, torch.float64)
    for name in ("skew_kl", "skew_reverse_kl"):
        result = getattr(distill, name)(student, teacher_logits=teacher, alpha=1.0)
        assert abs(float(result.loss)) < 1e-12 and float(result.grad.abs().max()) < 1e-12


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=IDS)
def test_masked_vocabulary_contributes_nothing(name, parameter):
    # Class 2 is -inf in the student and has no teacher mass: the answer equals the one without it.
    student = inputs.logits((3, 6), torch.float64, 16)
    probs = torch.softmax(inputs.logits((3, 6), torch.float64, 17), -1)
    student[:, 2] = -math.inf
    probs[:, 2] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)
    keep = [0, 1, 3, 4, 5]
    masked = compute(name, parameter, student, probs, "probs")
    without = compute(name, parameter, student[:, keep], probs[:, keep], "probs")
    assert_close(masked.loss, without.loss, torch.float64)
    assert torch.all(masked.grad[:, 2] == 0)
    assert_close(masked.grad[:, keep], without.grad, torch.float64)


@pytest.mark.parametrize(("name", "parameter"), [("jsd", 0.0), ("skew_kl", 0.0)])
def test_forward_type_infinity_names_the_student_class(name, parameter):
    student = inputs.logits((2, 4), torch.float64, 18)
    student[1, 3] = -math.inf
    with pytest.raises(InputError) as caught:
        compute(name, parameter, student, inputs.logits((2, 4), torch.float64, 19), "logits")
    assert caught.value.argument == "student_logits" and caught.value.index == (1, 3)
    assert "infinite" in caught.value.reason


@pytest.mark.parametrize(("name", "parameter"), [("reverse_kl", 0.0), ("jsd", 1.0), ("skew_reverse_kl", 0.0)])
@pytest.mark.parametrize("kind", ["probs", "log_probs", "logits"])
def test_reverse_type_infinity_names_the_teacher_class(name, parameter, kind):
    teacher = inputs.teacher((2, 4), torch.float64, kind, 20)
    teacher[0, 1] = 0.0 if kind == "probs" else -math.inf
    with pytest.raises(InputError) as caught:
        compute(name, parameter, inputs.logits((2, 4), torch.float64, 21), teacher, kind)
    assert caught.value.argument == TEACHER_KWARG[kind] and caught.value.index == (0, 1)


@pytest.mark.parametrize(("name", "parameter"), [("jsd", 0.5), ("skew_kl", 0.1), ("skew_reverse_kl", 0.1), ("tvd", 0.0)])
def test_finite_where_the_end_points_are_infinite(name, parameter):
    student = inputs.logits((2, 4), torch.float64, 22)
    probs = torch.softmax(inputs.logits((2, 4), torch.float64, 23), -1)
    probs[0, 1] = 0.0
    student[1, 3] = -math.inf
    result = compute(name, parameter, student, probs, "probs")
    assert math.isfinite(float(result.loss)) and bool(torch.isfinite(result.grad).all())
    assert result.grad[1, 3] == 0


@pytest.mark.parametrize("name", ["jsd", "skew_kl", "skew_reverse_kl"])
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan])
def test_parameters_outside_the_unit_interval_are_refused(name, value):
    with pytest.raises(InputError) as caught:
        compute(name, value, torch.zeros(2, 3), torch.zeros(2, 3), "logits")
    assert caught.value.argument == PARAMETER[name]


def test_tvd_gradient_is_zero_where_teacher_equals_student():
    student = inputs.logits((3, 5), torch.float64, 24)
    result = distill.tvd(student, teacher_logits=student.clone())
    assert float(result.loss) == 0.0 and torch.all(result.grad == 0)


@pytest.mark.parametrize(("name", "parameter"), CASES, ids=IDS)
def test_a_student_that_requires_grad_is_accepted(name, parameter):
    student = inputs.logits((2, 5), torch.float32, 25).requires_grad_(True)
    result = compute(name, parameter, student, inputs.logits((2, 5), torch.float32, 26), "logits")
    assert not result.loss.requires_grad and result.grad is not None and not result.grad.requires_grad


F32_MAX = torch.finfo(torch.float32).max


@pytest.mark.parametrize(("name", "parameter"), [("skew_kl", 1e-300), ("skew_kl", 5e-324), ("skew_reverse_kl", 1e-300), ("jsd", 1e-300)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_tiny_parameters_keep_their_term(name, parameter, dtype, reduction):
    """A mixture weight that underflows the compute dtype still weighs its term: the mixture is in log space."""
    student = torch.tensor([[0.0, 1.0, -math.inf], [0.5, -math.inf, -0.5]], dtype=dtype)
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.2, 0.4]], dtype=dtype)
    if name == "skew_reverse_kl":
        student = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.1, -0.5]], dtype=dtype)
        probs = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=dtype)
    result = compute(name, parameter, student, probs, "probs", reduction=reduction)
    exact = reference.divergence(
        name, parameter, student.double(), probs.double(), "probs", T=1.0, scale_t2=True, reduction=reduction, mask=None
    )
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2}[dtype]
    torch.testing.assert_close(result.loss.double(), exact.loss, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(result.grad.double(), exact.grad, rtol=tolerance, atol=tolerance * float(exact.grad.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_jsd_keeps_the_student_term_where_the_teacher_has_no_mass(dtype, reduction):
    student = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.1, -0.5]], dtype=dtype)
    probs = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=dtype)
    result = distill.jsd(student, teacher_probs=probs, reduction=reduction)
    exact = reference.divergence(
        "jsd", 0.5, student.double(), probs.double(), "probs", T=1.0, scale_t2=True, reduction=reduction, mask=None
    )
    torch.testing.assert_close(result.loss.double(), exact.loss, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("name", ["reverse_kl", "jsd", "skew_reverse_kl"])
def test_equal_extreme_logits_are_not_zero_probabilities(name):
    """Logits of ±float32 max shift to log p = −inf; a finite teacher logit is still positive mass."""
    extreme = torch.tensor([[1e30, -1e30, 0.0], [F32_MAX, -F32_MAX, F32_MAX]])
    parameter = {"jsd": 1.0, "skew_reverse_kl": 0.0}.get(name, 0.0)
    result = compute(name, parameter, extreme, extreme.clone(), "logits")
    assert float(result.loss) == 0.0 and bool(torch.isfinite(result.grad).all())


@pytest.mark.parametrize("name", ["kl_div", "jsd", "reverse_kl", "tvd", "cross_entropy", "bce"])
def test_logits_that_overflow_when_divided_by_t_are_refused(name):
    student = torch.tensor([[1.0, -2.0, 3.0], [F32_MAX, -F32_MAX, 0.0]])
    teacher = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.2, 0.4]])
    with pytest.raises(InputError) as caught:
        getattr(distill, name)(student, teacher_probs=teacher, temperature=0.5)
    assert caught.value.argument == "temperature" and "overflows float32" in caught.value.reason
    getattr(distill, name)(student, teacher_probs=teacher, temperature=1.0)  # T ≥ 1 never enlarges a logit: computed
    with pytest.raises(InputError):
        getattr(distill, name)(torch.tensor([[1.0, 2.0]]), teacher_logits=torch.tensor([[F32_MAX, 0.0]]), temperature=0.25)
