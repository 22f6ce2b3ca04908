"""Soft-label binary cross-entropy: an independent sigmoid per class, targets from the teacher.

With student **logits** s, temperature T, x = s / T and targets y (sigmoid(t / T) from teacher logits,
or teacher probabilities in [0, 1] as given), weight w and per-class pos_weight π (both broadcast
against the student's shape as in PyTorch), each element is

    l = T² · w · [ (1 − y) · x + (1 + (π − 1) · y) · softplus(−x) ]

which is ``T² · F.binary_cross_entropy_with_logits(x, y, w, pos_weight=π)``. Its gradient is

    ∂l/∂s = T · w · [ (1 + (π − 1) · y) · sigmoid(x) − π · y ]            (σ(x) − y without π)

With student **probabilities** q (no temperature), each element is exactly ``F.binary_cross_entropy``:
l = −w · [ y · max(log q, −100) + (1 − y) · max(log(1 − q), −100) ], and the gradient is PyTorch's
w · (q − y) / max(q · (1 − q), 1e-12).

Reductions: ``mean`` (default) = Σ l / elements, ``sum``, ``none``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.errors import InputError
from distill.losses.common import OPTIONAL_TEMPERATURE, SCALE_T2
from distill.native import kernels as native
from distill.native.kernels import Fused
from distill.registry import Option, TensorInput, register
from distill.rows.checks import check_logits, check_probs
from distill.rows.kernel import Chunk, ChunkResult, Kernel
from distill.rows.layout import FLOAT_DTYPES, Rows, check_temperature, make_rows, take
from distill.rows.prepared import Prepared
from distill.rows.reduction import check_reduction, element_normalizer, grad_scale
from distill.rows.teacher import Teacher, soft_teacher
from distill.wire import Kind

REDUCTIONS = ("mean", "sum", "none")
#: PyTorch's binary_cross_entropy backward clamps the denominator at 1e-12 *as a float32 constant*
#: (9.99999996e-13); the float64 value would differ from autograd by 4e-9 relative at q ∈ {0, 1}.
_EPSILON = float(torch.tensor(1e-12, dtype=torch.float32))
_UNDERFLOW = -80.0


def prepare_bce(
    student_logits: Tensor | None = None,
    *,
    student_probs: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    temperature: float | None = None,
    scale_t2: bool = True,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a soft-label BCE request without computing it (:func:`bce` computes it).

    Args:
        student_logits / student_probs: exactly one, shape (..., C).
        teacher_logits / teacher_probs: exactly one, same shape as the student.
        temperature: T > 0 (default 1) for student logits; not accepted with student probabilities.
        scale_t2: multiply logit-space losses by T².
        weight: rescales each element; broadcastable to the student's shape.
        pos_weight: weight of positive targets; broadcastable to the student's shape (usually (C,)).
        reduction: ``mean`` (default), ``sum`` or ``none``.
        mask: optional bool tensor over the leading dimensions; False rows are dropped.
        compute_grad: also return d(loss)/d(student input).
    """
    reduction_ = check_reduction(reduction, REDUCTIONS)
    if (student_logits is None) == (student_probs is None):
        raise InputError("student", "give exactly one of student_logits or student_probs")
    from_logits = student_logits is not None
    name = "student_logits" if from_logits else "student_probs"
    student_input = student_logits if student_logits is not None else student_probs
    assert student_input is not None
    if not from_logits and temperature is not None:
        raise InputError("temperature", "is only defined for student_logits, not student_probs")
    temperature_ = check_temperature(1.0 if temperature is None else temperature)
    rows = make_rows(student_input, mask, name)
    student = rows.flat(student_input)
    if from_logits:
        student_max = check_logits(student, name, rows, allow_neg_inf=False)
    else:
        check_probs(student, name, rows)
        student_max = None  # no temperature for probabilities
    teacher = soft_teacher(
        rows,
        student,
        student_max,
        name,
        temperature_,
        logits=teacher_logits,
        probs=teacher_probs,
        log_probs=None,
        allowed=("logits", "probs"),
    )
    data = {"teacher": teacher.flat}
    for option, value in (("weight", weight), ("pos_weight", pos_weight)):
        if value is not None:
            data[option] = _broadcast_flat(value, option, rows, student.device)
    factor = temperature_**2 if from_logits and scale_t2 else 1.0
    normalizer = element_normalizer(reduction_, rows)
    kind = teacher.kind

    def build(layout: Rows, per_row: dict[str, Tensor]) -> Kernel:
        teacher_ = Teacher(kind, per_row["teacher"])
        if not from_logits:
            return probs_kernel(teacher_, per_row.get("weight"))
        return logits_kernel(teacher_, temperature_, factor, per_row.get("weight"), per_row.get("pos_weight"))

    def build_fused(per_row: dict[str, Tensor]) -> Fused:
        return native.bce_fused(per_row["teacher"], kind, temperature_, factor, per_row.get("weight"), per_row.get("pos_weight"))

    dtypes = tuple((name, tensor.dtype) for name, tensor in sorted(data.items()))
    return Prepared(
        loss="bce",
        rows=rows,
        student=student,
        data=data,
        build=build,
        build_fused=build_fused if from_logits else None,
        key=("bce", rows.n_classes, student.dtype, student.device, dtypes, from_logits, kind, temperature_, factor),
        reduction=reduction_,
        normalizer=normalizer,
        grad_scale=grad_scale(factor / temperature_ if from_logits else 1.0, normalizer),
        compute_grad=compute_grad,
    )


def _broadcast_flat(tensor: Tensor, name: str, rows: Rows, device: torch.device) -> Tensor:
    """Broadcast a weight against the student shape and view it as (n_rows, C) per-row data.

    A per-class weight becomes a stride-0 view (no copy); only a weight that varies along several
    leading dimensions in ways a view cannot express is materialised.
    """
    if not isinstance(tensor, Tensor) or tensor.dtype not in FLOAT_DTYPES:
        raise InputError(name, "must be a floating tensor")
    try:
        torch.broadcast_shapes(tensor.shape, rows.shape)
    except RuntimeError:
        raise InputError(name, f"shape {tuple(tensor.shape)} does not broadcast to the student's shape {tuple(rows.shape)}") from None
    if torch.broadcast_shapes(tensor.shape, rows.shape) != rows.shape:
        raise InputError(name, f"shape {tuple(tensor.shape)} would enlarge the student's shape {tuple(rows.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(name, "must be finite", tuple(int(i) for i in (~torch.isfinite(tensor)).nonzero()[0]))
    return tensor.detach().to(device).expand(rows.shape).reshape(rows.n_rows, rows.n_classes)


def _rows_of(weight: Tensor | None, chunk: Chunk, dtype: torch.dtype) -> Tensor | None:
    return None if weight is None else take(weight, chunk.selection).to(dtype)


def logits_kernel(teacher: Teacher, temperature: float, factor: float, weight: Tensor | None, pos_weight: Tensor | None) -> Kernel:
    """Per-chunk BCE-with-logits kernel.

    σ(x) is needed for the gradient, and softplus(−x) = −log σ(x), so the loss costs one logarithm
    instead of softplus's exp and log1p. Below x = −80, σ(x) nears float32's underflow, and there
    −log σ(x) = −x to within e^−80, which is used instead.
    """
    inverse_t = 1.0 / temperature

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        s = chunk.student
        x = s if inverse_t == 1.0 else s * inverse_t
        t = take(teacher.flat, chunk.selection).to(s.dtype)
        y = torch.sigmoid(t if inverse_t == 1.0 else t * inverse_t) if teacher.kind == "logits" else t
        w = _rows_of(weight, chunk, s.dtype)
        pw = _rows_of(pos_weight, chunk, s.dtype)
        sig = torch.sigmoid(x)
        log_sig = sig.log()
        if float(x.amin()) < _UNDERFLOW:
            log_sig = torch.where(x < _UNDERFLOW, x, log_sig)
        log_weight = None if pw is None else (pw - 1.0) * y + 1.0
        elements = torch.addcmul(x, y, x, value=-1.0)
        if log_weight is None:
            elements.sub_(log_sig)
        else:
            elements.addcmul_(log_weight, log_sig, value=-1.0)
        if w is not None:
            elements.mul_(w)
        row_loss = elements.sum(dim=-1).mul_(factor)
        if want_elements and factor != 1.0:
            elements.mul_(factor)
        grad = None
        if want_grad:
            if log_weight is None:
                sig.sub_(y)
            else:
                assert pw is not None
                sig.mul_(log_weight).sub_(y * pw)
            if w is not None:
                sig.mul_(w)
            grad = sig.mul_(chunk.grad_scale)
        return ChunkResult(row_loss, elements if want_elements else None, grad)

    return kernel


def probs_kernel(teacher: Teacher, weight: Tensor | None) -> Kernel:
    """Per-chunk kernel for F.binary_cross_entropy on student probabilities (logs clamped at −100)."""

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        q = chunk.student
        t = take(teacher.flat, chunk.selection).to(q.dtype)
        y = torch.sigmoid(t) if teacher.kind == "logits" else t
        w = _rows_of(weight, chunk, q.dtype)
        log_q = q.log().clamp_(min=-100.0)
        log_1mq = torch.log1p(-q).clamp_(min=-100.0)
        elements = log_q.sub_(log_1mq).mul_(y).add_(log_1mq).neg_()
        if w is not None:
            elements.mul_(w)
        row_loss = elements.sum(dim=-1)
        grad = None
        if want_grad:
            denominator = (1.0 - q).mul_(q).clamp_(min=_EPSILON)
            grad = torch.sub(q, y).div_(denominator)
            if w is not None:
                grad.mul_(w)
            grad.mul_(chunk.grad_scale)
        return ChunkResult(row_loss, elements if want_elements else None, grad)

    return kernel


def _examples(student: Tensor) -> list[dict[str, object]]:
    return [{"teacher_logits": torch.randn_like(student)}]


bce = register(
    prepare_bce,
    title="BCE",
    summary="Soft-label binary cross-entropy and its gradient",
    description="Soft-label binary cross-entropy, element-wise over every class.",
    inputs=(
        TensorInput("student_logits", Kind.FLOAT, "student", "Student logits (BCE with logits, T and T² apply)."),
        TensorInput("student_probs", Kind.FLOAT, "student", "Student probabilities (F.binary_cross_entropy; no temperature)."),
        TensorInput("teacher_logits", Kind.FLOAT, "target", "Teacher logits; targets sigmoid(t / T)."),
        TensorInput("teacher_probs", Kind.FLOAT, "target", "Targets in [0, 1], taken as given."),
        TensorInput("weight", Kind.FLOAT, "weight", "Element weights, broadcastable to the student's shape."),
        TensorInput("pos_weight", Kind.FLOAT, "weight", "Weight of positive targets, broadcastable to the student's shape."),
    ),
    options=(
        OPTIONAL_TEMPERATURE,
        SCALE_T2,
        Option("reduction", "mean = Σ / elements; sum; none = per element (not in the combined objective).", choices=REDUCTIONS),
    ),
    examples=_examples,
)
