"""Cross-entropy of the student's softmax against hard class labels or soft teacher targets.

Hard labels (``F.cross_entropy`` with integer targets). With log q = log_softmax(s), class weights w
(default 1), label smoothing ε over C classes, and a row whose label y is not ``ignore_index``:

    l_i = (1 − ε) · (−w_y · log q_iy) + (ε / C) · (−Σ_c w_c · log q_ic)

``mean`` divides Σ l by Σ_i w_{y_i} over the non-ignored rows (PyTorch's weighted mean; the row count
without weights), ``sum`` adds, ``none`` returns l per row (0 for ignored rows). When every row is
ignored or masked, the loss is 0 with normaliser 0 and a zero gradient (PyTorch returns NaN). The
gradient per non-ignored row is

    ∂l_i/∂s_i = (1 − ε) · w_y · (q_i − e_y) + (ε / C) · (W · q_i − w),   W = Σ_c w_c

Hard labels have no temperature: passing one is an error rather than a silent no-op.

Soft targets. Teacher distribution p (softmax(t / T) from teacher logits; probabilities or
log-probabilities as given), smoothed as p' = (1 − ε) · p + ε / C, and x = s / T:

    l_i = T² · (−Σ_c w_c · p'_ic · log_softmax(x)_ic)

``mean`` divides by the number of rows (as PyTorch does for probability targets, whatever the
weights). Gradient: ∂l_i/∂s_i = T · ((Σ_c w_c p'_ic) · softmax(x)_i − w ⊙ p'_i).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.errors import InputError
from distill.losses.common import MISSING_MASS, OPTIONAL_TEMPERATURE, SCALE_T2, STUDENT_LOGITS, TEACHER_FORMS, TEACHER_TOPK
from distill.losses.topk import CROSS_ENTROPY, prepare_topk, topk_example
from distill.native import kernels as native
from distill.native.kernels import Fused
from distill.registry import Option, TensorInput, register
from distill.rows.checks import check_logits
from distill.rows.kernel import Chunk, ChunkResult, Kernel
from distill.rows.layout import FLOAT_DTYPES, Rows, check_fraction, check_temperature, make_rows, on_device, raise_at, take, unravel
from distill.rows.prepared import Prepared, tensor_key
from distill.rows.reduction import check_reduction, grad_scale
from distill.rows.softmax import softmax_and_log_norm
from distill.rows.teacher import Teacher, distribution, soft_teacher
from distill.rows.topk import TopKArguments
from distill.wire import Kind

REDUCTIONS = ("mean", "sum", "none")


def prepare_cross_entropy(
    student_logits: Tensor,
    *,
    labels: Tensor | None = None,
    teacher_logits: Tensor | None = None,
    teacher_probs: Tensor | None = None,
    teacher_log_probs: Tensor | None = None,
    teacher_topk_indices: Tensor | None = None,
    teacher_topk_logits: Tensor | None = None,
    teacher_topk_log_probs: Tensor | None = None,
    missing_mass: str | None = None,
    temperature: float | None = None,
    scale_t2: bool = True,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> Prepared:
    """Validate a cross-entropy request (hard ``labels`` or one soft teacher form) without computing it.

    Args:
        student_logits: (..., C) floating tensor; -inf marks a masked class.
        labels: integer class per row, shape (...) (a 0-d tensor for a 1-D student).
        teacher_logits / teacher_probs / teacher_log_probs: soft targets, same shape as the student.
        teacher_topk_indices + teacher_topk_logits / teacher_topk_log_probs + missing_mass: a top-k
            teacher as soft targets instead (:mod:`distill.losses.topk`; without weight or smoothing).
        temperature: T > 0 for soft targets (default 1); an error with hard labels.
        scale_t2: multiply soft-target losses by T².
        weight: (C,) class weights.
        ignore_index: label value whose rows are skipped (hard labels only).
        label_smoothing: ε in [0, 1].
        reduction: ``mean`` (default), ``sum`` or ``none`` (per row).
        mask: optional bool tensor over the leading dimensions; False rows are dropped.
        compute_grad: also return d(loss)/d(student_logits).
    """
    reduction_ = check_reduction(reduction, REDUCTIONS)
    epsilon = check_fraction("label_smoothing", label_smoothing)
    rows = make_rows(student_logits, mask)
    student = rows.flat(student_logits)
    row_max = check_logits(student, "student_logits", rows, allow_neg_inf=True)
    class_weight = _class_weight(weight, rows, student.device)
    topk = TopKArguments(teacher_topk_indices, teacher_topk_logits, teacher_topk_log_probs, missing_mass)
    if labels is not None:
        topk.check_policy_alone()
        if topk.given or not (teacher_logits is None and teacher_probs is None and teacher_log_probs is None):
            raise InputError("labels", "give either labels or one teacher tensor, not both")
        if temperature is not None:
            raise InputError("temperature", "hard-label cross-entropy has no temperature; drop it or use soft targets")
        labels_flat, none_ignored = check_labels(labels, rows, ignore_index)
        labels_flat = on_device(labels_flat, student.device)
        labels_kept = labels_flat if rows.kept is None else labels_flat.index_select(0, rows.kept)
        normalizer = hard_normalizer(labels_kept, none_ignored, class_weight, ignore_index, reduction_)

        def build_hard(layout: Rows, data: dict[str, Tensor]) -> Kernel:
            return hard_kernel(layout, data["labels"], class_weight, ignore_index, epsilon)

        def build_hard_fused(data: dict[str, Tensor]) -> Fused:
            return native.ce_hard_fused(data["labels"], data["row_max"], class_weight, ignore_index, epsilon)

        return Prepared(
            loss="cross_entropy",
            data={"labels": labels_flat, "row_max": row_max},
            build=build_hard,
            build_fused=build_hard_fused,
            key=("cross_entropy", "labels", rows.n_classes, student.dtype, student.device, ignore_index, epsilon, tensor_key(class_weight)),
            normalizer=normalizer,
            grad_scale=grad_scale(1.0, normalizer),
            rows=rows,
            student=student,
            reduction=reduction_,
            compute_grad=compute_grad,
            per_row=True,
        )
    temperature_ = check_temperature(1.0 if temperature is None else temperature)
    normalizer = float(rows.n_kept) if reduction_ == "mean" else 1.0
    if topk.given:
        for name, unsupported in (("weight", weight is not None), ("label_smoothing", epsilon != 0.0)):
            if unsupported:
                raise InputError(name, "applies to every class, which a top-k teacher does not list: not supported with one")
        return prepare_topk(
            "cross_entropy",
            "cross-entropy",
            CROSS_ENTROPY,
            0.0,
            rows,
            student,
            row_max,
            topk,
            (teacher_logits, teacher_probs, teacher_log_probs),
            temperature_,
            scale_t2,
            reduction_,
            normalizer,
            compute_grad,
        )
    teacher = soft_teacher(
        rows, student, row_max, "student_logits", temperature_, logits=teacher_logits, probs=teacher_probs, log_probs=teacher_log_probs
    )
    factor = temperature_**2 if scale_t2 else 1.0
    kind = teacher.kind

    def build_soft(layout: Rows, data: dict[str, Tensor]) -> Kernel:
        return soft_kernel(layout, Teacher(kind, data["teacher"]), temperature_, factor, class_weight, epsilon)

    def build_soft_fused(data: dict[str, Tensor]) -> Fused:
        return native.soft_fused(data["teacher"], kind, data["row_max"], native.LOSS_CE, temperature_, factor, class_weight, epsilon)

    return Prepared(
        loss="cross_entropy",
        data={"teacher": teacher.flat, "row_max": row_max},
        build=build_soft,
        build_fused=build_soft_fused,
        key=(
            "cross_entropy",
            kind,
            rows.n_classes,
            student.dtype,
            student.device,
            teacher.flat.dtype,
            temperature_,
            factor,
            epsilon,
            tensor_key(class_weight),
        ),
        normalizer=normalizer,
        grad_scale=grad_scale(factor / temperature_, normalizer),
        rows=rows,
        student=student,
        reduction=reduction_,
        compute_grad=compute_grad,
        per_row=True,
    )


def _class_weight(weight: Tensor | None, rows: Rows, device: torch.device) -> Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, Tensor) or weight.dtype not in FLOAT_DTYPES:
        raise InputError("weight", "must be a floating tensor")
    if tuple(weight.shape) != (rows.n_classes,):
        raise InputError("weight", f"must have shape ({rows.n_classes},) (one weight per class), got {tuple(weight.shape)}")
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        raise InputError("weight", "must be finite", (int((~finite).nonzero()[0, 0]),))
    return weight.detach().to(device)


def check_labels(labels: Tensor, rows: Rows, ignore_index: int) -> tuple[Tensor, bool]:
    """Labels must be integers of the student's leading shape, each a class index or ``ignore_index``.

    Returns them flattened to (n_rows,) as int64, and whether none of them is ``ignore_index`` (False
    may also mean "not known": without the compiled kernels, whenever ``ignore_index`` is a class).
    """
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise InputError("labels", "must be an integer tensor of class indices")
    if tuple(labels.shape) != rows.lead_shape:
        raise InputError("labels", f"shape {tuple(labels.shape)} must equal the student's leading shape {rows.lead_shape}")
    flat = labels if labels.dim() == 1 else labels.reshape(rows.n_rows)
    if flat.dtype != torch.int64:
        flat = flat.to(torch.int64)
    if flat.numel() == 0:
        return flat, True
    if native.enabled() and flat.is_cpu and flat.is_contiguous():
        answer = native.label_range(flat, rows.n_classes, ignore_index)
        if answer != native.LABELS_OUT_OF_RANGE:
            return flat, answer == native.LABELS_IN_RANGE
    else:
        low, high = torch.aminmax(flat)
        if int(low) >= 0 and int(high) < rows.n_classes:
            return flat, not 0 <= ignore_index < rows.n_classes
    bad = ((flat < 0) | (flat >= rows.n_classes)) & (flat != ignore_index)
    if rows.kept is not None:
        keep = torch.zeros(rows.n_rows, dtype=torch.bool, device=bad.device)
        keep[rows.kept.to(bad.device)] = True
        bad &= keep
    if bool(bad.any()):
        position = int(bad.nonzero()[0, 0])
        raise InputError(
            "labels",
            f"must be in [0, {rows.n_classes}) or equal ignore_index ({ignore_index}), got {int(flat[position])}",
            unravel(position, rows.lead_shape),
        )
    return flat, False


def hard_normalizer(labels_kept: Tensor, none_ignored: bool, weight: Tensor | None, ignore_index: int, reduction: str) -> float:
    """PyTorch's weighted-mean denominator: Σ w_y over non-ignored kept rows (their count unweighted).

    ``none_ignored`` says that no label equals ``ignore_index`` (known from the label check), which
    saves comparing them.

    Raises:
        InputError: labelled rows are present but their class weights sum to 0 (PyTorch answers NaN
            or ±inf; a weighted mean over them is undefined).
    """
    if reduction != "mean":
        return 1.0
    valid = None if none_ignored else labels_kept != ignore_index
    if weight is None:
        return float(valid.sum()) if valid is not None else float(labels_kept.numel())
    total = float(weight.to(torch.float64)[labels_kept if valid is None else labels_kept[valid]].sum())
    if total == 0.0 and labels_kept.numel() and (valid is None or bool(valid.any())):
        raise InputError("weight", "the weights of the labelled classes sum to 0: their weighted mean is undefined (use reduction 'sum')")
    return total


def hard_kernel(rows: Rows, labels: Tensor, weight: Tensor | None, ignore_index: int, epsilon: float) -> Kernel:
    """Per-chunk kernel for hard-label cross-entropy; ``labels`` is aligned with the student's rows.

    One softmax pass gives q (the gradient's main term) and log(max q); with the shifted logits
    s' = s − max s, log q_y = s'_y + log(max q) and the smoothing sum Σ_c w_c · log q_c =
    s' · w + log(max q) · Σ_c w_c need no per-element logarithm and cancel nothing at large logits.
    """

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        s = chunk.student
        n_classes = s.shape[1]
        assert chunk.row_max is not None
        q, log_norm = softmax_and_log_norm(s, chunk.row_max, chunk.grad_out if want_grad else None)
        shifted = s - chunk.row_max.unsqueeze(1)
        y = take(labels, chunk.selection)
        valid = y != ignore_index
        y_safe = torch.where(valid, y, 0).unsqueeze(1)
        w = None if weight is None else weight.to(s.dtype)
        w_y = valid.to(s.dtype) if w is None else w[y_safe.squeeze(1)].mul_(valid)
        log_q_y = shifted.gather(1, y_safe).squeeze(1).add_(log_norm)
        row_loss = log_q_y.mul(w_y).mul_(-(1.0 - epsilon))
        if epsilon > 0.0:
            row_loss.add_(_smooth_terms(chunk, rows, shifted, log_norm, w, valid), alpha=epsilon / n_classes)
        if not bool(torch.isfinite(row_loss).all()):
            labelled_neg_inf = valid & (log_q_y == -math.inf)
            bad = torch.zeros_like(s, dtype=torch.bool).scatter_(1, y_safe, labelled_neg_inf.unsqueeze(1))
            raise_at("student_logits", "is -inf at the labelled class: the cross-entropy is infinite", rows, chunk.selection, bad)
        grad = None
        if want_grad:
            row_scale = valid.to(s.dtype).unsqueeze(1).mul_(chunk.grad_scale)
            total_weight = float(n_classes) if w is None else float(w.sum())
            coefficient = ((1.0 - epsilon) * w_y + (epsilon / n_classes) * total_weight).unsqueeze(1)
            q.mul_(coefficient * row_scale)
            if epsilon > 0.0:
                smooth_w = torch.ones((1, n_classes), dtype=s.dtype, device=s.device) if w is None else w.unsqueeze(0)
                q.addcmul_(row_scale, smooth_w, value=-epsilon / n_classes)
            q.scatter_add_(1, y_safe, (-(1.0 - epsilon) * w_y).unsqueeze(1) * row_scale)
            grad = q
        return ChunkResult(row_loss, row_loss if want_elements else None, grad)

    return kernel


def _smooth_terms(chunk: Chunk, rows: Rows, shifted: Tensor, log_norm: Tensor, w: Tensor | None, valid: Tensor) -> Tensor:
    """−Σ_c w_c · log q_c per row (0 on ignored rows), rejecting smoothing mass on -inf classes.

    ``shifted`` is s − max s and log q = shifted + ``log_norm`` (see :mod:`distill.rows.softmax`).
    """
    n_classes = shifted.shape[1]
    # A row-wise sum, not torch.mv: a matrix-vector product rounds a row differently with the row count
    # (BLAS blocking), so a request grouped with others would not get its solo answer.
    dot, total_weight = (shifted.sum(dim=-1), float(n_classes)) if w is None else ((shifted * w).sum(dim=-1), float(w.sum()))
    smooth = dot.add_(log_norm * total_weight).neg_()
    if not bool(torch.isfinite(smooth[valid]).all()):
        neg_inf = shifted == -math.inf
        raise_at(
            "student_logits",
            "is -inf at a class that label_smoothing gives mass to: the cross-entropy is infinite",
            rows,
            chunk.selection,
            (neg_inf if w is None else neg_inf & (w != 0)) & valid.unsqueeze(1),
        )
        log_q = shifted + log_norm.unsqueeze(1)
        smooth = (log_q if w is None else log_q * w).nan_to_num_(nan=0.0).sum(dim=-1).neg_()
    return smooth.mul_(valid)


def soft_kernel(rows: Rows, teacher: Teacher, temperature: float, factor: float, weight: Tensor | None, epsilon: float) -> Kernel:
    """Per-chunk kernel for cross-entropy against a soft teacher distribution.

    With target r = w ⊙ p' and one softmax pass over x = s / T giving q and log(max q), and the
    shifted logits x' = x − max x, −Σ_c r_c · log q_c = −(r · x') − log(max q) · Σ_c r_c (a row dot
    product, no per-element logarithm, nothing cancelled at large logits).
    A softmax target (teacher logits, smoothed or not, unweighted) sums to 1, which is used as is.
    """
    inverse_t = 1.0 / temperature

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        s = chunk.student
        n_classes = s.shape[1]
        x = s if inverse_t == 1.0 else s * inverse_t
        assert chunk.row_max is not None
        x_max = chunk.row_max * inverse_t
        q, log_norm = softmax_and_log_norm(x, x_max, chunk.grad_out if want_grad else None)
        shifted = x - x_max.unsqueeze(1)
        p = distribution(take(teacher.flat, chunk.selection).to(s.dtype), teacher.kind, temperature)
        if epsilon > 0.0:
            p = p * (1.0 - epsilon) + epsilon / n_classes
        target = p if weight is None else p * weight.to(s.dtype)
        normalised = teacher.kind == "logits" and weight is None
        target_sum = torch.ones_like(log_norm) if normalised else target.sum(dim=-1)
        row_loss = torch.mul(target, shifted).sum(dim=-1).add_(log_norm * target_sum).neg_()
        if not bool(torch.isfinite(row_loss).all()):
            raise_at(
                "student_logits",
                f"is -inf where the {teacher.argument} target has mass: the cross-entropy is infinite",
                rows,
                chunk.selection,
                (target != 0) & (x == -math.inf),
            )
            row_loss = torch.mul(target, shifted + log_norm.unsqueeze(1)).nan_to_num_(nan=0.0).sum(dim=-1).neg_()
        row_loss.mul_(factor)
        grad = None
        if want_grad:
            if not normalised:
                q.mul_(target_sum.unsqueeze(1))
            grad = q.sub_(target).mul_(chunk.grad_scale)
        return ChunkResult(row_loss, row_loss if want_elements else None, grad)

    return kernel


def _examples(student: Tensor) -> list[dict[str, object]]:
    lead = student.shape[:-1]
    labels = torch.arange(lead.numel(), device=student.device).reshape(lead) % student.shape[-1]
    return [{"labels": labels, "label_smoothing": 0.1}, {"teacher_logits": torch.randn_like(student)}, topk_example(student)]


cross_entropy = register(
    prepare_cross_entropy,
    title="CrossEntropy",
    summary="Cross-entropy (hard labels or soft targets) and its gradient",
    description="Cross-entropy against hard ``labels`` or one soft teacher form.",
    inputs=(
        STUDENT_LOGITS,
        TensorInput("labels", Kind.INDEX, "target", "Integer class per row (the student's leading shape)."),
        *TEACHER_FORMS,
        *TEACHER_TOPK,
        TensorInput("weight", Kind.FLOAT, "weight", "Class weights, shape (C,)."),
    ),
    options=(
        MISSING_MASS,
        OPTIONAL_TEMPERATURE,
        SCALE_T2,
        Option("ignore_index", "Label value whose rows are skipped (hard labels); an int64.", ge=-(2**63), le=2**63 - 1),
        Option("label_smoothing", "ε in [0, 1]: that share of the target is spread uniformly over the classes.", ge=0.0, le=1.0),
        Option(
            "reduction",
            "mean (weighted for labels, Σ / rows for soft targets); sum; none = per row (not in the combined objective).",
            choices=REDUCTIONS,
        ),
    ),
    examples=_examples,
)
