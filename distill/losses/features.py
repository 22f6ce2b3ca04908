"""Feature matching: a student tensor regressed onto a teacher tensor of the same shape.

Hidden-state and logit matching (Ba & Caruana 2014 on logits; TinyBERT's MSE on hidden states and
attention maps; DistilBERT's cosine on hidden states). With the student ``s`` and the teacher ``t``
flattened into rows of H features (leading dimensions are rows, as for every loss), and
``d = s − t``:

    mse_loss                l_ij = d_ij²                                  ∂l/∂s_ij = 2 · d_ij
    l1_loss                 l_ij = |d_ij|                                 ∂l/∂s_ij = sign(d_ij)
    smooth_l1_loss (β)      l_ij = ½ d_ij² / β  if |d_ij| < β             ∂l/∂s_ij = d_ij / β
                                   |d_ij| − ½ β  otherwise (β = 0: L1)               sign(d_ij)
    cosine_embedding_loss   l_i  = 1 − cos_i,   cos_i = (s_i · t_i) / √((|s_i|² + ε)(|t_i|² + ε))
                                                ∂l_i/∂s_i = cos_i · s_i / (|s_i|² + ε) − t_i / √((|s_i|² + ε)(|t_i|² + ε))

with ε = 1e-12 (as a float32 constant), exactly as ``torch.nn.functional.mse_loss``, ``l1_loss``, ``smooth_l1_loss`` and
``cosine_embedding_loss(s, t, target=1)`` define them (the same ε, the same branch at |d| = β, the
same zero gradient at d = 0). Reductions are PyTorch's: ``mean`` divides the element-wise losses by
the kept elements (kept rows · H) and the cosine loss by the kept rows; ``sum``; ``none`` returns the
element-wise (cosine: per-row) losses. The teacher gets no gradient. Both tensors must be finite.

The gradients are closed-form, no autograd graph: on CPU in float32/float64 one compiled pass per row
reads both tensors and writes the gradient (the cosine: a second, after the row's norms); elsewhere,
and for element-wise ``none`` output, a few element-wise torch passes. The cosine loss here is the
hidden-state matching form (target 1); ``/v1/functional/cosine_embedding_loss`` serves PyTorch's
function with any targets and a margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import InputError
from distill.native import kernels as native
from distill.native.kernels import Fused
from distill.registry import Option, TensorInput, register
from distill.rows.checks import check_fits, check_logits
from distill.rows.kernel import Chunk, ChunkResult, Kernel
from distill.rows.layout import Rows, check_same_shape, make_rows, on_device, real_number, take
from distill.rows.prepared import Prepared
from distill.rows.reduction import check_reduction, grad_scale
from distill.wire import Kind

REDUCTIONS = ("mean", "sum", "none")
#: PyTorch's ε in cosine_embedding_loss, added to each squared norm: 1e-12 rounded to float32, as ATen
#: declares it (the float64 value differs in the 9th digit, which shows where a norm is 0).
COSINE_EPS = float(torch.tensor(1e-12, dtype=torch.float32))

STUDENT = TensorInput("student", Kind.FLOAT, "student", "Student features (..., H): hidden states, logits or any tensor.")
TEACHER = TensorInput("teacher", Kind.FLOAT, "target", "Teacher features, the student's shape.")
REDUCTION = Option(
    "reduction",
    "mean = Σ / kept elements (cosine: / kept rows); sum; none = element-wise, per row for the cosine (not in the combined objective).",
    choices=REDUCTIONS,
)


def _difference(chunk: Chunk, teacher: Tensor) -> Tensor:
    """s − t for the chunk's rows, written into the gradient's rows when the driver offers them (the
    gradient is then formed in place from it)."""
    target = take(teacher, chunk.selection).to(chunk.student.dtype)
    return torch.sub(chunk.student, target) if chunk.grad_out is None else torch.sub(chunk.student, target, out=chunk.grad_out)


def _mse_kernel(teacher: Tensor) -> Kernel:
    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        difference = _difference(chunk, teacher)
        elements = difference.square() if want_elements else None
        row_loss = torch.linalg.vector_norm(difference, dim=-1).square_()
        return ChunkResult(row_loss, elements, difference.mul_(chunk.grad_scale) if want_grad else None)

    return kernel


def _l1_kernel(teacher: Tensor) -> Kernel:
    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        difference = _difference(chunk, teacher)
        elements = difference.abs() if want_elements else None
        row_loss = torch.linalg.vector_norm(difference, ord=1, dim=-1)
        grad = torch.sign(difference, out=difference).mul_(chunk.grad_scale) if want_grad else None
        return ChunkResult(row_loss, elements, grad)

    return kernel


def _smooth_l1_kernel(beta: float) -> Callable[[Tensor], Kernel]:
    """Elements by PyTorch's own fused function; the slope clamp(s − t, −β, β) / β (sign(s − t) at β = 0)."""

    def build(teacher: Tensor) -> Kernel:
        def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
            target = take(teacher, chunk.selection).to(chunk.student.dtype)
            elements = F.smooth_l1_loss(chunk.student, target, reduction="none", beta=beta)
            grad = None
            if want_grad:
                difference = _difference(chunk, teacher)
                grad = _smooth_l1_slope(difference, beta).mul_(chunk.grad_scale)
            return ChunkResult(elements.sum(dim=-1), elements if want_elements else None, grad)

        return kernel

    return build


def _smooth_l1_slope(difference: Tensor, beta: float) -> Tensor:
    """clamp(d, −β, β) / β in place, as PyTorch forms it for β anywhere in [0, float64's max]: β that rounds
    to 0 in the compute dtype is L1's sign(d) (PyTorch's answer there), and β beyond its range (where
    every |d| < β) scales by the reciprocal instead of overflowing the clamp's bounds."""
    rounded = float(torch.tensor(beta, dtype=difference.dtype))
    if rounded == 0.0:
        return torch.sign(difference, out=difference)
    if math.isinf(rounded):
        return difference.mul_(1.0 / beta)
    return difference.clamp_(-beta, beta).div_(beta)


def _prepare(
    name: str,
    student: Tensor,
    teacher: Tensor,
    reduction: str,
    mask: Tensor | None,
    compute_grad: bool,
    *,
    kernel: Callable[[Tensor], Kernel],
    fused: int | None,
    parameter: float = 0.0,
    factor: float = 1.0,
    per_row: bool = False,
    options: tuple[float, ...] = (),
) -> Prepared:
    """The :class:`Prepared` of a feature loss: ``kernel(teacher rows)`` computes it on torch ops, the
    compiled kernel ``fused`` (a ``native.FEATURE_*`` code, with its ``parameter``; None: none applies)
    where it can, ``factor / normalizer`` scales each row's gradient, and ``per_row`` losses (the
    cosine) are normalised by rows."""
    reduction_ = check_reduction(reduction, REDUCTIONS)
    rows = make_rows(student, mask, "student")
    flat = rows.flat(student)
    check_logits(flat, "student", rows, allow_neg_inf=False)
    check_same_shape(teacher, "teacher", rows)
    teacher_flat = rows.flat(on_device(teacher, flat.device))
    check_logits(teacher_flat, "teacher", rows, allow_neg_inf=False)
    check_fits(teacher_flat, flat.dtype, "teacher", rows)
    averaged = rows.n_kept if per_row else rows.n_kept * rows.n_classes
    normalizer = float(averaged) if reduction_ == "mean" else 1.0

    def build(layout: Rows, data: dict[str, Tensor]) -> Kernel:
        return kernel(data["teacher"])

    def build_fused(data: dict[str, Tensor]) -> Fused:
        assert fused is not None
        return native.features_fused(data["teacher"], fused, parameter)

    return Prepared(
        loss=name,
        rows=rows,
        student=flat,
        data={"teacher": teacher_flat},
        build=build,
        build_fused=None if fused is None else build_fused,
        key=(name, rows.n_classes, flat.dtype, flat.device, teacher_flat.dtype, *options),
        reduction=reduction_,
        normalizer=normalizer,
        grad_scale=grad_scale(factor, normalizer),
        compute_grad=compute_grad,
        per_row=per_row,
    )


def prepare_mse_loss(
    student: Tensor, *, teacher: Tensor, reduction: str = "mean", mask: Tensor | None = None, compute_grad: bool = True
) -> Prepared:
    """Validate a mean-squared-error request (:func:`mse_loss` computes it).

    Args:
        student: floating (..., H), finite; rows are its leading dimensions.
        teacher: floating, the student's shape, finite; no gradient.
        reduction: ``mean`` (Σ / kept elements), ``sum`` or ``none`` (element-wise).
        mask: boolean over the leading dimensions; False rows are dropped.
        compute_grad: also return ∂loss/∂student.

    Raises:
        InputError: a shape, dtype, non-finite value, mask or reduction error, naming the field.
    """
    return _prepare("mse_loss", student, teacher, reduction, mask, compute_grad, kernel=_mse_kernel, fused=native.FEATURE_MSE, factor=2.0)


def prepare_l1_loss(
    student: Tensor, *, teacher: Tensor, reduction: str = "mean", mask: Tensor | None = None, compute_grad: bool = True
) -> Prepared:
    """Validate a mean-absolute-error request (:func:`l1_loss`); arguments and errors as :func:`prepare_mse_loss`."""
    return _prepare("l1_loss", student, teacher, reduction, mask, compute_grad, kernel=_l1_kernel, fused=native.FEATURE_L1)


def prepare_smooth_l1_loss(
    student: Tensor,
    *,
    teacher: Tensor,
    beta: float = 1.0,
    reduction: str = "mean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a smooth-L1 request (:func:`smooth_l1_loss`); β ≥ 0 (0: L1); otherwise as :func:`prepare_mse_loss`."""
    beta_ = real_number("beta", beta)
    if not beta_ >= 0.0:
        raise InputError("beta", f"must be ≥ 0, got {beta}")
    kernel = _smooth_l1_kernel(beta_)
    return _prepare(
        "smooth_l1_loss",
        student,
        teacher,
        reduction,
        mask,
        compute_grad,
        kernel=kernel,
        fused=native.FEATURE_SMOOTH_L1,
        parameter=beta_,
        options=(beta_,),
    )


def prepare_cosine_embedding_loss(
    student: Tensor, *, teacher: Tensor, reduction: str = "mean", mask: Tensor | None = None, compute_grad: bool = True
) -> Prepared:
    """Validate a cosine request (:func:`cosine_embedding_loss`): 1 − cos per row, ``mean`` = Σ / kept rows;
    otherwise as :func:`prepare_mse_loss`."""
    return _prepare(
        "cosine_embedding_loss",
        student,
        teacher,
        reduction,
        mask,
        compute_grad,
        kernel=_cosine_kernel,
        fused=native.FEATURE_COSINE,
        parameter=COSINE_EPS,
        per_row=True,
    )


def _cosine_kernel(teacher: Tensor) -> Kernel:
    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        student = chunk.student
        target = take(teacher, chunk.selection).to(student.dtype)
        product = (student * target).sum(dim=-1)
        student_norm = student.square().sum(dim=-1).add_(COSINE_EPS)
        denominator = (student_norm * target.square().sum(dim=-1).add_(COSINE_EPS)).sqrt_()
        cosine = product / denominator
        row_loss = 1.0 - cosine
        grad = None
        if want_grad:
            grad = student * (cosine / student_norm).unsqueeze(1) - target / denominator.unsqueeze(1)
            grad.mul_(chunk.grad_scale)
        return ChunkResult(row_loss, row_loss if want_elements else None, grad)

    return kernel


def _examples(student: Tensor) -> list[dict[str, object]]:
    return [{"teacher": torch.randn_like(student)}, {"teacher": student.detach() + 0.25, "reduction": "sum"}]


def _smooth_examples(student: Tensor) -> list[dict[str, object]]:
    return [{"teacher": torch.randn_like(student)}, {"teacher": torch.randn_like(student), "beta": 0.0}]


mse_loss = register(
    prepare_mse_loss,
    title="MSELoss",
    summary="Mean squared error between student and teacher features (F.mse_loss), and its gradient",
    description="(s − t)² per element on rows of features; mean = Σ / kept elements.",
    inputs=(STUDENT, TEACHER),
    options=(REDUCTION,),
    examples=_examples,
)
l1_loss = register(
    prepare_l1_loss,
    title="L1Loss",
    summary="Mean absolute error between student and teacher features (F.l1_loss), and its gradient",
    description="|s − t| per element on rows of features; mean = Σ / kept elements; gradient sign(s − t).",
    inputs=(STUDENT, TEACHER),
    options=(REDUCTION,),
    examples=_examples,
)
smooth_l1_loss = register(
    prepare_smooth_l1_loss,
    title="SmoothL1Loss",
    summary="Smooth L1 (Huber / β) between student and teacher features (F.smooth_l1_loss), and its gradient",
    description="½(s − t)²/β where |s − t| < β, else |s − t| − ½β, per element; mean = Σ / kept elements.",
    inputs=(STUDENT, TEACHER),
    options=(
        Option("beta", "β ≥ 0: where the quadratic part turns linear (0: L1).", ge=0.0),
        REDUCTION,
    ),
    examples=_smooth_examples,
)
cosine_embedding_loss = register(
    prepare_cosine_embedding_loss,
    title="CosineEmbeddingLoss",
    summary="1 − cosine similarity per row between student and teacher features (F.cosine_embedding_loss, target 1)",
    description="1 − cos(s_i, t_i) per row (hidden-state matching, as DistilBERT); mean = Σ / kept rows.",
    inputs=(STUDENT, TEACHER),
    options=(REDUCTION,),
    examples=_examples,
)
