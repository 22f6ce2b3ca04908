"""Divergences for language-model distillation: generalized JSD(β), reverse KL, skew KL, skew reverse KL, TVD.

Rows, masks, temperature, teacher forms and reductions follow :mod:`distill.losses.kl_div` exactly:
q = softmax(s / T) is the student, p the teacher (softmax(t / T) for teacher logits; probabilities
and log-probabilities taken as given), every term is multiplied by T² unless ``scale_t2`` is false,
and the reductions are ``batchmean`` = Σ / kept rows (default), ``sum``, ``mean`` = Σ / elements and
``none`` (element-wise, gradient of the sum). With KL(a‖b) = Σ a (log a − log b) and 0·log 0 = 0:

* ``jsd`` (GKD, Agarwal et al. 2024; TRL's ``generalized_jsd_loss``, Liger's ``LigerJSD``):
  M = β·p + (1−β)·q,  JSD_β = β·KL(p‖M) + (1−β)·KL(q‖M)  for 0 < β < 1;
  β = 0 is KL(p‖q) and β = 1 is KL(q‖p). The interior formula tends to 0 at both ends (M becomes q,
  resp. p, and the surviving term is KL(q‖q) = 0, resp. KL(p‖p) = 0) while JSD_β / (β(1−β)) tends to
  the KL divergences; TRL defines the end points as those divergences, so the value jumps there.
* ``reverse_kl`` (MiniLLM, Gu et al. 2024): KL(q‖p).
* ``skew_kl`` (DistiLLM, Ko et al. 2024): KL(p ‖ α·p + (1−α)·q), 0 ≤ α ≤ 1 (α = 0: KL(p‖q)).
* ``skew_reverse_kl`` (DistiLLM): KL(q ‖ (1−α)·p + α·q), 0 ≤ α ≤ 1 (α = 0: KL(q‖p)).
* ``tvd``: ½ Σ |p − q|. Its gradient scales as 1/T, not 1/T², so with T ≠ 1 ``scale_t2: false`` may
  suit it better; T² is the default for every soft term, as everywhere in the API.

Gradient. Each divergence is a function D(q) of the student distribution; with w_j = q_j · ∂D/∂q_j,
the chain rule through the softmax gives ∂D/∂z_j = w_j − q_j · Σ_k w_k (z = s / T), and
∂L/∂s = (T² / (T · norm)) · ∂D/∂z. With m the mixture of each divergence:

  forward KL (jsd β = 0, skew KL α = 0)  w = −p
  reverse KL (jsd β = 1)                 w = q · (log q − log p)
  jsd, 0 < β < 1                         w = (1−β) · q · (log q − log M)   (the β·p/M terms cancel)
  skew KL, α > 0                         w = −(1−α) · q · p / m
  skew reverse KL                        w = q · (log q − log m − α · q / m)
  tvd                                    w = ½ · q · sign(q − p)           (0 where p = q, as autograd)

Mixtures are formed in log space (log m = logaddexp(log a + log p, log b + log q)) and log q, log p
from the max-shifted logits, so nothing underflows to log 0 that is not 0.

Infinities: the value is infinite, and the request an :class:`~distill.errors.InputError` naming the
row and class, where a KL(p‖·)-type term (forward KL, jsd β = 0, skew KL α = 0) meets a −inf student
class carrying teacher mass, and where a KL(q‖·)-type term (reverse KL, jsd β = 1, skew reverse KL
α = 0) meets a class of teacher probability 0 (probability 0, log-probability or logit −inf) that the
student gives mass. Everything else stays finite and is computed; −inf student classes without teacher
mass contribute 0 and get a zero gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.losses.common import MISSING_MASS, SCALE_T2, STUDENT_LOGITS, TEACHER_FORMS, TEACHER_TOPK, TEMPERATURE
from distill.losses.terms import (
    REVERSE_KL,
    TVD,
    Divergence,
    Infinite,
    jsd_divergence,
    skew_kl_divergence,
    skew_reverse_kl_divergence,
)
from distill.losses.topk import prepare_topk, topk_example
from distill.native import kernels as native
from distill.native.kernels import Fused
from distill.registry import Option, register
from distill.rows.checks import check_logits
from distill.rows.kernel import Chunk, ChunkResult, Kernel
from distill.rows.layout import Rows, check_fraction, check_temperature, make_rows, raise_at, take
from distill.rows.prepared import Prepared
from distill.rows.reduction import check_reduction, element_normalizer, grad_scale
from distill.rows.softmax import softmax_and_log_softmax
from distill.rows.teacher import Teacher, soft_teacher
from distill.rows.topk import TopKArguments

REDUCTIONS = ("batchmean", "sum", "mean", "none")
REDUCTION = Option(
    "reduction",
    "batchmean = Σ / kept rows; sum; mean = Σ / elements; none = per element, per row with a top-k teacher "
    "(not in the combined objective).",
    choices=REDUCTIONS,
)


def _prepare(
    name: str,
    what: str,
    divergence: Divergence,
    parameter: float,
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    teacher_probs: Tensor | None,
    teacher_log_probs: Tensor | None,
    topk: TopKArguments,
    temperature: float,
    scale_t2: bool,
    reduction: str,
    mask: Tensor | None,
    compute_grad: bool,
) -> Prepared:
    reduction_ = check_reduction(reduction, REDUCTIONS)
    temperature = check_temperature(temperature)
    rows = make_rows(student_logits, mask)
    student = rows.flat(student_logits)
    row_max = check_logits(student, "student_logits", rows, allow_neg_inf=True)
    normalizer = element_normalizer(reduction_, rows)
    if topk.given:
        return prepare_topk(
            name,
            what,
            divergence,
            parameter,
            rows,
            student,
            row_max,
            topk,
            (teacher_logits, teacher_probs, teacher_log_probs),
            temperature,
            scale_t2,
            reduction_,
            normalizer,
            compute_grad,
        )
    teacher = soft_teacher(
        rows, student, row_max, "student_logits", temperature, logits=teacher_logits, probs=teacher_probs, log_probs=teacher_log_probs
    )
    factor = temperature**2 if scale_t2 else 1.0
    kind = teacher.kind

    def build(layout: Rows, data: dict[str, Tensor]) -> Kernel:
        return divergence_kernel(layout, Teacher(kind, data["teacher"]), temperature, factor, divergence, what)

    def build_fused(data: dict[str, Tensor]) -> Fused:
        return native.divergence_fused(data["teacher"], kind, data["row_max"], divergence.code, parameter, temperature, factor)

    return Prepared(
        loss=name,
        rows=rows,
        student=student,
        data={"teacher": teacher.flat, "row_max": row_max},
        build=build,
        build_fused=build_fused,
        key=(name, rows.n_classes, student.dtype, student.device, kind, teacher.flat.dtype, temperature, factor, parameter),
        reduction=reduction_,
        normalizer=normalizer,
        grad_scale=grad_scale(factor / temperature, normalizer),
        compute_grad=compute_grad,
    )


def prepare_jsd(
    student_logits: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    teacher_log_probs: Tensor | None = None,
    teacher_topk_indices: Tensor | None = None,
    teacher_topk_logits: Tensor | None = None,
    teacher_topk_log_probs: Tensor | None = None,
    missing_mass: str | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_t2: bool = True,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a generalized JSD(β) request (:func:`jsd` computes it); arguments as :func:`~distill.losses.kl_div.prepare_kl_div`.

    Args:
        beta: β in [0, 1], the teacher's weight in the mixture M = β·p + (1−β)·q; 0 is KL(p‖q), 1 is KL(q‖p).

    Raises:
        InputError: as ``kl_div``; ``beta`` outside [0, 1]; an infinite value (β ∈ {0, 1}, see the module docstring).
    """
    beta = check_fraction("beta", beta)
    return _prepare(
        "jsd",
        "generalized JSD",
        jsd_divergence(beta),
        beta,
        student_logits,
        teacher_logits,
        teacher_probs,
        teacher_log_probs,
        TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass),
        temperature,
        scale_t2,
        reduction,
        mask,
        compute_grad,
    )


def prepare_reverse_kl(
    student_logits: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    teacher_log_probs: Tensor | None = None,
    teacher_topk_indices: Tensor | None = None,
    teacher_topk_logits: Tensor | None = None,
    teacher_topk_log_probs: Tensor | None = None,
    missing_mass: str | None = None,
    temperature: float = 1.0,
    scale_t2: bool = True,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a reverse KL(q‖p) request (:func:`reverse_kl` computes it); arguments as ``kl_div``.

    Raises:
        InputError: as ``kl_div``; teacher probability 0 where the student has mass (infinite value).
    """
    return _prepare(
        "reverse_kl",
        "reverse KL divergence",
        REVERSE_KL,
        0.0,
        student_logits,
        teacher_logits,
        teacher_probs,
        teacher_log_probs,
        TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass),
        temperature,
        scale_t2,
        reduction,
        mask,
        compute_grad,
    )


def prepare_skew_kl(
    student_logits: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    teacher_log_probs: Tensor | None = None,
    teacher_topk_indices: Tensor | None = None,
    teacher_topk_logits: Tensor | None = None,
    teacher_topk_log_probs: Tensor | None = None,
    missing_mass: str | None = None,
    alpha: float = 0.1,
    temperature: float = 1.0,
    scale_t2: bool = True,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a skew KL request, KL(p ‖ α·p + (1−α)·q) (:func:`skew_kl` computes it); arguments as ``kl_div``.

    Args:
        alpha: α in [0, 1], the teacher's share of the skewed student; 0 is KL(p‖q).

    Raises:
        InputError: as ``kl_div``; ``alpha`` outside [0, 1]; an infinite value (α = 0).
    """
    alpha = check_fraction("alpha", alpha)
    return _prepare(
        "skew_kl",
        "skew KL divergence",
        skew_kl_divergence(alpha),
        alpha,
        student_logits,
        teacher_logits,
        teacher_probs,
        teacher_log_probs,
        TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass),
        temperature,
        scale_t2,
        reduction,
        mask,
        compute_grad,
    )


def prepare_skew_reverse_kl(
    student_logits: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    teacher_log_probs: Tensor | None = None,
    teacher_topk_indices: Tensor | None = None,
    teacher_topk_logits: Tensor | None = None,
    teacher_topk_log_probs: Tensor | None = None,
    missing_mass: str | None = None,
    alpha: float = 0.1,
    temperature: float = 1.0,
    scale_t2: bool = True,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a skew reverse KL request, KL(q ‖ (1−α)·p + α·q) (:func:`skew_reverse_kl` computes it).

    Args:
        alpha: α in [0, 1], the student's share of the skewed teacher; 0 is KL(q‖p).

    Raises:
        InputError: as ``kl_div``; ``alpha`` outside [0, 1]; an infinite value (α = 0).
    """
    alpha = check_fraction("alpha", alpha)
    return _prepare(
        "skew_reverse_kl",
        "skew reverse KL divergence",
        skew_reverse_kl_divergence(alpha),
        alpha,
        student_logits,
        teacher_logits,
        teacher_probs,
        teacher_log_probs,
        TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass),
        temperature,
        scale_t2,
        reduction,
        mask,
        compute_grad,
    )


def prepare_tvd(
    student_logits: Tensor,
    *,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    teacher_log_probs: Tensor | None = None,
    teacher_topk_indices: Tensor | None = None,
    teacher_topk_logits: Tensor | None = None,
    teacher_topk_log_probs: Tensor | None = None,
    missing_mass: str | None = None,
    temperature: float = 1.0,
    scale_t2: bool = True,
    reduction: str = "batchmean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a total variation distance request, ½ Σ |p − q| (:func:`tvd` computes it); arguments as ``kl_div``."""
    return _prepare(
        "tvd",
        "total variation distance",
        TVD,
        0.0,
        student_logits,
        teacher_logits,
        teacher_probs,
        teacher_log_probs,
        TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass),
        temperature,
        scale_t2,
        reduction,
        mask,
        compute_grad,
    )


def _teacher_parts(t: Tensor, kind: str, inverse_t: float) -> tuple[Tensor, Tensor]:
    """The teacher's p and log p for a chunk (already in the compute dtype)."""
    if kind == "logits":
        zt = t if inverse_t == 1.0 else t * inverse_t
        return softmax_and_log_softmax(zt, zt.amax(dim=-1))
    if kind == "log_probs":
        return t.exp(), t
    return t, t.log()


def divergence_kernel(rows: Rows, teacher: Teacher, temperature: float, factor: float, divergence: Divergence, what: str) -> Kernel:
    """The per-chunk torch kernel of one divergence: its elements and ∂D/∂z = w − q·Σw (module docstring)."""
    terms, infinite = divergence.terms, divergence.infinite
    inverse_t = 1.0 / temperature

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        s = chunk.student
        z = s if inverse_t == 1.0 else s * inverse_t
        assert chunk.row_max is not None
        q, log_q = softmax_and_log_softmax(z, chunk.row_max * inverse_t, chunk.grad_out if want_grad else None)
        t = take(teacher.flat, chunk.selection).to(s.dtype)
        p, log_p = _teacher_parts(t, teacher.kind, inverse_t)
        elements, w = terms(q, log_q, p, log_p, False)
        row_loss = elements.sum(dim=-1)
        if not bool(torch.isfinite(row_loss).all()) or (want_grad and not bool(torch.isfinite(w).all())):
            _raise_if_infinite(infinite, what, teacher, rows, chunk, z, t)
            elements, w = terms(q, log_q, p, log_p, True)
            row_loss = elements.sum(dim=-1)
        grad = None
        if want_grad:
            total = w.sum(dim=-1, keepdim=True)
            grad = q.mul_(total.neg_()).add_(w).mul_(chunk.grad_scale)
        if factor != 1.0:
            row_loss.mul_(factor)
            if want_elements:
                elements.mul_(factor)
        return ChunkResult(row_loss, elements if want_elements else None, grad)

    return kernel


def _raise_if_infinite(infinite: Infinite, what: str, teacher: Teacher, rows: Rows, chunk: Chunk, z: Tensor, t: Tensor) -> None:
    """Name the first element where the divergence is infinite, if the divergence can be.

    Probability 0 is read from the teacher as given (a probability of 0, a logit or log-probability of
    −inf), not from a computed p or log p, which can underflow where the true value is positive.
    """
    zero_mass = t == 0 if teacher.kind == "probs" else t == -math.inf
    if infinite == "forward":
        reason = f"is -inf where {teacher.argument} has probability mass: the {what} is infinite"
        raise_at("student_logits", reason, rows, chunk.selection, ~zero_mass & (z == -math.inf))
    elif infinite == "reverse":
        reason = f"has probability 0 where the student has probability mass: the {what} is infinite"
        raise_at(teacher.argument, reason, rows, chunk.selection, zero_mass & (z > -math.inf))


def _examples(student: Tensor) -> list[dict[str, object]]:
    return [{"teacher_logits": torch.randn_like(student), "temperature": 2.0}, {**topk_example(student), "temperature": 2.0}]


def _unit(name: str, description: str) -> Option:
    return Option(name, description, ge=0.0, le=1.0)


_INPUTS = (STUDENT_LOGITS, *TEACHER_FORMS, *TEACHER_TOPK)

jsd = register(
    prepare_jsd,
    title="JSD",
    summary="Generalized Jensen-Shannon divergence JSD(β) (GKD) and its gradient",
    description="T² · [β·KL(p‖M) + (1−β)·KL(q‖M)], M = β·p + (1−β)·q, q = softmax(student / T); β = 0 is KL(p‖q), β = 1 is KL(q‖p).",
    inputs=_INPUTS,
    options=(
        _unit("beta", "β in [0, 1]: the teacher's weight in the mixture; 0 is forward KL, 1 is reverse KL."),
        MISSING_MASS,
        TEMPERATURE,
        SCALE_T2,
        REDUCTION,
    ),
    examples=lambda student: [
        {"teacher_logits": torch.randn_like(student), "beta": 0.5, "temperature": 2.0},
        {**topk_example(student), "beta": 0.5},
    ],
)

reverse_kl = register(
    prepare_reverse_kl,
    title="ReverseKL",
    summary="Reverse KL divergence T²·KL(student ‖ teacher) (MiniLLM) and its gradient",
    description="T² · KL(q‖p), q = softmax(student / T); infinite (422) where the teacher has probability 0 and the student mass.",
    inputs=_INPUTS,
    options=(MISSING_MASS, TEMPERATURE, SCALE_T2, REDUCTION),
    examples=_examples,
)

skew_kl = register(
    prepare_skew_kl,
    title="SkewKL",
    summary="Skew KL divergence T²·KL(teacher ‖ α·teacher + (1−α)·student) (DistiLLM) and its gradient",
    description="T² · KL(p ‖ α·p + (1−α)·q), q = softmax(student / T); α = 0 is KL(p‖q).",
    inputs=_INPUTS,
    options=(
        _unit("alpha", "α in [0, 1]: the teacher's share of the skewed student; 0 is forward KL."),
        MISSING_MASS,
        TEMPERATURE,
        SCALE_T2,
        REDUCTION,
    ),
    examples=_examples,
)

skew_reverse_kl = register(
    prepare_skew_reverse_kl,
    title="SkewReverseKL",
    summary="Skew reverse KL divergence T²·KL(student ‖ (1−α)·teacher + α·student) (DistiLLM) and its gradient",
    description="T² · KL(q ‖ (1−α)·p + α·q), q = softmax(student / T); α = 0 is KL(q‖p).",
    inputs=_INPUTS,
    options=(
        _unit("alpha", "α in [0, 1]: the student's share of the skewed teacher; 0 is reverse KL."),
        MISSING_MASS,
        TEMPERATURE,
        SCALE_T2,
        REDUCTION,
    ),
    examples=_examples,
)

tvd = register(
    prepare_tvd,
    title="TVD",
    summary="Total variation distance T²·½Σ|teacher − student| and its gradient",
    description="T² · ½ Σ |p − q|, q = softmax(student / T); its gradient scales as 1/T, so scale_t2: false may suit T ≠ 1.",
    inputs=_INPUTS,
    options=(MISSING_MASS, TEMPERATURE, SCALE_T2, REDUCTION),
    examples=_examples,
)
