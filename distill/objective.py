"""The combined distillation objective: a weighted sum of loss terms on one student.

    L = Σ_k  a_k · L_k(student),        ∂L/∂s = Σ_k  a_k · ∂L_k/∂s       (a_k: the term's coefficient)

Each term is any registered loss (:data:`distill.registry.LOSSES`: KL divergence, BCE,
cross-entropy, feature matching, …) with its own targets and options (temperature, T², reduction,
weights, smoothing). The student is the logits, or one of several named student tensors (hidden
states, attention maps) given as ``student_features``: each term says which it applies to, and the
gradient is returned for each (``grad`` for the logits, ``grads[name]`` for the others). The row mask
is shared: it must fit the leading shape of every student a term applies to. Hinton et al.'s recipe
α·T²·KL(teacher ‖ student) + (1 − α)·CE(labels) is :func:`hinton`; DistilBERT's (Sanh et al. 2019)
5·T²·KL + 2·CE + 1·(1 − cos) over hidden states is three terms, two of them on the logits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from distill.errors import InputError
from distill.losses.common import STUDENT_LOGITS
from distill.registry import COMMON, LOSSES
from distill.result import LossResult
from distill.rows.layout import check_student, real_number

#: Largest |coefficient| of a term: a weighted float32 loss and gradient stay far from overflow.
MAX_COEFFICIENT = 1e6
#: The objective's main student, as a term's ``student`` names it (the default) and as error fields name it.
LOGITS = STUDENT_LOGITS.name
#: What a name in ``student_features`` looks like: an identifier (errors name the tensor as
#: ``student_features.<name>``, so no dots), at most 64 characters.
FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


class _TermFactories(type):
    """``Term.<loss>(coefficient, **options)`` for every registered loss, looked up when used."""

    def __getattr__(cls, name: str) -> Callable[..., Term]:
        if name not in LOSSES:
            raise AttributeError(f"type object 'Term' has no attribute {name!r}")

        def term(coefficient: float = 1.0, *, student: str = LOGITS, **options: Any) -> Term:
            return Term(name, coefficient, options, student)

        term.__name__ = term.__qualname__ = name
        term.__doc__ = (
            f"A {name} term on ``student`` (the logits, or a name in ``student_features``); ``options`` are "
            f":func:`distill.{name}`'s keywords (not its student, mask or compute_grad)."
        )
        return term

    def __dir__(cls) -> list[str]:
        return [*super().__dir__(), *LOSSES]


@dataclass(frozen=True)
class Term(metaclass=_TermFactories):
    """One weighted term: which loss, its coefficient, that loss's keyword arguments, and its student.

    Build one as ``Term("kl_div", 0.5, {"teacher_logits": t})`` or ``Term.kl_div(0.5, teacher_logits=t)``;
    a feature term as ``Term.cosine_embedding_loss(1.0, student="hidden", teacher=h)``. The multiplier
    is called ``coefficient`` because ``weight`` is already PyTorch's name for the per-class /
    per-element weights that a term's options may carry. ``student`` is :data:`LOGITS` (the default)
    or a name in the objective's ``student_features``.
    """

    loss: str
    coefficient: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)
    student: str = LOGITS


@dataclass(frozen=True)
class TermResult:
    """One term's contribution: its own (unweighted) result, its coefficient, and the student it applies to."""

    loss: str
    coefficient: float
    result: LossResult
    student: str = LOGITS


@dataclass(frozen=True)
class DistillResult:
    """The total loss, its gradients, and every term's result.

    Attributes:
        loss: the 0-d total Σ a_k · L_k.
        grad: ∂loss/∂student_logits (zeros where no term applies to the logits); ``None`` when
            ``compute_grad=False``.
        terms: each term's result; its gradient only when asked for (``term_grads=True``).
        grads: ∂loss/∂student_features[name] for every named student (zeros for one no term applies
            to); empty when ``compute_grad=False`` or without named students.
    """

    loss: Tensor
    grad: Tensor | None
    terms: list[TermResult]
    grads: dict[str, Tensor] = field(default_factory=dict)


def distill(
    student_logits: Tensor,
    terms: Sequence[Term],
    *,
    student_features: Mapping[str, Tensor] | None = None,
    mask: Tensor | None = None,
    compute_grad: bool = True,
    term_grads: bool = False,
) -> DistillResult:
    """Weighted sum of loss terms, each on the logits or on a named student; see the module docstring.

    Args:
        student_logits: the student's logits (..., C), the default student of every term.
        terms: at least one :class:`Term`; each must reduce to a number (not ``reduction="none"``).
        student_features: further student tensors by name (e.g. ``{"hidden": (B, S, H)}``), for terms
            whose ``student`` names them; names match :data:`FEATURE_NAME`.
        mask: boolean over the leading dimensions of every student a term applies to; False rows are
            dropped from every term.
        compute_grad: also return the gradients (``grad`` and ``grads``).
        term_grads: keep each term's own gradient in its result.

    Raises:
        InputError: no terms, an unknown loss or student, a badly named or non-floating student
            feature, a non-finite coefficient, a per-term student, mask or compute_grad,
            ``reduction="none"``, or any term's own validation. Fields are as the request names them:
            ``terms.<index>.<argument>`` for a term's arguments, ``student_logits`` or
            ``student_features.<name>`` for the student a term applies to, ``mask`` for the mask.
    """
    if not terms:
        raise InputError("terms", "give at least one term")
    students = _students(student_logits, student_features)
    results: list[TermResult] = []
    total: Tensor | None = None
    grads: dict[str, Tensor] = {}
    for index, term in enumerate(terms):
        _check_term(term, index, students)
        try:
            result = LOSSES[term.loss].compute(students[term.student], **term.options, mask=mask, compute_grad=compute_grad)
        except InputError as error:
            raise _located(error, index, term) from None
        weighted = result.loss * term.coefficient
        total = weighted if total is None else total + weighted
        if result.grad is not None:
            weighted_grad = result.grad * term.coefficient  # a coefficient beyond the dtype's range gives inf, not an error
            grads[term.student] = grads[term.student].add_(weighted_grad) if term.student in grads else weighted_grad
        kept = result if term_grads else LossResult(result.loss, None, result.loss_sum, result.normalizer, result.reduction)
        results.append(TermResult(term.loss, term.coefficient, kept, term.student))
    assert total is not None
    if not compute_grad:
        return DistillResult(total, None, results)
    filled = {name: grads[name] if name in grads else torch.zeros_like(tensor) for name, tensor in students.items()}
    return DistillResult(total, filled.pop(LOGITS), results, filled)


def _students(student_logits: Tensor, student_features: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """Every student by the name a term gives it: the logits, then each named feature."""
    check_student(student_logits, LOGITS)
    students = {LOGITS: student_logits}
    for name, tensor in (student_features or {}).items():
        field_name = f"student_features.{name}"
        if not isinstance(name, str) or not FEATURE_NAME.fullmatch(name):
            raise InputError("student_features", f"a name must be an identifier of at most 64 characters (no dots), got {name!r}")
        if name == LOGITS:
            raise InputError("student_features", f"{LOGITS} names the logits; give the feature another name")
        check_student(tensor, field_name)
        students[name] = tensor
    return students


def _located(error: InputError, index: int, term: Term) -> InputError:
    """A term's error with its field as the request names it (see :func:`distill`)."""
    student = LOGITS if term.student == LOGITS else f"student_features.{term.student}"
    if error.argument in (tensor.name for tensor in LOSSES[term.loss].students):
        return InputError(student, error.reason, error.index)
    if error.argument == "mask":
        reason = error.reason if term.student == LOGITS else f"{error.reason} (terms.{index} applies to {student})"
        return InputError("mask", reason, error.index)
    reason = error.reason.replace(f"{LOGITS} ", f"{student} ") if term.student != LOGITS else error.reason
    return InputError(f"terms.{index}.{error.argument}", reason, error.index)


def _check_term(term: Term, index: int, students: Mapping[str, Tensor]) -> None:
    where = f"terms.{index}"
    if term.loss not in LOSSES:
        raise InputError(f"{where}.loss", f"must be one of {', '.join(LOSSES)}; got {term.loss!r}")
    if term.student not in students:
        named = ", ".join(name for name in students if name != LOGITS) or "none given"
        raise InputError(f"{where}.student", f"must be {LOGITS} or a name in student_features ({named}); got {term.student!r}")
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
