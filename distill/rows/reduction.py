"""Reductions and normalisers, and assembling a :class:`LossResult` from kernel output."""

from __future__ import annotations

import torch

from distill.errors import InputError
from distill.result import LossResult, Reduction
from distill.rows.kernel import KernelOutput
from distill.rows.layout import Rows


def check_reduction(reduction: str, allowed: tuple[str, ...]) -> Reduction:
    """Reject reductions the loss does not define (e.g. ``batchmean`` for BCE)."""
    if reduction not in allowed:
        raise InputError("reduction", f"must be one of {', '.join(allowed)}; got {reduction!r}")
    return reduction  # type: ignore[return-value]


def element_normalizer(reduction: Reduction, rows: Rows) -> float:
    """Normaliser for element-wise losses (KL, BCE): rows for batchmean, elements for mean."""
    if reduction == "batchmean":
        return float(rows.n_kept)
    if reduction == "mean":
        return float(rows.n_kept * rows.n_classes)
    return 1.0


def grad_scale(factor: float, normalizer: float) -> float:
    """``factor / normalizer``, with an empty normaliser (no contributing row) giving 0."""
    return factor / normalizer if normalizer > 0 else 0.0


def finish(
    out: KernelOutput, rows: Rows, reduction: Reduction, normalizer: float, *, per_row: bool = False, loss_sum: float | None = None
) -> LossResult:
    """Reduce kernel output into a :class:`LossResult` shaped like the caller's input.

    ``none`` returns the element losses in the student's shape (per-row losses in its leading shape
    when ``per_row``), with zeros on rows dropped by the mask. An empty normaliser (every row masked or
    ignored) yields loss 0, where PyTorch would give NaN: a service must answer with a number.
    ``loss_sum`` may be given when the caller has already summed the row losses (else the kernel's
    own sum, else the row losses are summed here).
    """
    if loss_sum is None:
        loss_sum = out.loss_sum
    if loss_sum is None:
        loss_sum = float(out.row_loss.sum()) if out.row_loss.numel() else 0.0
    grad = out.grad.reshape(rows.shape) if out.grad is not None else None
    if reduction == "none":
        assert out.elements is not None
        shape = rows.lead_shape if per_row else tuple(rows.shape)
        return LossResult(out.elements.reshape(shape), grad, loss_sum, 1.0, reduction)
    value = loss_sum / normalizer if normalizer > 0 else 0.0
    loss = torch.scalar_tensor(value, dtype=out.row_loss.dtype, device=out.row_loss.device)
    return LossResult(loss, grad, loss_sum, normalizer, reduction)
