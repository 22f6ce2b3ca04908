"""Soft-target losses against a top-k teacher (:mod:`distill.rows.topk`): the divergence on k + 1 bins.

The teacher is k + 1 probabilities per row: its top-k classes K and a tail bin (empty under
``renormalize``). The student keeps its full softmax q = softmax(s / T) over all C classes and is
collapsed onto the same bins: q_k for k ∈ K, and q_tail = Σ_{j ∉ K} q_j, computed as that sum (not as
1 − Σ_K q, which cancels). The loss is the divergence D of the k + 1 bins, times T² (unless
``scale_t2`` is false), with the same per-bin terms as the dense losses (:mod:`distill.losses.divergences`;
cross-entropy's −p·log q; :mod:`distill.losses.terms`). Under ``renormalize`` this is exactly the dense divergence against the
teacher p̃ on K and 0 elsewhere: every divergence served here sums a term φ(p_j, q_j) with
φ(0, q) = c·q over the classes outside K, which is φ(0, q_tail).

Gradient. With w_b = Q_b · ∂D/∂Q_b on the bins (the dense losses' w) and W = Σ_b w_b,

    ∂D/∂z_j = w_b − q_j · W                   for j ∈ K (its bin b)
    ∂D/∂z_j = q_j · (w_tail / q_tail − W)      for j ∉ K           (z = s / T; 0 when q_tail = 0)

and ∂L/∂s = T² / (T · normalizer) · ∂D/∂z, so the gradient reaches every class through the tail.

Reductions: ``batchmean`` = Σ / kept rows, ``sum``, ``mean`` with its dense meaning (Σ / (kept rows · C)
for the divergences, Σ / kept rows for cross-entropy), ``none`` one value per row. An infinite value is
a 422 naming the row and saying which policy or option keeps it finite: a KL(p‖·)-type term (forward
KL, cross-entropy, JSD β = 0, skew KL α = 0) where the student is −inf on a bin with teacher mass, a
KL(q‖·)-type term (reverse KL, JSD β = 1, skew reverse KL α = 0) where the teacher has no mass and the
student has: always for the tail under ``renormalize`` (k < C), for ``tail`` when the top-k mass is 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.errors import InputError
from distill.losses.terms import Divergence, guarded_product
from distill.native import kernels as native
from distill.rows.kernel import Chunk, ChunkResult, Kernel
from distill.rows.layout import Rows, take
from distill.rows.prepared import Prepared
from distill.rows.reduction import Reduction, grad_scale
from distill.rows.topk import TopKArguments, topk_teacher

#: Elements per chunk of rows: the kernel is about twenty torch ops per chunk, so chunks 16× the
#: default's size (16 MiB per float32 temporary of a whole chunk) cut their overhead, measured in one
#: run: (256, 32000) 10.5 → 8.5 ms, (16, 131072) 2.1 → 1.4 ms.
CHUNK_ELEMENTS = 1 << 22

#: Where a top-k term's value can be infinite, and which policy or option would keep it finite.
_REMEDY = {
    "renormalize": "use missing_mass 'tail' with teacher_topk_log_probs, or a divergence that stays finite there "
    "(kl_div, jsd with beta < 1, skew_reverse_kl with alpha > 0)",
    "tail": "the teacher's top-k probabilities sum to 1; use jsd with beta < 1 or skew_reverse_kl with alpha > 0",
}


def cross_entropy_terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
    """H(p, q): elements −p·log q, w = −p."""
    return guarded_product(p, log_q, guarded).neg_(), -p


CROSS_ENTROPY = Divergence(cross_entropy_terms, "forward", native.LOSS_CE)


def prepare_topk(
    name: str,
    what: str,
    divergence: Divergence,
    parameter: float,
    rows: Rows,
    student: Tensor,
    row_max: Tensor,
    arguments: TopKArguments,
    dense: tuple[Tensor | None, ...],
    temperature: float,
    scale_t2: bool,
    reduction: Reduction,
    normalizer: float,
    compute_grad: bool,
) -> Prepared:
    """The :class:`Prepared` of a soft-target loss ``name`` (``what`` in messages) against the top-k teacher of
    ``arguments``, validated here (:func:`~distill.rows.topk.topk_teacher`; ``dense``: the request's dense
    teacher forms, which must be absent).

    ``parameter`` is the divergence's option (β, α; 0 for the others), part of the batching key.

    Raises:
        InputError: as :func:`~distill.rows.topk.topk_teacher`.
    """
    teacher = topk_teacher(rows, student, row_max, temperature, arguments, dense)
    factor = temperature**2 if scale_t2 else 1.0
    k = teacher.indices.shape[1]
    policy, argument = teacher.policy, teacher.argument

    def build(layout: Rows, data: dict[str, Tensor]) -> Kernel:
        return topk_kernel(layout, data["indices"], data["teacher"], divergence, what, policy, argument, temperature, factor)

    return Prepared(
        loss=name,
        rows=rows,
        student=student,
        data={"indices": teacher.indices, "teacher": teacher.log_bins, "row_max": row_max},
        build=build,
        key=(name, "topk", rows.n_classes, k, student.dtype, student.device, policy, argument, temperature, factor, parameter),
        reduction=reduction,
        normalizer=normalizer,
        grad_scale=grad_scale(factor / temperature, normalizer),
        compute_grad=compute_grad,
        per_row=True,
        chunk_elements=CHUNK_ELEMENTS,
    )


def topk_kernel(
    rows: Rows,
    indices: Tensor,
    log_bins: Tensor,
    divergence: Divergence,
    what: str,
    policy: str,
    argument: str,
    temperature: float,
    factor: float,
) -> Kernel:
    """The per-chunk kernel: the student's bins from one exponential pass, D on the bins, the gradient on all C."""
    inverse_t = 1.0 / temperature

    def kernel(chunk: Chunk, want_grad: bool, want_elements: bool) -> ChunkResult:
        s = chunk.student
        assert chunk.row_max is not None
        top = take(indices, chunk.selection)
        log_p = take(log_bins, chunk.selection).to(s.dtype)
        shift = (chunk.row_max * inverse_t).unsqueeze(1)
        out = chunk.grad_out if want_grad else None
        e = torch.mul(s, inverse_t, out=out) if out is not None else s * inverse_t
        e.sub_(shift).exp_()
        total = e.sum(dim=-1)
        e.scatter_(1, top, 0.0)
        outside = e.sum(dim=-1)
        log_outside = outside.log()
        lost = _underflowed_tails(outside, top.shape[1], s.shape[1])
        if lost is not None:  # recompute those tails as log-sum-exps with their own maxima, and their shares
            tail_z = s.index_select(0, lost) * inverse_t
            tail_z.scatter_(1, top.index_select(0, lost), -math.inf)
            tail_lse = torch.logsumexp(tail_z, dim=-1, keepdim=True)
            log_outside[lost] = tail_lse.squeeze(1) - shift.index_select(0, lost).squeeze(1)
            e[lost] = torch.where(tail_lse > -math.inf, (tail_z - tail_lse).exp_(), 0.0)  # q_j / q_tail
        log_total = total.log().unsqueeze(1)
        log_q = torch.cat([s.gather(1, top) * inverse_t - shift - log_total, log_outside.unsqueeze(1) - log_total], dim=1)
        q, p = log_q.exp(), log_p.exp()
        elements, w = divergence.terms(q, log_q, p, log_p, False)
        row_loss = elements.sum(dim=-1)
        if not bool(torch.isfinite(row_loss).all()) or (want_grad and not bool(torch.isfinite(w).all())):
            _raise_if_infinite(divergence, what, policy, argument, rows, chunk, top, log_q, log_p)
            elements, w = divergence.terms(q, log_q, p, log_p, True)
            row_loss = elements.sum(dim=-1)
        grad = None
        if want_grad:
            k = top.shape[1]
            total_w = w.sum(dim=-1, keepdim=True)
            q_tail, w_tail = q[:, k:], w[:, k:]
            # e holds exp(z_j − shift) outside the top k, so q_j = e_j / total and q_j / q_tail = e_j / outside
            outside_scale = torch.where(outside.unsqueeze(1) > 0, w_tail / outside.unsqueeze(1), 0.0) - total_w / total.unsqueeze(1)
            if lost is not None:  # there e holds q_j / q_tail itself
                outside_scale[lost] = w_tail[lost] - total_w[lost] * q_tail[lost]
            grad = e.mul_(outside_scale * chunk.grad_scale)
            inside = (w[:, :k] - q[:, :k] * total_w) * chunk.grad_scale
            grad.scatter_(1, top, inside)
        if factor != 1.0:
            row_loss.mul_(factor)
        return ChunkResult(row_loss, row_loss if want_elements else None, grad)

    return kernel


def _underflowed_tails(outside: Tensor, k: int, classes: int) -> Tensor | None:
    """The rows whose sum over the classes outside the top k lost its precision to underflow (every such
    class far below the row's maximum), or None: their tails are recomputed with their own maxima."""
    if k == classes:
        return None
    lost = (outside < torch.finfo(outside.dtype).tiny).nonzero().squeeze(1)
    return lost if lost.numel() else None


def _raise_if_infinite(
    divergence: Divergence,
    what: str,
    policy: str,
    argument: str,
    rows: Rows,
    chunk: Chunk,
    top: Tensor,
    log_q: Tensor,
    log_p: Tensor,
) -> None:
    """Name the first bin where the divergence is infinite, if it can be (see the module docstring)."""
    k = top.shape[1]
    if divergence.infinite == "forward":
        bad = (log_p > -math.inf) & (log_q == -math.inf)
    elif divergence.infinite == "reverse":
        bad = (log_p == -math.inf) & (log_q > -math.inf)
    else:
        return
    if not bool(bad.any()):
        return
    position, bin_ = divmod(int(bad.reshape(-1).nonzero()[0, 0]), k + 1)
    row = rows.row_coords(chunk.selection, position)
    if divergence.infinite == "forward":
        if bin_ < k:
            reason = f"is -inf at class {int(top[position, bin_])}, where the top-k teacher has probability mass: the {what} is infinite"
            raise InputError("student_logits", reason, (*row, int(top[position, bin_])))
        reason = f"is -inf at every class outside the teacher's top k, where 'tail' gives the teacher mass: the {what} is infinite"
        raise InputError("student_logits", f"{reason}; use missing_mass 'renormalize'", row)
    if bin_ < k:
        reason = f"is -inf (probability 0) where the student has probability mass: the {what} is infinite"
        raise InputError(argument, reason, (*row, bin_))
    reason = f"leaves the teacher no mass outside its top k, where the student has some: the {what} is infinite; {_REMEDY[policy]}"
    raise InputError("missing_mass", f"'{policy}' {reason}", row)


def topk_example(student: Tensor, k: int = 3) -> dict[str, object]:
    """A valid top-k teacher for ``student`` (..., C): the k largest of random log-probabilities, shuffled, ``tail``."""
    log_probs = torch.log_softmax(torch.randn_like(student, dtype=torch.float32), dim=-1)
    indices = log_probs.topk(min(k, student.shape[-1]), dim=-1).indices.flip(-1)
    return {"teacher_topk_indices": indices, "teacher_topk_log_probs": log_probs.gather(-1, indices), "missing_mass": "tail"}
