"""The combined distillation objective: a weighted sum of loss terms on one student.

    L = Σ_k  a_k · L_k(student),        ∂L/∂s = Σ_k  a_k · ∂L_k/∂s       (a_k: the term's coefficient)

Each term is any of :func:`~distill.kl_div.kl_div`, :func:`~distill.bce.bce` or
:func:`~distill.cross_entropy.cross_entropy` with its own targets and options (temperature, T²,
reduction, weights, smoothing); the student logits and the row mask are shared. Hinton et al.'s
recipe α·T²·KL(teacher ‖ student) + (1 − α)·CE(labels) is :func:`hinton`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from distill.bce import bce
from distill.cross_entropy import cross_entropy
from distill.errors import InputError
from distill.kl_div import kl_div
from distill.result import LossResult

LossName = Literal["kl_div", "bce", "cross_entropy"]

LOSSES: dict[str, Callable[..., LossResult]] = {"kl_div": kl_div, "bce": bce, "cross_entropy": cross_entropy}
_SHARED = frozenset({"student_logits", "mask"})


@dataclass(frozen=True)
class Term:
    """One weighted term: which loss, its coefficient, and that loss's keyword arguments.

    The multiplier is called ``coefficient`` because ``weight`` is already PyTorch's name for the
    per-class / per-element weights that a term's options may carry.
    """

    loss: LossName
    coefficient: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def kl_div(cls, coefficient: float = 1.0, **options: Any) -> Term:
        """A KL(teacher ‖ student) term; ``options`` are :func:`~distill.kl_div.kl_div`'s keywords."""
        return cls("kl_div", coefficient, options)

    @classmethod
    def bce(cls, coefficient: float = 1.0, **options: Any) -> Term:
        """A soft-label BCE term on the student logits; ``options`` are :func:`~distill.bce.bce`'s."""
        return cls("bce", coefficient, options)

    @classmethod
    def cross_entropy(cls, coefficient: float = 1.0, **options: Any) -> Term:
        """A cross-entropy term; ``options`` are :func:`~distill.cross_entropy.cross_entropy`'s."""
        return cls("cross_entropy", coefficient, options)


@dataclass(frozen=True)
class TermResult:
    """One term's contribution: its own (unweighted) result and its coefficient."""

    loss: LossName
    coefficient: float
    result: LossResult


@dataclass(frozen=True)
class DistillResult:
    """The total loss, its gradient, and every term's result.

    Term gradients are kept only when asked for (``term_grads=True``); the total gradient always is
    (unless ``compute_grad=False``).
    """

    loss: Tensor
    grad: Tensor | None
    terms: list[TermResult]


def distill(
    student_logits: Tensor,
    terms: Sequence[Term],
    *,
    mask: Tensor | None = None,
    compute_grad: bool = True,
    term_grads: bool = False,
) -> DistillResult:
    """Weighted sum of loss terms on ``student_logits``; see the module docstring.

    Every term must reduce to a scalar (``reduction="none"`` is rejected) so the total is a number.
    """
    if not terms:
        raise InputError("terms", "give at least one term")
    results: list[TermResult] = []
    total: Tensor | None = None
    grad: Tensor | None = None
    for index, term in enumerate(terms):
        _check_term(term, index)
        try:
            result = LOSSES[term.loss](student_logits, **term.options, mask=mask, compute_grad=compute_grad)
        except InputError as error:
            if error.argument in _SHARED:
                raise
            raise InputError(f"terms.{index}.{error.argument}", error.reason, error.index) from None
        weighted = result.loss * term.coefficient
        total = weighted if total is None else total + weighted
        if result.grad is not None:
            grad = result.grad * term.coefficient if grad is None else grad.add_(result.grad, alpha=term.coefficient)
        kept = result if term_grads else LossResult(result.loss, None, result.loss_sum, result.normalizer, result.reduction)
        results.append(TermResult(term.loss, term.coefficient, kept))
    assert total is not None
    return DistillResult(total, grad, results)


def _check_term(term: Term, index: int) -> None:
    where = f"terms.{index}"
    if term.loss not in LOSSES:
        raise InputError(f"{where}.loss", f"must be one of {', '.join(LOSSES)}; got {term.loss!r}")
    if not math.isfinite(term.coefficient):
        raise InputError(f"{where}.coefficient", f"must be a finite number, got {term.coefficient}")
    for reserved in ("mask", "compute_grad", "student_probs"):
        if reserved in term.options:
            raise InputError(f"{where}.{reserved}", "is set for the whole objective, not per term")
    if term.options.get("reduction") == "none":
        raise InputError(f"{where}.reduction", "must reduce to a number in the combined objective (not 'none')")


def hinton(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
    mask: Tensor | None = None,
    compute_grad: bool = True,
) -> DistillResult:
    """Hinton et al. (2015): α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, labels)."""
    return distill(
        student_logits,
        [
            Term.kl_div(alpha, teacher_logits=teacher_logits, temperature=temperature),
            Term.cross_entropy(1.0 - alpha, labels=labels),
        ],
        mask=mask,
        compute_grad=compute_grad,
    )
