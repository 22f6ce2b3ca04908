"""KL divergence between the teacher and the student at temperature T (Hinton et al. 2015).

With student logits s, temperature T, log q = log_softmax(s / T) and teacher distribution p (softmax of
teacher logits / T, or probabilities / log-probabilities taken as given), each element is

    l_ij = T² · p_ij · (log p_ij − log q_ij)          (0 where p_ij = 0, i.e. 0·log 0 = 0)

which is ``T² · F.kl_div(log q, p, reduction)`` on the (rows, C) flattening. Reductions:
``batchmean`` = Σ l / rows (default), ``sum``, ``mean`` = Σ l / (rows · C), ``none`` (element-wise).

Gradient (closed form, what autograd through log_softmax gives):

    ∂L/∂s_ij = (T² / (T · norm)) · (q_ij · Σ_k p_ik − p_ij)

so for a normalised teacher and ``batchmean`` it is T · (softmax(s/T) − p) / rows. The T² factor can be
turned off with ``scale_t2=False``.

Classes masked with -inf in the student where the teacher also has zero mass contribute 0 and get a
zero gradient; teacher mass on a class where the student is -inf makes the true KL infinite, which is
an :class:`~distill.errors.InputError` naming the row and class.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.losses.common import MISSING_MASS, SCALE_T2, STUDENT_LOGITS, TEACHER_FORMS, TEACHER_TOPK, TEMPERATURE
from distill.losses.terms import FORWARD_KL
from distill.losses.topk import prepare_topk, topk_example
from distill.native import kernels as native
from distill.native.kernels import Fused
from distill.registry import Option, register
from distill.rows.checks import check_logits
from distill.rows.kernel import Chunk, ChunkResult, Kernel
from distill.rows.layout import Rows, check_temperature, make_rows, raise_at, take
from distill.rows.prepared import Prepared
from distill.rows.reduction import check_reduction, element_normalizer, grad_scale
from distill.rows.softmax import softmax_and_log_norm
from distill.rows.teacher import Teacher, soft_teacher
from distill.rows.topk import TopKArguments

REDUCTIONS = ("batchmean", "sum", "mean", "none")


def prepare_kl_div(
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
    """Validate a KL(teacher ‖ student) request without computing it (:func:`kl_div` computes it).

    Args:
        student_logits: (..., C) floating tensor; -inf marks a masked class.
        teacher_logits / teacher_probs / teacher_log_probs: exactly one, same shape as the student, or
        teacher_topk_indices + teacher_topk_logits / teacher_topk_log_probs + missing_mass: a top-k
            teacher instead (:mod:`distill.losses.topk`; ``none`` is then one value per row).
        temperature: T > 0; divides student and teacher logits.
        scale_t2: multiply by T² (Hinton's scaling, keeps gradient magnitudes independent of T).
        reduction: ``batchmean`` (default), ``sum``, ``mean`` or ``none``.
        mask: optional bool tensor over the leading dimensions; False rows are dropped.
        compute_grad: also return d(loss)/d(student_logits).
    """
    reduction_ = check_reduction(reduction, REDUCTIONS)
    temperature = check_temperature(temperature)
    rows = make_rows(student_logits, mask)
    student = rows.flat(student_logits)
    row_max = check_logits(student, "student_logits", rows, allow_neg_inf=True)
    factor = temperature**2 if scale_t2 else 1.0
    normalizer = element_normalizer(reduction_, rows)
    topk = TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass)
    if topk.given:
        return prepare_topk(
            "kl_div",
            "KL divergence",
            FORWARD_KL,
            0.0,
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
    kind = teacher.kind

    def build(layout: Rows, data: dict[str, Tensor]) -> Kernel:
        return kl_kernel(layout, Teacher(kind, data["teacher"]), temperature, factor)

    def build_fused(data: dict[str, Tensor]) -> Fused:
        return native.soft_fused(data["teacher"], kind, data["row_max"], native.LOSS_KL, temperature, factor, None, 0.0)

    return Prepared(
        loss="kl_div",
        rows=rows,
        student=student,
        data={"teacher": teacher.flat, "row_max": row_max},
        build=build,
        build_fused=build_fused,
        key=("kl_div", rows.n_classes, student.dtype, student.device, kind, teacher.flat.dtype, temperature, factor),
        reduction=reduction_,
        normalizer=normalizer,
        grad_scale=grad_scale(factor / temperature, normalizer),
        compute_grad=compute_grad,
    )


def kl_kernel(rows: Rows, teacher: Teacher, temperature: float, factor: float) -> Kernel:
    """Build the per-chunk KL kernel for a validated teacher (shared with the batcher).

    One softmax pass per side gives q = softmax(s/T) (the gradient's main term), p, and their
    log-normalisers (:mod:`distill.rows.softmax`), so log p − log q = (t/T − max) − (s/T − max) + (log max p −
    log max q) is formed from shifted logits (no cancellation at large logits) and needs no
    per-element logarithm. Probabilities and log-probabilities from the teacher are used as given.
    """
    inverse_t = 1.0 / temperature

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        s = chunk.student
        z = s if inverse_t == 1.0 else s * inverse_t
        assert chunk.row_max is not None
        z_max = chunk.row_max * inverse_t
        q, norm_s = softmax_and_log_norm(z, z_max, chunk.grad_out if want_grad else None)
        shifted_s = z - z_max.unsqueeze(1)
        t = take(teacher.flat, chunk.selection).to(s.dtype)
        if teacher.kind == "logits":
            zt = t if inverse_t == 1.0 else t * inverse_t
            zt_max = zt.amax(dim=-1)
            p, norm_t = softmax_and_log_norm(zt, zt_max)
            log_ratio = (zt - zt_max.unsqueeze(1)).sub_(shifted_s).add_(norm_t.sub_(norm_s).unsqueeze(1))
        else:
            p = t.exp() if teacher.kind == "log_probs" else t
            log_p = t if teacher.kind == "log_probs" else t.log()
            log_ratio = torch.sub(log_p, shifted_s).sub_(norm_s.unsqueeze(1))
        elements = log_ratio.mul_(p)
        row_loss = elements.sum(dim=-1)
        if not bool(torch.isfinite(row_loss).all()):
            row_loss = _zero_mass_terms(chunk, rows, teacher, elements, p, z)
        if factor != 1.0:
            row_loss.mul_(factor)
            if want_elements:
                elements.mul_(factor)
        grad = None
        if want_grad:
            if teacher.kind != "logits":
                q.mul_(p.sum(dim=-1, keepdim=True))
            grad = q.sub_(p).mul_(chunk.grad_scale)
        return ChunkResult(row_loss, elements if want_elements else None, grad)

    return kernel


def _zero_mass_terms(chunk: Chunk, rows: Rows, teacher: Teacher, elements: Tensor, p: Tensor, z: Tensor) -> Tensor:
    """Slow path for rows with a non-finite sum: apply 0·log 0 = 0, or report infinite KL.

    Where the teacher has zero mass the element is 0·(log 0 − log q) = NaN in floating point; it is
    0 by definition. Where the teacher has mass and the student is -inf the KL is truly infinite.
    """
    raise_at(
        "student_logits",
        f"is -inf where {teacher.argument} has probability mass: the KL divergence is infinite",
        rows,
        chunk.selection,
        (p > 0) & (z == -math.inf),
    )
    elements.masked_fill_(p == 0, 0.0)
    return elements.sum(dim=-1)


def _examples(student: Tensor) -> list[dict[str, object]]:
    return [{"teacher_logits": torch.randn_like(student), "temperature": 2.0}, {**topk_example(student), "temperature": 2.0}]


kl_div = register(
    prepare_kl_div,
    title="KLDiv",
    summary="KL divergence T²·KL(teacher ‖ student) and its gradient",
    description="T² · KL(teacher ‖ softmax(student / T)), rows flattened, ``batchmean`` = Σ / rows.",
    inputs=(STUDENT_LOGITS, *TEACHER_FORMS, *TEACHER_TOPK),
    options=(
        MISSING_MASS,
        TEMPERATURE,
        SCALE_T2,
        Option(
            "reduction",
            "batchmean = Σ / kept rows; sum; mean = Σ / elements; none = per element, per row with a top-k teacher "
            "(not in the combined objective).",
            choices=REDUCTIONS,
        ),
    ),
    examples=_examples,
)
