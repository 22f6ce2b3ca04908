"""Computing many compatible prepared requests in one kernel call, each getting its solo answer.

The kept rows of every request are concatenated (dropped rows never travel), and so is each per-row
tensor (teacher rows, labels, row maxima, per-element weights). Every row carries its own request's
gradient scale, so the single kernel call writes each request's correctly normalised gradient; the
per-row losses are then split back and reduced with each request's own reduction and normaliser.
The arithmetic per row is the solo arithmetic, so answers equal the solo answers, up to the last bit
of element-wise transcendentals (a SIMD and a scalar path can round differently depending on where an
element sits in memory).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distill.result import LossResult
from distill.rows.kernel import KernelOutput, run_kernel
from distill.rows.layout import Rows
from distill.rows.prepared import Prepared, run
from distill.rows.reduction import finish


def _kept(tensor: Tensor, rows: Rows) -> Tensor:
    return tensor if rows.kept is None else tensor.index_select(0, rows.kept)


def run_group(group: Sequence[Prepared]) -> list[LossResult]:
    """Compute requests sharing one ``group_key`` in a single kernel call; results in the same order.

    When the fused kernel applies but declines, or a row loss comes out non-finite, each request is
    computed on its own instead: the chunked torch kernel would round the others' losses differently
    from their solo (fused) answers.
    """
    if len(group) == 1:
        return [run(group[0])]
    first = group[0]
    if any(item.group_key != first.group_key or item.group_key is None for item in group):
        raise ValueError("run_group needs requests with one (non-None) group key")
    counts = [item.rows.n_kept for item in group]
    total = sum(counts)
    student = torch.cat([_kept(item.student, item.rows) for item in group])
    layout = Rows(torch.Size((total, first.rows.n_classes)), total, first.rows.n_classes, None, total)
    data = {name: torch.cat([_kept(item.data[name], item.rows) for item in group]) for name in first.data}
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    sizes = torch.tensor(counts, device=student.device)
    scales = torch.tensor([item.grad_scale for item in group], dtype=compute, device=student.device).repeat_interleave(
        sizes, output_size=total
    )
    out = run_kernel(
        layout,
        student,
        first.build(layout, data),
        grad_scale=scales,
        want_grad=first.compute_grad,
        want_elements=any(item.reduction == "none" for item in group),
        elements_per_row=first.per_row,
        row_max=data.get("row_max"),
        fused=first.fused(data),
        chunk_elements=first.chunk_elements,
        eager_after_fused=False,
    )
    if out is None:
        return [run(item) for item in group]
    results: list[LossResult] = []
    start = 0
    for item, count in zip(group, counts, strict=True):
        part = slice(start, start + count)
        start += count
        results.append(finish(_unpack(out, part, item), item.rows, item.reduction, item.normalizer, per_row=item.per_row))
    return results


def _unpack(out: KernelOutput, part: slice, item: Prepared) -> KernelOutput:
    """One request's share of a group's output, laid out as its solo output would be."""
    rows = item.rows

    def scatter(values: Tensor, dtype: torch.dtype) -> Tensor:
        if rows.kept is None:
            return values.to(dtype)
        full = torch.zeros((rows.n_rows, *values.shape[1:]), dtype=dtype, device=values.device)
        return full.index_copy_(0, rows.kept, values.to(dtype))

    grad = scatter(out.grad[part], item.student.dtype) if item.compute_grad and out.grad is not None else None
    elements = scatter(out.elements[part], out.elements.dtype) if item.reduction == "none" and out.elements is not None else None
    return KernelOutput(out.row_loss[part], elements, grad)
