"""The teacher side of soft-target losses: exactly one of logits, probabilities or log-probabilities.

Teacher *logits* are divided by the temperature T before the softmax (or sigmoid for BCE); teacher
probabilities and log-probabilities are taken as given, whatever T is (Hinton et al. 2015 soften
logits, not distributions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from distill.errors import InputError
from distill.rows.checks import check_log_probs, check_logits, check_probs, check_scaled
from distill.rows.layout import Rows, check_same_shape, on_device

TeacherKind = Literal["logits", "probs", "log_probs"]

_ARGUMENT = {"logits": "teacher_logits", "probs": "teacher_probs", "log_probs": "teacher_log_probs"}


@dataclass(frozen=True)
class Teacher:
    """A validated teacher tensor flattened to (n_rows, C), in its original dtype (and its row maxima, for logits)."""

    kind: TeacherKind
    flat: Tensor
    row_max: Tensor | None = None

    @property
    def argument(self) -> str:
        """The request argument this teacher came from."""
        return _ARGUMENT[self.kind]


def resolve_teacher(
    rows: Rows,
    device: torch.device,
    *,
    logits: Tensor | None,
    probs: Tensor | None,
    log_probs: Tensor | None,
    allowed: tuple[TeacherKind, ...],
) -> Teacher:
    """Pick the single given teacher form, check its shape and values, and flatten it."""
    given: dict[TeacherKind, Tensor | None] = {"logits": logits, "probs": probs, "log_probs": log_probs}
    present = [form for form, value in given.items() if value is not None]
    names = " or ".join(_ARGUMENT[form] for form in allowed)
    for form in present:
        if form not in allowed:
            raise InputError(_ARGUMENT[form], f"is not accepted by this loss; give {names}")
    if len(present) != 1:
        what = "both" if present else "neither"
        raise InputError("teacher", f"give exactly one of {names} ({what} given)")
    kind = present[0]
    tensor = given[kind]
    assert tensor is not None
    name = _ARGUMENT[kind]
    check_same_shape(tensor, name, rows)
    flat = rows.flat(on_device(tensor, device))
    if kind == "logits":
        return Teacher(kind, flat, check_logits(flat, name, rows, allow_neg_inf=True))
    if kind == "probs":
        check_probs(flat, name, rows)
    else:
        check_log_probs(flat, name, rows)
    return Teacher(kind, flat)


def soft_teacher(
    rows: Rows,
    student: Tensor,
    student_max: Tensor | None,
    student_name: str,
    temperature: float,
    *,
    logits: Tensor | None,
    probs: Tensor | None,
    log_probs: Tensor | None,
    allowed: tuple[TeacherKind, ...] = ("logits", "probs", "log_probs"),
) -> Teacher:
    """The teacher of a soft-target loss at temperature T (:func:`resolve_teacher`), with the student's
    (n_rows, C) logits (row maxima ``student_max``; None for probabilities) and the teacher's logits
    checked to stay finite when divided by T."""
    teacher = resolve_teacher(rows, student.device, logits=logits, probs=probs, log_probs=log_probs, allowed=allowed)
    if student_max is not None:
        check_scaled(student_max, student.dtype, student_name, rows, temperature)
    if teacher.row_max is not None:
        check_scaled(teacher.row_max, student.dtype, "teacher_logits", rows, temperature)  # computed in the student's dtype
    return teacher


def distribution(chunk: Tensor, kind: TeacherKind, temperature: float) -> Tensor:
    """Teacher class probabilities of a (rows, C) chunk, already in the compute dtype."""
    if kind == "logits":
        return torch.softmax(chunk if temperature == 1.0 else chunk / temperature, dim=-1)
    if kind == "log_probs":
        return chunk.exp()
    return chunk
