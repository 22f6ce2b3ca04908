"""Declarations shared by several losses: the student logits, the teacher forms (dense and top-k), T and T².

Soft-target losses take the same student and teacher arguments with the same meaning (see
:mod:`distill.rows.teacher`); declaring them once keeps their documentation identical everywhere.
"""

from __future__ import annotations

from distill.registry import Option, TensorInput
from distill.rows.layout import MAX_TEMPERATURE, MIN_TEMPERATURE
from distill.rows.topk import POLICIES
from distill.wire import Kind

STUDENT_LOGITS = TensorInput("student_logits", Kind.FLOAT, "student", "Student logits (..., C); -inf marks a masked class.")

TEACHER_FORMS = (
    TensorInput("teacher_logits", Kind.FLOAT, "target", "Teacher logits; softmax(t / T)."),
    TensorInput("teacher_probs", Kind.FLOAT, "target", "Teacher probabilities in [0, 1], taken as given."),
    TensorInput("teacher_log_probs", Kind.FLOAT, "target", "Teacher log-probabilities (≤ 0), taken as given."),
)

#: A top-k teacher (:mod:`distill.rows.topk`), accepted by every soft-target loss instead of a dense one.
TEACHER_TOPK = (
    TensorInput(
        "teacher_topk_indices", Kind.INDEX, "target", "Top-k teacher: class ids (..., k), no repeats in a row; with one of the two below."
    ),
    TensorInput(
        "teacher_topk_logits", Kind.FLOAT, "target", "Top-k teacher logits at those classes (..., k); softmax over the k after / T."
    ),
    TensorInput(
        "teacher_topk_log_probs", Kind.FLOAT, "target", "Top-k teacher log-probabilities (≤ 0) at those classes, normalised over all C."
    ),
)
MISSING_MASS = Option(
    "missing_mass",
    "Required with a top-k teacher: renormalize (the teacher over its k classes, 0 elsewhere) or tail (k + 1 bins; log-probs only).",
    choices=POLICIES,
)


TEMPERATURE = Option("temperature", "T in [1e-6, 1e6]; divides student and teacher logits.", ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE)
OPTIONAL_TEMPERATURE = Option(
    "temperature",
    "T in [1e-6, 1e6] (default 1) for soft targets; an error with hard labels or student_probs.",
    ge=MIN_TEMPERATURE,
    le=MAX_TEMPERATURE,
)
SCALE_T2 = Option("scale_t2", "Multiply soft-target terms by T² (Hinton et al. 2015).")
