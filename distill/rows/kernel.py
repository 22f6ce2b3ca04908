"""Chunked execution of a loss kernel over the kept rows of a student tensor.

A *kernel* maps one chunk of student rows (already in the compute dtype) to per-row losses, and
optionally per-element losses and the gradient. The driver owns everything else: chunking, gathering
masked rows, the output buffers, writing gradients straight into the caller-visible tensor when the
layout allows it, and per-row gradient scales. Per-row scales are what let one call compute many
requests at once (each request's rows carry its own normaliser) while every request gets exactly
its solo answer.

A loss may also offer a *fused* kernel (:mod:`distill.native.kernels`) that computes every kept row in one
compiled call. The driver prefers it where it applies (CPU, float32/float64, no element-wise output
for element-wise losses) and falls back to the chunked torch kernel when it declines or a row loss
comes out non-finite: the torch kernel then raises the precise error (a -inf student class where the
target has mass) or applies the documented 0·log 0 conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from distill.native import kernels as native
from distill.native.kernels import Fused, FusedCall
from distill.rows.layout import Rows, RowSelection, compute_dtype, put, take


@dataclass(frozen=True)
class Chunk:
    """One chunk of kept rows handed to a kernel.

    Attributes:
        selection: which flat rows these are (a slice, or an index tensor when masked).
        positions: which kept rows these are (indexes per-kept-row tensors such as labels or scales).
        student: the student rows in the compute dtype (may be a view of the caller's tensor: do not
            modify it in place).
        grad_scale: multiply the gradient by this: a float, or a (rows, 1) tensor.
        grad_out: the caller-visible gradient rows, when they can be written in place (else
            ``None``). A kernel may compute into it and return it; anything else it returns is copied.
        row_max: the student rows' maxima in the compute dtype, when the caller passed them.
    """

    selection: RowSelection
    positions: slice
    student: Tensor
    grad_scale: float | Tensor
    grad_out: Tensor | None
    row_max: Tensor | None


@dataclass(frozen=True)
class ChunkResult:
    """What a kernel returns for a chunk: per-row loss, optional elements and gradient."""

    row_loss: Tensor
    elements: Tensor | None
    grad: Tensor | None


Kernel = Callable[[Chunk, bool, bool], ChunkResult]


class KernelOutput(NamedTuple):
    """Per-kept-row losses plus the full-size element losses and gradient, when asked for."""

    row_loss: Tensor
    elements: Tensor | None
    grad: Tensor | None
    loss_sum: float | None = None


#: Up to this many row losses are summed exactly (:func:`math.fsum`); more, in float64 by torch.
EXACT_SUM_ROWS = 128


def row_loss_sum(row_loss: Tensor) -> float:
    """Σ of per-row losses as a Python float, in at least float64 precision.

    Up to :data:`EXACT_SUM_ROWS` rows the sum is correctly rounded (``math.fsum``: 0.3 µs for 8 rows
    against 1.3 µs for a torch reduction), so it does not depend on the order of the rows or on which
    other requests shared their kernel call; longer sums, and sums that overflow float64 or meet both
    infinities (where ``math.fsum`` raises), are torch's float64 reduction (±inf or NaN there).
    """
    if row_loss.numel() <= EXACT_SUM_ROWS:
        try:
            return math.fsum(row_loss.tolist())
        except (OverflowError, ValueError):  # a partial sum beyond float64, or +inf and -inf among the terms
            pass
    return float(row_loss.sum(dtype=torch.float64))


def run_kernel(
    rows: Rows,
    student_flat: Tensor,
    kernel: Kernel,
    *,
    grad_scale: float | Tensor,
    want_grad: bool,
    want_elements: bool,
    elements_per_row: bool = False,
    row_max: Tensor | None = None,
    fused: Fused | None = None,
    chunk_elements: int | None = None,
    eager_after_fused: bool = True,
) -> KernelOutput | None:
    """Run ``kernel`` over the kept rows in chunks and assemble the outputs.

    Args:
        rows: the row layout (which rows are kept).
        student_flat: the student as (n_rows, C), in its original dtype.
        kernel: called as ``kernel(chunk, want_grad, want_elements)``.
        grad_scale: a float applied to every row, or a (n_kept,) tensor of per-row scales.
        want_grad: compute the gradient (else ``grad`` is ``None``).
        want_elements: collect element losses into a full (n_rows, C) tensor (or (n_rows,) with
            ``elements_per_row``), zero on dropped rows.
        row_max: optional (n_rows,) maxima of the student rows, handed to the kernel per chunk.
        fused: the loss's fused kernel, tried first where it applies.
        chunk_elements: elements per chunk (default :data:`~distill.rows.layout.CHUNK_ELEMENTS`).
        eager_after_fused: when the fused kernel was tried and declined, or gave a non-finite row loss,
            run the chunked kernel (the default), or return None (a group then computes each request
            on its own, so that one request's overflow does not move the others off the fused kernel).
    """
    dtype = compute_dtype(student_flat.dtype)
    device = student_flat.device
    masked = rows.kept is not None
    alloc = torch.zeros if masked else torch.empty
    grad = (torch.zeros_like if masked else torch.empty_like)(student_flat, memory_format=torch.contiguous_format) if want_grad else None
    element_shape = (rows.n_rows,) if elements_per_row else (rows.n_rows, rows.n_classes)
    elements = alloc(element_shape, dtype=dtype, device=device) if want_elements else None
    row_loss = torch.empty(rows.n_kept, dtype=dtype, device=device)
    if fused is not None and (elements_per_row or not want_elements) and native.supports(student_flat):
        scale = grad_scale if isinstance(grad_scale, float) else grad_scale.contiguous()
        if fused(FusedCall(student_flat, rows.kept, scale, grad, row_loss)):
            loss_sum = row_loss_sum(row_loss)
            if math.isfinite(loss_sum):  # every row loss is finite (else the eager kernel explains why)
                if elements is not None:
                    put(elements, slice(None) if rows.kept is None else rows.kept, row_loss)
                return KernelOutput(row_loss, elements, grad, loss_sum)
        if not eager_after_fused:
            return None
    write_in_place = grad is not None and not masked and grad.dtype == dtype
    position = 0
    for selection in rows.chunks(chunk_elements):
        count = selection.stop - selection.start if isinstance(selection, slice) else int(selection.numel())
        positions = slice(position, position + count)
        position += count
        scale = grad_scale if isinstance(grad_scale, float) else grad_scale[positions].unsqueeze(1)
        chunk = Chunk(
            selection=selection,
            positions=positions,
            student=take(student_flat, selection).to(dtype),
            grad_scale=scale,
            grad_out=grad[selection] if write_in_place and grad is not None else None,
            row_max=None if row_max is None else take(row_max, selection).to(dtype),
        )
        result = kernel(chunk, want_grad, want_elements)
        row_loss[positions] = result.row_loss
        if elements is not None and result.elements is not None:
            put(elements, selection, result.elements)
        if grad is not None and result.grad is not None and result.grad is not chunk.grad_out:
            put(grad, selection, result.grad)
    return KernelOutput(row_loss, elements, grad)
