"""A validated loss request, ready to compute alone or batched with compatible requests.

Every loss is split into *prepare* (all validation; inputs flattened into rows) and *run*. A
:class:`Prepared` holds what the kernel needs: the student rows, per-row data (teacher rows, labels,
row maxima, per-element weights) aligned with those rows, and a builder that closes over the options
(temperature, class weights, smoothing…). ``group_key`` says which requests can share one kernel
call: same loss, class count, dtype, device and the options that change the math (``key``), and the
same code path (with or without the gradient and element-wise output).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable
from typing import NamedTuple

import torch
from torch import Tensor

from distill.native.kernels import Fused
from distill.result import LossResult, Reduction
from distill.rows.kernel import Kernel, run_kernel
from distill.rows.layout import Rows
from distill.rows.reduction import finish

KernelBuilder = Callable[[Rows, dict[str, Tensor]], Kernel]
FusedBuilder = Callable[[dict[str, Tensor]], Fused]


class Prepared(NamedTuple):
    """A validated request for one loss.

    Attributes:
        loss: the loss's name.
        rows: row layout of the student (which rows are kept).
        student: the student as (n_rows, C) in its original dtype.
        data: per-row tensors aligned with ``student``'s rows (``teacher``, ``labels``, ``row_max``, …).
        build: makes the kernel for a row layout and per-row data (options are closed over).
        build_fused: makes the fused kernel for per-row data, when the loss has one.
        key: the loss and the options that change its math; requests of equal keys (and equal
            :attr:`group_key`) can be computed in one kernel call.
        reduction, normalizer: how the loss is reduced; ``loss = loss_sum / normalizer``.
        grad_scale: the factor each kept row's gradient is multiplied by (T² / (T · normalizer) …).
        compute_grad: whether the caller wants the gradient.
        per_row: element losses are per row (cross-entropy) rather than per class.
        chunk_elements: elements per chunk of rows, when the kernel wants other than
            :data:`~distill.rows.layout.CHUNK_ELEMENTS` (a kernel of many small torch ops per chunk
            pays their overhead per chunk).
    """

    loss: str
    rows: Rows
    student: Tensor
    data: dict[str, Tensor]
    build: KernelBuilder
    key: Hashable
    reduction: Reduction
    normalizer: float
    grad_scale: float
    compute_grad: bool
    per_row: bool = False
    build_fused: FusedBuilder | None = None
    chunk_elements: int | None = None

    @property
    def group_key(self) -> Hashable:
        """Requests with equal group keys are computed in one call, each getting its solo answer: the
        same math (``key``) on the same code path — with or without the gradient (the compiled kernels'
        two variants may round a row loss differently) and with or without element-wise output (which
        the compiled kernels do not write for element-wise losses). ``None``: never grouped."""
        if self.key is None:
            return None
        return (self.key, self.compute_grad, self.reduction == "none" and not self.per_row)

    def fused(self, data: dict[str, Tensor]) -> Fused | None:
        """The fused kernel for ``data`` (this request's per-row data, or a group's), if any."""
        return None if self.build_fused is None else self.build_fused(data)


def run(prepared: Prepared) -> LossResult:
    """Compute one prepared request on its own."""
    out = run_kernel(
        prepared.rows,
        prepared.student,
        prepared.build(prepared.rows, prepared.data),
        grad_scale=prepared.grad_scale,
        want_grad=prepared.compute_grad,
        want_elements=prepared.reduction == "none",
        elements_per_row=prepared.per_row,
        row_max=prepared.data.get("row_max"),
        fused=prepared.fused(prepared.data),
        chunk_elements=prepared.chunk_elements,
    )
    assert out is not None  # the chunked kernel runs after a declining fused one
    return finish(out, prepared.rows, prepared.reduction, prepared.normalizer, per_row=prepared.per_row)


def tensor_key(tensor: Tensor | None) -> Hashable:
    """A value key for a small option tensor (class weights): shape, dtype and a digest of its bytes."""
    if tensor is None:
        return None
    raw = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    return (tuple(tensor.shape), str(tensor.dtype), hashlib.blake2b(raw, digest_size=16).digest())
