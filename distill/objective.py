"""The combined distillation objective: a weighted sum of loss terms on one student.

    L = Σ_k  a_k · L_k(student),        ∂L/∂s = Σ_k  a_k · ∂L_k/∂s       (a_k: the term's coefficient)

Each term is any registered loss (:data:`distill.registry.LOSSES`: KL divergence, BCE,
cross-entropy, …) with its own targets and options (temperature, T², reduction, weights,
smoothing); the student logits and the row mask are shared. Hinton et al.'s recipe
α·T²·KL(teacher ‖ student) + (1 − α)·CE(labels) is :func:`hinton`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from distill.errors import InputError
from distill.registry import COMMON, LOSSES
from distill.result import LossResult
from distill.rows.layout import real_number

#: Largest |coefficient| of a term: a weighted float32 loss and gradient stay far from overflow.
MAX_COEFFICIENT = 1e6


class _TermFactories(type):
    """``Term.<loss>(coefficient, **options)`` for every registered loss, looked up when used."""

    def __getattr__(cls, name: str) -> Callable[..., Term]:
        if name not in LOSSES:
            raise AttributeError(f"type object 'Term' has no attribute {name!r}")

        def term(coefficient: float = 1.0, **options: Any) -> Term:
            return Term(name, coefficient, options)

        term.__name__ = term.__qualname__ = name
        term.__doc__ = f"A {name} term; ``options`` are :func:`distill.{name}`'s keywords (not the student, mask or compute_grad)."
        return term

    def __dir__(cls) -> list[str]:
        return [*super().__dir__(), *LOSSES]


@dataclass(frozen=True)
class Term(metaclass=_TermFactories):
    """One weighted term: which loss, its coefficient, and that loss's keyword arguments.

    Build one as ``Term("kl_div", 0.5, {"teacher_logits": t})`` or ``Term.kl_div(0.5, teacher_logits=t)``.
    The multiplier is called ``coefficient`` because ``weight`` is already PyTorch's name for the
    per-class / per-element weights that a term's options may carry.
    """

    loss: str
    coefficient: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TermResult:
    """One term's contribution: its own (unweighted) result and its coefficient."""

    loss: str
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

    Raises:
        InputError: no terms, an unknown loss, a non-finite coefficient, a per-term student, mask or
            compute_grad, ``reduction="none"``, or any term's own validation (its field is prefixed
            with ``terms.<index>.``; the student's and the mask's are not).
    """
    if not terms:
        raise InputError("terms", "give at least one term")
    results: list[TermResult] = []
    total: Tensor | None = None
    grad: Tensor | None = None
    for index, term in enumerate(terms):
        _check_term(term, index)
        try:
            result = LOSSES[term.loss].compute(student_logits, **term.options, mask=mask, compute_grad=compute_grad)
        except InputError as error:
            if error.argument in ("student_logits", "mask"):
                raise
            raise InputError(f"terms.{index}.{error.argument}", error.reason, error.index) from None
        weighted = result.loss * term.coefficient
        total = weighted if total is None else total + weighted
        if result.grad is not None:
            weighted_grad = result.grad * term.coefficient  # a coefficient beyond the dtype's range gives inf, not an error
            grad = weighted_grad if grad is None else grad.add_(weighted_grad)
        kept = result if term_grads else LossResult(result.loss, None, result.loss_sum, result.normalizer, result.reduction)
        results.append(TermResult(term.loss, term.coefficient, kept))
    assert total is not None
    return DistillResult(total, grad, results)


def _check_term(term: Term, index: int) -> None:
    where = f"terms.{index}"
    if term.loss not in LOSSES:
        raise InputError(f"{where}.loss", f"must be one of {', '.join(LOSSES)}; got {term.loss!r}")
    coefficient = real_number(f"{where}.coefficient", term.coefficient)
    if not abs(coefficient) <= MAX_COEFFICIENT:
        raise InputError(f"{where}.coefficient", f"must be in [-{MAX_COEFFICIENT:g}, {MAX_COEFFICIENT:g}], got {term.coefficient}")
    spec = LOSSES[term.loss]
    for reserved in (*(student.name for student in spec.students), *COMMON):
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
            Term("kl_div", alpha, {"teacher_logits": teacher_logits, "temperature": temperature}),
            Term("cross_entropy", 1.0 - alpha, {"labels": labels}),
        ],
        mask=mask,
        compute_grad=compute_grad,
    )
