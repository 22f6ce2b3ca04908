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
gradient; if every chunk does, the loss is 0 as in one request. The combined objective is cut the same
way when every student tensor (the logits and the named features) has the same leading shape; its chunks
carry each term's own gradient, and each term is combined as a loss, then weighted and summed.

Chunk size: the rows that keep a chunk's body (estimated from the tensors' encoded size per row) under
the server's ``max_body_bytes`` and under its in-flight budget shared by the chunks sent at once
(``max_inflight_bytes`` / (2.5 · in flight), the server's own accounting), and every tensor under
``max_tensor_elements``; all read from ``GET /v1/info``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from distill.objective import LOGITS, DistillResult, Term, TermResult
from distill.registry import LOSSES, LossSpec
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
    def of(cls, lead: tuple[int, ...], tensors: Mapping[str, Tensor], weights: Iterable[str] = (), classes: int = 1) -> RowSplit:
        """Split ``tensors`` by the rows of the leading shape ``lead``; tensors whose shape does not start
        with ``lead`` go whole (a loss's own checks refuse a per-row tensor of another leading shape).

        ``weights`` name the weights that broadcast against the student (..., ``classes``): one constant
        over the rows (per class, or one number) goes whole, as its last dimension; one that varies over
        the rows (per element, per position) is expanded to the student's shape and cut like it.
        """
        rows = math.prod(lead)
        broadcast = set(weights)
        per_row: dict[str, Tensor] = {}
        whole: dict[str, Tensor] = {}
        for name, tensor in tensors.items():
            if name in broadcast:
                if math.prod(tensor.shape[:-1]) <= 1:
                    whole[name] = tensor.reshape(tensor.shape[-1:])
                    continue
                tensor = torch.broadcast_to(tensor, (*lead, classes))
            if tensor.dim() < len(lead) or tuple(tensor.shape[: len(lead)]) != lead:
                whole[name] = tensor
            else:
                per_row[name] = tensor.reshape(rows, *tensor.shape[len(lead) :])
        return cls(rows, lead, per_row, whole)

    @classmethod
    def of_loss(cls, spec: LossSpec, tensors: Mapping[str, Tensor], student: Tensor) -> RowSplit:
        """The split of a call to the loss ``spec`` with ``student``: its weights go whole."""
        weights = [tensor.name for tensor in spec.inputs if tensor.role == "weight"]
        return cls.of(tuple(student.shape[:-1]), tensors, weights, student.shape[-1])

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
        server = HEADROOM * min(limits.max_body_bytes, limits.max_inflight_bytes / (MEMORY_PER_BODY_BYTE * in_flight))
        budget = min(chunk_bytes, server) if chunk_bytes else server
        room = budget - self.whole_bytes(encoding)
        per_row = self.bytes_per_row(encoding)
        widest = max((tensor[:1].numel() for tensor in self.per_row.values()), default=1)
        rows = min(int(room // per_row) if per_row else self.rows, limits.max_tensor_elements // max(widest, 1))
        if rows < 1:
            bound = (
                f"chunk_bytes = {chunk_bytes}"
                if chunk_bytes and chunk_bytes <= server
                else f"the server's limits ({limits.max_body_bytes} body bytes, {limits.max_tensor_elements} elements a tensor, "
                f"{limits.max_inflight_bytes} bytes in flight shared by {in_flight} chunks at once)"
            )
            raise ValueError(
                f"one row ({per_row:.0f} bytes encoded, {widest} elements, plus {self.whole_bytes(encoding):.0f} bytes of whole tensors) "
                f"does not fit {bound}"
            )
        return rows


def combine(results: Sequence[LossResult], student: Tensor) -> LossResult:
    """The one-request answer for ``student`` from the chunks' answers, in row order (see the module docstring)."""
    reduction = results[0].reduction
    loss_sum = sum(result.loss_sum for result in results)
    grads = [result.grad for result in results]
    if reduction == "none":
        loss = torch.cat([result.loss for result in results])  # (rows, C) element-wise, (rows,) per row
        loss = loss.reshape(student.shape if loss.dim() == 2 else student.shape[:-1])
        return LossResult(loss, _joined(grads, student), loss_sum, 1.0, reduction)
    if reduction == "sum":
        loss_value, normalizer, scales = loss_sum, 1.0, [1.0] * len(results)
    else:
        normalizer = sum(result.normalizer for result in results)
        loss_value = loss_sum / normalizer if normalizer > 0 else 0.0
        scales = [result.normalizer / normalizer if normalizer > 0 else 0.0 for result in results]
    scaled = [None if grad is None else _rescaled(grad, scale) for grad, scale in zip(grads, scales, strict=True)]
    loss = torch.tensor(loss_value, dtype=results[0].loss.dtype)
    return LossResult(loss, _joined(scaled, student), loss_sum, normalizer, reduction)


@dataclass(frozen=True)
class ObjectiveRows:
    """The combined objective's tensors by rows: the students, the mask and every term's tensors.

    Attributes:
        split: all of them under one namespace (``student.<name>``, ``mask``, ``<term index>.<argument>``).
        chunkable: every student's own leading shape (all but its last dimension) is the logits' (else the
            request goes whole).
    """

    split: RowSplit
    chunkable: bool

    @classmethod
    def of(cls, students: Mapping[str, Tensor], mask: Tensor | None, terms: Sequence[Term]) -> ObjectiveRows:
        named = {f"student.{name}": tensor for name, tensor in students.items()} | ({} if mask is None else {"mask": mask})
        constant: list[str] = []
        for index, term in enumerate(terms):
            weights = {tensor.name for tensor in LOSSES[term.loss].inputs if tensor.role == "weight"}
            for key, value in term.options.items():
                if not isinstance(value, Tensor):
                    continue
                if key in weights and math.prod(value.shape[:-1]) <= 1:
                    constant.append(f"{index}.{key}")
                elif key in weights:  # varies over the rows of its term's student: cut like it
                    value = torch.broadcast_to(value, students[term.student].shape)
                named[f"{index}.{key}"] = value
        split = RowSplit.of(tuple(students[LOGITS].shape[:-1]), named, constant)
        lead = tuple(students[LOGITS].shape[:-1])
        return cls(split, all(tuple(tensor.shape[:-1]) == lead for tensor in students.values()))

    def take(
        self, students: Mapping[str, Tensor], mask: Tensor | None, terms: Sequence[Term], rows: tuple[int, int] | None
    ) -> tuple[dict[str, Tensor], Tensor | None, list[Term]]:
        """The students, the mask and the terms of rows ``start:stop``; all of them as given for None."""
        if rows is None:
            return dict(students), mask, list(terms)
        part = self.split.part(*rows)
        chunk_terms = [
            replace(term, options={key: part.get(f"{index}.{key}", value) for key, value in term.options.items()})
            for index, term in enumerate(terms)
        ]
        return {name: part[f"student.{name}"] for name in students}, part.get("mask"), chunk_terms


def combine_objective(
    results: Sequence[DistillResult], terms: Sequence[Term], students: Mapping[str, Tensor], term_grads: bool
) -> DistillResult:
    """The one-request answer of the combined objective from its chunks' answers, which carried every
    term's own gradient: each term is combined as a loss (:func:`combine`) and the gradients summed per
    student, a_k · ∂L_k/∂student."""
    combined = [combine([result.terms[index].result for result in results], students[term.student]) for index, term in enumerate(terms)]
    logits = students[LOGITS]
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    total = torch.tensor(sum(term.coefficient * float(result.loss) for term, result in zip(terms, combined, strict=True)), dtype=dtype)
    grads: dict[str, Tensor] | None = None
    if all(result.grad is not None for result in combined):
        grads = {name: torch.zeros(tensor.shape, dtype=tensor.dtype) for name, tensor in students.items()}
        for term, result in zip(terms, combined, strict=True):
            assert result.grad is not None
            grads[term.student] += result.grad.to(grads[term.student].dtype) * term.coefficient
    term_results = [
        TermResult(term.loss, term.coefficient, result if term_grads else replace(result, grad=None), term.student)
        for term, result in zip(terms, combined, strict=True)
    ]
    if grads is None:
        return DistillResult(total, None, term_results)
    return DistillResult(total, grads.pop(LOGITS), term_results, grads)


def weighted_label_mean(name: str, arguments: Mapping[str, Any]) -> float | None:
    """The normaliser of a hard-label cross-entropy's weighted mean, Σ weight[label] over the kept, labelled
    rows (PyTorch's), for a request whose chunks must be sent as sums and divided once: a chunk's share of
    that sum can be 0 (padding with weight 0, or weights of both signs) where the whole's is not, and a
    weighted mean over a zero sum is refused. None for every other request, and for labels the server
    should judge (out of range).

    Raises:
        ValueError: the weights of the labelled classes sum to 0, as the server would answer the request whole.
    """
    labels, weight = arguments.get("labels"), arguments.get("weight")
    if name != "cross_entropy" or labels is None or weight is None or arguments.get("reduction", "mean") != "mean":
        return None
    flat = labels.reshape(-1).long()
    valid = flat != int(arguments.get("ignore_index", -100))
    mask = arguments.get("mask")
    if mask is not None:
        valid &= mask.reshape(-1).bool()
    chosen = flat[valid]
    if chosen.numel() and not bool(((chosen >= 0) & (chosen < weight.numel())).all()):
        return None
    total = float(weight.reshape(-1).double()[chosen].sum()) if chosen.numel() else 0.0
    if total == 0.0 and chosen.numel():
        raise ValueError("weight: the weights of the labelled classes sum to 0: their weighted mean is undefined (use reduction 'sum')")
    return total


def combine_sums(results: Sequence[LossResult], student: Tensor, normalizer: float) -> LossResult:
    """The ``mean`` answer from chunks sent with ``reduction="sum"``: their sums divided once by ``normalizer``."""
    loss_sum = sum(result.loss_sum for result in results)
    scale = 1.0 / normalizer if normalizer > 0 else 0.0
    grads = [None if result.grad is None else _rescaled(result.grad, scale) for result in results]
    loss = torch.tensor(loss_sum * scale, dtype=results[0].loss.dtype)
    return LossResult(loss, _joined(grads, student), loss_sum, normalizer, "mean")


def _rescaled(grad: Tensor, scale: float) -> Tensor:
    """``grad · scale``, computed in float32 at least (a half-precision gradient is rounded once, not twice)."""
    if grad.dtype in (torch.float16, torch.bfloat16):
        return (grad.float() * scale).to(grad.dtype)
    return grad * scale


def _joined(grads: list[Tensor | None], student: Tensor) -> Tensor | None:
    if any(grad is None for grad in grads):
        return None
    return torch.cat([grad.reshape(-1, student.shape[-1]) for grad in grads if grad is not None]).reshape(student.shape)
