"""Reductions and normalisers, and assembling a :class:`LossResult` from kernel output."""

from __future__ import annotations

import torch

from distill.errors import InputError
from distill.result import LossResult, Reduction
from distill.rows.kernel import KernelOutput, row_loss_sum
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


def finish(out: KernelOutput, rows: Rows, reduction: Reduction, normalizer: float, *, per_row: bool = False) -> LossResult:
    """Reduce kernel output into a :class:`LossResult` shaped like the caller's input.

    ``none`` returns the element losses in the student's shape (per-row losses in its leading shape
    when ``per_row``), with zeros on rows dropped by the mask. An empty normaliser (every row masked or
    ignored) yields loss 0, where PyTorch would give NaN: a service must answer with a number.
    ``loss_sum`` is the kernel's own sum when it took one, else the row losses' (:func:`row_loss_sum`).
    """
    loss_sum = row_loss_sum(out.row_loss) if out.loss_sum is None else out.loss_sum
    grad = out.grad if out.grad is None or out.grad.shape == rows.shape else out.grad.reshape(rows.shape)
    if reduction == "none":
        assert out.elements is not None
        shape = rows.lead_shape if per_row else tuple(rows.shape)
        return LossResult(out.elements.reshape(shape), grad, loss_sum, 1.0, reduction)
    value = loss_sum / normalizer if normalizer > 0 else 0.0
    loss = torch.scalar_tensor(value, dtype=out.row_loss.dtype, device=out.row_loss.device)
    return LossResult(loss, grad, loss_sum, normalizer, reduction)
