"""Row chunks: one loss request too large for the server sent as several, combined exactly.

A language-model micro-batch (B, S, V) = (8, 2048, 131072) in float32 is 8.6 GB: past any sensible body
limit, yet one ordinary training step. Every loss follows the row convention (leading dimensions are
rows, each row's loss independent of the others), so the request splits along its flattened rows: the
student, every per-row target (teacher tensors, labels, top-k indices and values) and the mask are cut
the same way; per-class weights go whole with every chunk. The answers combine exactly through
``loss_sum`` and ``normalizer``:

    loss = Σ_c loss_sum_c / Σ_c normalizer_c       grad_c ← grad_c · normalizer_c / Σ_c normalizer_c

for the averaging reductions (each chunk's gradient was divided by its own normaliser; the one-request
gradient divides by the total), ``sum`` adds the losses and keeps the gradients, and ``none``
concatenates both. A chunk whose rows are all masked or ignored contributes normaliser 0 and a zero
gradient; if every chunk does, the loss is 0 as in one request.

Chunk size: the rows that keep a chunk's body (estimated from the tensors' encoded size per row) under
the server's ``max_body_bytes`` and under its in-flight budget shared by the chunks sent at once
(``max_inflight_bytes`` / (2.5 · in flight), the server's own accounting), and every tensor under
``max_tensor_elements``; all read from ``GET /v1/info``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distill.registry import LossSpec
from distill.result import LossResult

#: Requests estimated below this many body bytes are sent as they are, without asking the server's limits.
CHUNKING_THRESHOLD = 16 << 20
#: The share of a limit a chunk is planned to fill (the estimate leaves out the JSON around the tensors).
HEADROOM = 0.8
#: The server counts this much memory per body byte against its in-flight budget.
MEMORY_PER_BODY_BYTE = 2.5
#: Bytes per number in a JSON-list tensor, at most (a float64 written in full, and its comma).
JSON_BYTES_PER_NUMBER = 25


@dataclass(frozen=True)
class Limits:
    """The server's limits that bound one request (``GET /v1/info``)."""

    max_body_bytes: int
    max_tensor_elements: int
    max_inflight_bytes: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Limits:
        body = int(info["max_body_bytes"])
        return cls(body, int(info["max_tensor_elements"]), int(info.get("max_inflight_bytes", 4 * body)))


@dataclass(frozen=True)
class RowSplit:
    """A loss request's tensors, the per-row ones viewed as (rows, ...) so that row ranges can be cut.

    Attributes:
        rows: the student's row count (the product of its leading dimensions).
        lead_shape: the student's leading shape, restored on the combined answer.
        per_row: the tensors cut by rows, flattened to (rows, ...).
        whole: the tensors every chunk carries whole (per-class weights).
    """

    rows: int
    lead_shape: tuple[int, ...]
    per_row: dict[str, Tensor]
    whole: dict[str, Tensor]

    @classmethod
    def of(cls, spec: LossSpec, tensors: Mapping[str, Tensor], student: Tensor) -> RowSplit:
        """Split ``tensors`` (the request's, by argument name) of a call to ``spec`` with ``student``.

        The student, its targets and the mask are per row (their leading shape is the student's; a
        loss's own checks refuse any that is not); weights are whole.
        """
        lead = tuple(student.shape[:-1])
        rows = math.prod(lead)
        weights = {tensor.name for tensor in spec.inputs if tensor.role == "weight"}
        per_row: dict[str, Tensor] = {}
        whole: dict[str, Tensor] = {}
        for name, tensor in tensors.items():
            if name in weights or tuple(tensor.shape[: len(lead)]) != lead or tensor.dim() < len(lead):
                whole[name] = tensor
            else:
                per_row[name] = tensor.reshape(rows, *tensor.shape[len(lead) :])
        return cls(rows, lead, per_row, whole)

    def part(self, start: int, stop: int) -> dict[str, Tensor]:
        """The tensors of rows ``start:stop`` (views), with the whole ones."""
        return {**{name: tensor[start:stop] for name, tensor in self.per_row.items()}, **self.whole}

    def bytes_per_row(self, encoding: str) -> float:
        """The encoded size of one row of every per-row tensor (base64: 4/3 of the raw bytes)."""
        numbers = sum(tensor[:1].numel() for tensor in self.per_row.values())
        if encoding == "json":
            return numbers * JSON_BYTES_PER_NUMBER
        return sum(tensor[:1].numel() * tensor.element_size() for tensor in self.per_row.values()) * 4 / 3

    def whole_bytes(self, encoding: str) -> float:
        per_number = JSON_BYTES_PER_NUMBER if encoding == "json" else None
        return sum(tensor.numel() * (per_number or tensor.element_size() * 4 / 3) for tensor in self.whole.values())

    def estimated_bytes(self, encoding: str) -> float:
        """The request body's estimated size, all rows."""
        return self.rows * self.bytes_per_row(encoding) + self.whole_bytes(encoding)

    def rows_per_chunk(self, limits: Limits, encoding: str, in_flight: int, chunk_bytes: int | None = None) -> int:
        """The most rows a chunk may hold (at least 1): within ``chunk_bytes`` when given, else within the
        body limit and the in-flight budget of ``in_flight`` chunks at once, and within the element limit.

        Raises:
            ValueError: one row alone is over the limits (the request cannot be split to fit).
        """
        budget = chunk_bytes or HEADROOM * min(limits.max_body_bytes, limits.max_inflight_bytes / (MEMORY_PER_BODY_BYTE * in_flight))
        room = budget - self.whole_bytes(encoding)
        per_row = self.bytes_per_row(encoding)
        widest = max((tensor[:1].numel() for tensor in self.per_row.values()), default=1)
        rows = min(int(room // per_row) if per_row else self.rows, limits.max_tensor_elements // max(widest, 1))
        if rows < 1:
            raise ValueError(f"one row ({per_row:.0f} bytes encoded, {widest} elements) does not fit the server's limits: {limits}")
        return rows


def combine(results: list[LossResult], split: RowSplit, student: Tensor) -> LossResult:
    """The one-request answer from the chunks' answers, in row order (see the module docstring)."""
    reduction = results[0].reduction
    loss_sum = sum(result.loss_sum for result in results)
    grads = [result.grad for result in results]
    if reduction == "none":
        loss = torch.cat([result.loss for result in results])  # (rows, C) element-wise, (rows,) per row
        loss = loss.reshape(student.shape if loss.dim() == 2 else split.lead_shape)
        return LossResult(loss, _joined(grads, student), loss_sum, 1.0, reduction)
    if reduction == "sum":
        loss_value, normalizer, scales = loss_sum, 1.0, [1.0] * len(results)
    else:
        normalizer = sum(result.normalizer for result in results)
        loss_value = loss_sum / normalizer if normalizer > 0 else 0.0
        scales = [result.normalizer / normalizer if normalizer > 0 else 0.0 for result in results]
    scaled = [None if grad is None else grad * scale for grad, scale in zip(grads, scales, strict=True)]
    loss = torch.tensor(loss_value, dtype=results[0].loss.dtype)
    return LossResult(loss, _joined(scaled, student), loss_sum, normalizer, reduction)


def _joined(grads: list[Tensor | None], student: Tensor) -> Tensor | None:
    if any(grad is None for grad in grads):
        return None
    return torch.cat([grad.reshape(-1, student.shape[-1]) for grad in grads if grad is not None]).reshape(student.shape)
