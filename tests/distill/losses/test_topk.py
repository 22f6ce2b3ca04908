"""Top-k teachers: every soft-target loss × both policies × both value forms against a float64 autograd
reference of the formulas in distill.losses.topk, written out here with log_softmax, gather and a masked
logsumexp for the student's tail."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import distill
from distill import LOSSES, InputError
from distill.rows.prepared import run
from tests.distill import inputs
from tests.distill.grouping import run_grouped
from tests.tolerances import assert_as_accurate_as_torch, assert_close, random_mask

#: loss name → (its option, the values to try); the KL(q‖·)-type end points are infinite under renormalize.
LOSS_OPTIONS = {
    "kl_div": {},
    "cross_entropy": {},
    "jsd": {"beta": 0.3},
    "reverse_kl": {},
    "skew_kl": {"alpha": 0.1},
    "skew_reverse_kl": {"alpha": 0.1},
    "tvd": {},
}
FINITE_UNDER_RENORMALIZE = ("kl_div", "cross_entropy", "jsd", "skew_kl", "skew_reverse_kl", "tvd")
FORMS = [("renormalize", "logits"), ("renormalize", "log_probs"), ("tail", "log_probs")]


def divergence(name: str, options: dict, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row D(P ‖ Q) on bins from log-probabilities (0·log 0 = 0)."""
    p, q = log_p.exp(), log_q.exp()

    def kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
        return torch.where(log_a > -math.inf, log_a.exp() * (log_a - log_b), 0.0).sum(-1)

    def mixture(a: float, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
        if a == 0.0:
            return log_b
        if a == 1.0:
            return log_a
        return torch.logaddexp(log_a + math.log(a), log_b + math.log(1 - a))

    if name == "kl_div":
        return kl(log_p, log_q)
    if name == "cross_entropy":
        return -torch.where(log_p > -math.inf, p * log_q, 0.0).sum(-1)
    if name == "reverse_kl":
        return kl(log_q, log_p)
    if name == "jsd":
        beta = options["beta"]
        log_m = mixture(beta, log_p, log_q)
        return beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)
    if name == "skew_kl":
        return kl(log_p, mixture(options["alpha"], log_p, log_q))
    if name == "skew_reverse_kl":
        return kl(log_q, mixture(1 - options["alpha"], log_p, log_q))
    return 0.5 * (p - q).abs().sum(-1)


def reference(name, options, student, indices, values, form, policy, *, T=2.0, reduction="batchmean", mask=None, compute=None):
    """(loss, gradient) of the top-k formula by autograd, in ``compute`` (float64 unless said)."""
    compute = compute or torch.float64
    C, k = student.shape[-1], indices.shape[-1]
    leaf = student.detach().to(compute).requires_grad_(True)
    keep = torch.ones(student.shape[:-1], dtype=torch.bool) if mask is None else mask
    s, idx, v = (
        leaf.reshape(-1, C)[keep.reshape(-1)],
        indices.reshape(-1, k)[keep.reshape(-1)],
        values.to(compute).reshape(-1, k)[keep.reshape(-1)],
    )
    log_q = torch.log_softmax(s / T, -1)
    inside = torch.zeros_like(log_q, dtype=torch.bool).scatter(-1, idx, True)
    log_q_tail = torch.logsumexp(log_q.masked_fill(inside, -math.inf), -1, keepdim=True)
    bins_q = torch.cat([log_q.gather(-1, idx), log_q_tail], -1)
    if policy == "renormalize":
        log_p = torch.log_softmax(v / T if form == "logits" else v, -1)
        tail = torch.full_like(log_q_tail, -math.inf)
    else:
        log_p = v
        tail = torch.log((1 - v.exp().sum(-1, keepdim=True)).clamp(min=0)) if k < C else torch.full_like(log_q_tail, -math.inf)
    rows = divergence(name, options, torch.cat([log_p, tail], -1), bins_q) * T * T
    kept = rows.shape[0]
    if reduction == "none":
        loss, total = rows, rows.sum()
    else:
        normalizer = {"batchmean": kept, "sum": 1, "mean": kept if name == "cross_entropy" else kept * C}[reduction]
        loss = total = rows.sum() / max(normalizer, 1)
    (grad,) = torch.autograd.grad(total, leaf) if kept else (torch.zeros_like(leaf),)
    return loss.detach(), grad


def teacher(shape, k, form, seed, dtype=torch.float64):
    """Unsorted top-k indices of a random teacher and its values in ``form``."""
    logits = inputs.logits(shape, torch.float64, seed)
    order = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    indices = logits.topk(k, dim=-1).indices[..., order]
    values = logits.gather(-1, indices) if form == "logits" else torch.log_softmax(logits, -1).gather(-1, indices)
    return indices, values.to(dtype)


def arguments(indices, values, form, policy, name):
    return {"teacher_topk_indices": indices, f"teacher_topk_{form}": values, "missing_mass": policy, **LOSS_OPTIONS[name]}


def check(name, student, indices, values, form, policy, *, T=2.0, reduction=None, mask=None):
    reduction = reduction or ("mean" if name == "cross_entropy" else "batchmean")
    result = getattr(distill, name)(
        student, **arguments(indices, values, form, policy, name), temperature=T, reduction=reduction, mask=mask
    )
    options = LOSS_OPTIONS[name]
    expected = reference(name, options, student, indices, values, form, policy, T=T, reduction=reduction, mask=mask)
    loss = result.loss if reduction != "none" or mask is None else result.loss[mask]
    assert result.grad is not None and result.grad.shape == student.shape and result.grad.dtype == student.dtype
    if student.dtype == torch.float64:
        assert_close(loss.reshape(expected[0].shape), expected[0], torch.float64)
        assert_close(result.grad, expected[1], torch.float64)
    else:
        theirs = reference(
            name, options, student, indices, values, form, policy, T=T, reduction=reduction, mask=mask, compute=torch.float32
        )
        assert_as_accurate_as_torch(loss.reshape(expected[0].shape), theirs[0], expected[0])
        assert_as_accurate_as_torch(result.grad, theirs[1], expected[1])
    return result


def cases():
    for name in LOSS_OPTIONS:
        for policy, form in FORMS:
            if policy == "renormalize" and name not in FINITE_UNDER_RENORMALIZE:
                continue
            yield name, policy, form


CASES = list(cases())


@pytest.mark.parametrize(("name", "policy", "form"), CASES)
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_matches_the_formula_with_autograd(name, policy, form, reduction):
    shape = (2, 5, 40)
    if name == "cross_entropy" and reduction == "batchmean":
        reduction = "mean"
    student = inputs.logits(shape, torch.float64, 1)
    indices, values = teacher(shape, 6, form, 2)
    result = check(name, student, indices, values, form, policy, reduction=reduction)
    if reduction == "none":
        assert result.loss.shape == shape[:-1]


@pytest.mark.parametrize(("name", "policy", "form"), CASES)
def test_masked_rows_are_dropped_and_never_inspected(name, policy, form):
    shape = (3, 4, 30)
    mask = random_mask(shape, torch.Generator().manual_seed(7))
    student = inputs.logits(shape, torch.float64, 3)
    indices, values = teacher(shape, 5, form, 4)
    indices[~mask] = -7
    values[~mask] = math.nan
    result = check(name, student, indices, values, form, policy, mask=mask)
    assert torch.all(result.grad[~mask] == 0)


@pytest.mark.parametrize(("name", "policy", "form"), CASES)
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
def test_float32_is_as_accurate_as_torch_at_large_offsets(name, policy, form, offset):
    shape = (6, 64)
    student = inputs.logits(shape, torch.float32, 5) + offset
    indices, values = teacher(shape, 8, form, 6, torch.float32)
    if form == "logits":
        values = values + offset
    check(name, student, indices, values, form, policy, T=1.0)


@pytest.mark.parametrize(("name", "policy", "form"), CASES)
def test_half_precision_students_compute_in_float32(name, policy, form):
    student = inputs.logits((4, 32), torch.bfloat16, 8)
    indices, values = teacher((4, 32), 4, form, 9, torch.float32)
    result = getattr(distill, name)(student, **arguments(indices, values, form, policy, name), temperature=2.0)
    reduction = "mean" if name == "cross_entropy" else "batchmean"
    expected = reference(name, LOSS_OPTIONS[name], student, indices, values, form, policy, reduction=reduction)
    assert result.grad.dtype == torch.bfloat16
    assert_close(result.loss, expected[0], torch.bfloat16)
    assert_close(result.grad, expected[1], torch.bfloat16)


@pytest.mark.parametrize("name", LOSS_OPTIONS)
def test_k_equal_to_c_and_a_one_dimensional_student(name):
    student = inputs.logits((9,), torch.float64, 10)
    for policy, form in FORMS:
        indices, values = teacher((9,), 9, form, 11)
        check(name, student, indices, values, form, policy)
    indices, values = teacher((9,), 3, "log_probs", 12)
    check(name, student, indices, values, "log_probs", "tail")


def test_renormalize_is_the_dense_loss_against_the_renormalised_teacher():
    student = inputs.logits((4, 50), torch.float64, 13)
    indices, values = teacher((4, 50), 7, "log_probs", 14)
    dense = torch.zeros(4, 50, dtype=torch.float64).scatter(-1, indices, torch.softmax(values, -1))
    for name in FINITE_UNDER_RENORMALIZE:
        options = LOSS_OPTIONS[name]
        sparse = getattr(distill, name)(student, **arguments(indices, values, "log_probs", "renormalize", name), temperature=3.0)
        full = getattr(distill, name)(student, teacher_probs=dense, temperature=3.0, **options)
        assert_close(sparse.loss, full.loss, torch.float64)
        assert_close(sparse.grad, full.grad, torch.float64)


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(CASES),
    rows=st.integers(1, 5),
    classes=st.integers(1, 60),
    k_share=st.floats(0.0, 1.0),
    temperature=st.sampled_from([0.5, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_random_inputs_match_the_formula(case, rows, classes, k_share, temperature, seed):
    name, policy, form = case
    k = max(1, round(k_share * classes))
    student = inputs.logits((rows, classes), torch.float64, seed)
    indices, values = teacher((rows, classes), k, form, seed + 1)
    check(name, student, indices, values, form, policy, T=temperature)


@pytest.mark.parametrize(("name", "policy", "form"), CASES)
def test_a_group_answers_each_request_as_alone(name, policy, form):
    group = []
    for index in range(5):
        lead = [(3,), (2, 2), (5,)][index % 3]
        mask = torch.ones(lead, dtype=torch.bool)
        mask.view(-1)[-1] = index % 2 == 0
        student = inputs.logits((*lead, 20), torch.float32, index)
        indices, values = teacher((*lead, 20), 4, form, 40 + index, torch.float32)
        reduction = ["batchmean", "sum", "none"][index % 3] if name != "cross_entropy" else ["mean", "sum", "none"][index % 3]
        group.append(
            LOSSES[name].prepare(student, **arguments(indices, values, form, policy, name), temperature=2.0, reduction=reduction, mask=mask)
        )
    assert len({item.key for item in group}) == 1
    for grouped, item in zip(run_grouped(group), group, strict=True):
        alone = run(item)
        torch.testing.assert_close(grouped.loss, alone.loss)
        torch.testing.assert_close(grouped.grad, alone.grad)


STUDENT = inputs.logits((2, 10), torch.float64, 20)
INDICES, LOG_PROBS = teacher((2, 10), 3, "log_probs", 21)
WITH_NAN = LOG_PROBS.clone()
WITH_NAN[1, 1] = math.nan


def error_of(name: str = "kl_div", **changes) -> InputError:
    call = {"teacher_topk_indices": INDICES, "teacher_topk_log_probs": LOG_PROBS, "missing_mass": "tail"} | changes
    call = {key: value for key, value in call.items() if value is not None}
    with pytest.raises(InputError) as caught:
        getattr(distill, name)(call.pop("student_logits", STUDENT), **call)
    return caught.value


@pytest.mark.parametrize(
    ("changes", "field", "reason", "index"),
    [
        (
            {"teacher_topk_indices": INDICES.clone().index_put_((torch.tensor(1), torch.tensor(2)), INDICES[1, 0])},
            "teacher_topk_indices",
            "repeats",
            (1, 2),
        ),
        (
            {"teacher_topk_indices": INDICES.clone().index_put_((torch.tensor(0), torch.tensor(1)), torch.tensor(10))},
            "teacher_topk_indices",
            "[0, 10)",
            (0, 1),
        ),
        ({"teacher_topk_indices": -INDICES - 1}, "teacher_topk_indices", "[0, 10)", (0, 0)),
        (
            {"teacher_topk_indices": torch.arange(11).repeat(2, 1), "teacher_topk_log_probs": torch.full((2, 11), -3.0)},
            "teacher_topk_indices",
            "k = 11",
            None,
        ),
        ({"teacher_topk_indices": INDICES[:1]}, "teacher_topk_indices", "leading shape", None),
        ({"teacher_topk_indices": INDICES.float()}, "teacher_topk_indices", "integer", None),
        ({"teacher_topk_log_probs": LOG_PROBS[:, :2]}, "teacher_topk_log_probs", "shape", None),
        ({"teacher_topk_log_probs": LOG_PROBS.abs()}, "teacher_topk_log_probs", "<= 0", (0, 0)),
        (
            {"teacher_topk_log_probs": WITH_NAN},
            "teacher_topk_log_probs",
            "NaN",
            (1, 1),
        ),
        (
            {"teacher_topk_log_probs": torch.log(torch.full((2, 3), 0.34, dtype=torch.float64))},
            "teacher_topk_log_probs",
            "1 + 0.0001",
            (0,),
        ),
        ({"teacher_topk_logits": LOG_PROBS, "teacher_topk_log_probs": None}, "missing_mass", "'tail' needs", None),
        ({"teacher_topk_logits": LOG_PROBS}, "teacher_topk_logits", "both given", None),
        ({"teacher_topk_log_probs": None}, "teacher_topk_logits", "neither given", None),
        ({"missing_mass": None}, "missing_mass", "is required", None),
        ({"missing_mass": "drop"}, "missing_mass", "got 'drop'", None),
        ({"teacher_topk_indices": None}, "teacher_topk_indices", "is required", None),
        ({"teacher_logits": STUDENT}, "teacher", "dense form", None),
        (
            {"missing_mass": "renormalize", "teacher_topk_log_probs": torch.full((2, 3), -math.inf, dtype=torch.float64)},
            "teacher_topk_log_probs",
            "no probability mass",
            (0,),
        ),
    ],
)
def test_bad_top_k_teachers_name_the_field_and_row(changes, field, reason, index):
    error = error_of(**changes)
    assert error.argument == field and reason in error.reason, error
    if index is not None:
        assert error.index == index


@pytest.mark.parametrize(("name", "options"), [("reverse_kl", {}), ("jsd", {"beta": 1.0}), ("skew_reverse_kl", {"alpha": 0.0})])
def test_reverse_type_divergences_under_renormalize_say_what_keeps_them_finite(name, options):
    error = error_of(name, missing_mass="renormalize", **options)
    assert error.argument == "missing_mass" and error.index == (0,)
    assert "'renormalize'" in error.reason and "use missing_mass 'tail'" in error.reason


def test_reverse_kl_under_tail_with_a_full_top_k_is_infinite():
    log_probs = torch.log_softmax(torch.tensor([[5.0, 4.0, -1e3, -1e3], [1.0, 2.0, 3.0, 4.0]], dtype=torch.float64), -1)
    indices = torch.tensor([[0, 1], [3, 2]])
    full = log_probs.gather(-1, indices)
    full[0] = torch.log_softmax(full[0], -1)  # row 0: the two classes hold all the mass
    error = error_of(
        "reverse_kl", student_logits=torch.zeros(2, 4, dtype=torch.float64), teacher_topk_indices=indices, teacher_topk_log_probs=full
    )
    assert error.argument == "missing_mass" and error.index == (0,) and "sum to 1" in error.reason


def test_a_student_minus_inf_where_the_teacher_has_mass_is_named():
    student = STUDENT.clone()
    student[1, int(INDICES[1, 2])] = -math.inf
    error = error_of(student_logits=student)
    assert error.argument == "student_logits" and error.index == (1, int(INDICES[1, 2]))
    outside = torch.full_like(STUDENT, -math.inf).scatter(-1, INDICES, STUDENT.gather(-1, INDICES))
    error = error_of(student_logits=outside)
    assert error.argument == "student_logits" and "use missing_mass 'renormalize'" in error.reason
    assert torch.isfinite(
        distill.kl_div(outside, teacher_topk_indices=INDICES, teacher_topk_log_probs=LOG_PROBS, missing_mass="renormalize").loss
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"weight": torch.ones(10)}, "weight"), ({"label_smoothing": 0.1}, "label_smoothing"), ({"labels": torch.tensor([1, 2])}, "labels")],
)
def test_cross_entropy_options_a_top_k_teacher_cannot_honour(changes, field):
    assert error_of("cross_entropy", **changes).argument == field


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "policy", "form"), CASES)
def test_a_tail_far_below_the_top_k_is_computed_not_lost_to_underflow(dtype, name, policy, form):
    """Every class outside the top k more than ~100 (float32) or ~750 (float64) below the row maximum:
    their plain exponential sum underflows, the tail's log-sum-exp and its gradient shares must not."""
    student = torch.tensor([[2.0, 0.5, -1.0, 0.0, 1.0], [0.3, -2.0, 0.1, 0.2, -0.4]], dtype=torch.float64)
    indices = torch.tensor([[0, 4], [3, 0]])
    values = torch.tensor([[-0.6931472, -1.2039728], [-0.5, -1.5]], dtype=torch.float64)
    if form == "logits":
        values = values * 0.01
    result = getattr(distill, name)(student.to(dtype), **arguments(indices, values.to(dtype), form, policy, name), temperature=1e-3)
    expected = reference(name, LOSS_OPTIONS[name], student, indices, values, form, policy, T=1e-3)
    assert math.isfinite(float(result.loss))
    assert_close(result.loss, expected[0], dtype)
    assert_close(result.grad, expected[1], dtype)


def test_tail_with_every_class_listed_must_hold_all_the_mass():
    log_probs = torch.full((2, 10), -3.0, dtype=torch.float64)
    error = error_of(teacher_topk_indices=torch.arange(10).repeat(2, 1), teacher_topk_log_probs=log_probs)
    assert error.argument == "teacher_topk_log_probs" and "no tail bin" in error.reason and error.index == (0,)


@pytest.mark.parametrize("name", ["kl_div", "cross_entropy"])
def test_missing_mass_without_a_top_k_teacher_names_itself(name):
    dense = {"teacher_logits": STUDENT} if name == "kl_div" else {"labels": torch.tensor([1, 2])}
    error = error_of(name, teacher_topk_indices=None, teacher_topk_log_probs=None, **dense)
    assert error.argument == "missing_mass" and "drop it" in error.reason


@pytest.mark.parametrize("form", ["dense", "topk"])
def test_float64_teacher_logits_beyond_a_float32_students_range_are_named(form):
    student = torch.randn(2, 3)
    huge = torch.tensor([[1e39, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    call = (
        {"teacher_logits": huge}
        if form == "dense"
        else {"teacher_topk_indices": torch.tensor([[0], [1]]), "teacher_topk_logits": huge[:, :1], "missing_mass": "renormalize"}
    )
    with pytest.raises(InputError, match="beyond float32's range") as caught:
        distill.kl_div(student, **call)
    assert caught.value.argument == ("teacher_logits" if form == "dense" else "teacher_topk_logits")
    assert math.isfinite(float(distill.kl_div(student.double(), **call).loss))
