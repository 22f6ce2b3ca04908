"""Top-k teachers: the teacher's k largest classes per row, and a stated policy for the rest of its mass.

A language-model teacher is often kept or served as its top k log-probabilities per token (vLLM's
``logprobs``, DistillKit's compressed logits). Such a teacher is given as ``teacher_topk_indices``
(class ids, (..., k), any order, no repeats in a row, each in [0, C)) with exactly one of
``teacher_topk_logits`` or ``teacher_topk_log_probs`` ((..., k)), and a ``missing_mass`` policy,
required whenever a top-k teacher is given:

* ``renormalize``: p̃ = softmax over the k values (logits divided by T first; log-probabilities taken
  as given and renormalised), zero elsewhere (DistillKit's default).
* ``tail`` (log-probabilities only: with logits the teacher's normaliser is unknown): the k
  probabilities as given plus one tail bin p_tail = 1 − Σ_k p (clamped at 0), for a distribution over
  k + 1 bins. Σ_k p may exceed 1 by :data:`TAIL_SLACK` (the teacher's own rounding); beyond that the
  log-probabilities are not normalised over the vocabulary and the request is refused.

Either way the teacher becomes k + 1 log-probabilities per row (:class:`TopKTeacher`; the tail bin is
−inf under ``renormalize``, and when k = C there is nothing outside the top k). The student side and the
divergences on those bins are :mod:`distill.losses.topk`'s. Values and indices of rows dropped by the
mask are never inspected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from distill.errors import InputError
from distill.rows.checks import check_log_probs, check_logits, check_scaled
from distill.rows.layout import FLOAT_DTYPES, Rows, compute_dtype, unravel
from distill.wire import Kind

MissingMass = Literal["renormalize", "tail"]
POLICIES: tuple[MissingMass, ...] = ("renormalize", "tail")
#: How far Σ exp(teacher_topk_log_probs) may exceed 1 under ``tail`` (rounding in the teacher's softmax).
TAIL_SLACK = 1e-4

INDICES, LOGITS, LOG_PROBS = "teacher_topk_indices", "teacher_topk_logits", "teacher_topk_log_probs"


@dataclass(frozen=True)
class TopKTeacher:
    """A validated top-k teacher, aligned with the student's rows.

    Attributes:
        indices: (n_rows, k) int64 class ids (only kept rows are meaningful).
        log_bins: (n_rows, k + 1) teacher log-probabilities of the k classes and the tail bin, in the
            student's compute dtype.
        policy: the ``missing_mass`` policy that made the bins.
        argument: the value field given (``teacher_topk_logits`` or ``teacher_topk_log_probs``).
    """

    indices: Tensor
    log_bins: Tensor
    policy: MissingMass
    argument: str


@dataclass(frozen=True)
class TopKArguments:
    """A request's four top-k arguments, as given (any may be None)."""

    indices: Tensor | None
    logits: Tensor | None
    log_probs: Tensor | None
    missing_mass: str | None

    def check_policy_alone(self) -> None:
        """Refuse ``missing_mass`` given without the top-k teacher it is the policy of.

        Raises:
            InputError: ``missing_mass`` is set and no top-k tensor is.
        """
        if self.missing_mass is not None and self.indices is None and self.logits is None and self.log_probs is None:
            raise InputError("missing_mass", f"is the policy of a top-k teacher ({INDICES} with its values): drop it with this teacher")

    @property
    def given(self) -> bool:
        """Whether the request uses the top-k teacher form (any of the four is set)."""
        return not (self.indices is None and self.logits is None and self.log_probs is None and self.missing_mass is None)


def topk_teacher(
    rows: Rows,
    student: Tensor,
    student_max: Tensor,
    temperature: float,
    arguments: TopKArguments,
    dense: tuple[Tensor | None, ...],
) -> TopKTeacher:
    """Validate a top-k teacher against the student's rows (n_rows, C, row maxima ``student_max``) and
    form its k + 1 log-bins; ``dense`` are the request's dense teacher forms (which must be absent).

    Raises:
        InputError: a dense teacher given as well; ``missing_mass`` absent or unknown, or ``tail`` with
            logits; indices absent, not integers, of the wrong shape, k outside [1, C], a class out of
            [0, C) or repeated in a row; values absent or both given, not floating, shaped unlike the
            indices, NaN, +inf logits, a row without mass, positive log-probabilities, or under ``tail``
            probabilities summing past 1 + :data:`TAIL_SLACK`; logits that T < 1 would overflow. Each
            names the field (and row).
    """
    indices, logits, log_probs, missing_mass = arguments.indices, arguments.logits, arguments.log_probs, arguments.missing_mass
    if any(value is not None for value in dense):
        arguments.check_policy_alone()
        raise InputError("teacher", "give one teacher: a dense form (teacher_logits, teacher_probs, teacher_log_probs) or a top-k one")
    if missing_mass not in POLICIES:
        got = "" if missing_mass is None else f"; got {missing_mass!r}"
        raise InputError("missing_mass", f"is required with a top-k teacher: 'renormalize' or 'tail'{got}")
    if indices is None:
        raise InputError(INDICES, f"is required with {LOGITS} or {LOG_PROBS} and missing_mass")
    if (logits is None) == (log_probs is None):
        raise InputError(LOGITS, f"give exactly one of {LOGITS} or {LOG_PROBS} ({'both' if logits is not None else 'neither'} given)")
    if missing_mass == "tail" and logits is not None:
        raise InputError(
            "missing_mass",
            f"'tail' needs {LOG_PROBS} normalised over the full vocabulary (with logits the teacher's normaliser is unknown); "
            "use 'renormalize'",
        )
    check_scaled(student_max, student.dtype, "student_logits", rows, temperature)
    layout = _topk_layout(rows, indices)
    flat_indices = indices.to(student.device).reshape(rows.n_rows, layout.n_classes).long()
    _check_indices(flat_indices, layout, rows.n_classes)
    argument, values = (LOGITS, logits) if logits is not None else (LOG_PROBS, log_probs)
    assert values is not None
    if not isinstance(values, Tensor) or values.dtype not in FLOAT_DTYPES:
        raise InputError(argument, "must be a floating tensor")
    if tuple(values.shape) != tuple(indices.shape):
        raise InputError(argument, f"shape {tuple(values.shape)} must equal {INDICES}' shape {tuple(indices.shape)}")
    flat_values = values.to(student.device).reshape(rows.n_rows, layout.n_classes)
    compute = compute_dtype(student.dtype)
    tail = torch.full((rows.n_rows, 1), -math.inf, dtype=compute, device=student.device)
    if argument == LOGITS:
        row_max = check_logits(flat_values, argument, layout, allow_neg_inf=True)
        check_scaled(row_max, student.dtype, argument, layout, temperature)  # computed in the student's dtype
        scaled = flat_values.to(compute) / temperature
        return TopKTeacher(flat_indices, torch.cat([torch.log_softmax(scaled, dim=-1), tail], dim=-1), "renormalize", argument)
    check_log_probs(flat_values, argument, layout)
    given = flat_values.to(compute)
    if missing_mass == "renormalize":
        _check_some_mass(given, layout, argument)
        return TopKTeacher(flat_indices, torch.cat([torch.log_softmax(given, dim=-1), tail], dim=-1), "renormalize", argument)
    mass = flat_values.to(torch.float64).exp().sum(dim=-1)  # in float64 from the values as given: 1 − Σp may be tiny
    _check_normalised(mass, layout, argument, complete=layout.n_classes == rows.n_classes)
    if layout.n_classes < rows.n_classes:
        tail = torch.log((1.0 - mass).clamp_(min=0.0)).to(compute).unsqueeze(1)
    return TopKTeacher(flat_indices, torch.cat([given, tail], dim=-1), "tail", argument)


def _topk_layout(rows: Rows, indices: Tensor) -> Rows:
    """The rows of the (..., k) top-k tensors: the student's rows, k per row."""
    if not isinstance(indices, Tensor) or indices.dtype not in Kind.INDEX.dtypes.values():
        raise InputError(INDICES, "must be an integer tensor (int64 or int32)")
    if indices.dim() == 0 or tuple(indices.shape[:-1]) != rows.lead_shape:
        raise InputError(INDICES, f"shape {tuple(indices.shape)} must be the student's leading shape {rows.lead_shape} plus (k,)")
    k = indices.shape[-1]
    if not 1 <= k <= rows.n_classes:
        raise InputError(INDICES, f"k = {k} classes per row must be in [1, C = {rows.n_classes}]")
    return Rows(indices.shape, rows.n_rows, k, rows.kept, rows.n_kept)


def _kept(flat: Tensor, layout: Rows) -> Tensor:
    return flat if layout.kept is None else flat.index_select(0, layout.kept)


def _raise_row(name: str, reason: str, layout: Rows, bad_rows: Tensor, position: Tensor | None = None) -> None:
    """Raise at the first kept row flagged in ``bad_rows`` (and its ``position`` in the row, when given)."""
    row = int(bad_rows.nonzero()[0, 0])
    flat_row = row if layout.kept is None else int(layout.kept[row])
    coords = unravel(flat_row, layout.lead_shape) if layout.lead_shape else ()
    raise InputError(name, reason, coords if position is None else (*coords, int(position[row])))


def _check_indices(flat: Tensor, layout: Rows, classes: int) -> None:
    kept = _kept(flat, layout)
    if kept.numel() == 0:
        return
    bad = (kept < 0) | (kept >= classes)
    if bool(bad.any()):
        _raise_row(INDICES, f"must be class ids in [0, {classes})", layout, bad.any(dim=1), bad.int().argmax(dim=1))
    ordered, order = kept.sort(dim=-1)
    repeated = ordered[:, 1:] == ordered[:, :-1]
    if bool(repeated.any()):
        rows_with = repeated.any(dim=1)
        first = order.gather(1, repeated.int().argmax(dim=1, keepdim=True) + 1).squeeze(1)
        _raise_row(INDICES, "repeats a class id within a row (each of the k must differ)", layout, rows_with, first)


def _check_some_mass(log_probs: Tensor, layout: Rows, argument: str) -> None:
    empty = (_kept(log_probs, layout) == -math.inf).all(dim=-1)
    if bool(empty.any()):
        _raise_row(argument, "row has no probability mass (every value is -inf)", layout, empty)


def _check_normalised(mass: Tensor, layout: Rows, argument: str, complete: bool) -> None:
    """Under ``tail`` the k probabilities may not sum past 1 (+ slack); with k = C (``complete``: no tail
    bin to hold the rest) they must sum to 1 (± slack)."""
    kept = _kept(mass, layout)
    bad = (kept > 1.0 + TAIL_SLACK) | ((kept < 1.0 - TAIL_SLACK) if complete else False)
    if bool(bad.any()):
        total = float(kept[bad][0])
        bound = f"over 1 + {TAIL_SLACK:g}" if total > 1.0 else f"under 1 - {TAIL_SLACK:g} with k = C (no tail bin for the rest)"
        reason = f"sums to {total:.6g} in probability, {bound}: under 'tail' they must be log-probabilities normalised over all C"
        _raise_row(argument, reason, layout, bad)
