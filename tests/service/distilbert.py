"""The DistilBERT-style objective several HTTP tests send: KL on the logits, cross-entropy on labels
with ignored rows, and a cosine term on a named hidden-state student, under a row mask."""

from __future__ import annotations

from typing import Any

import torch

import distill
from distill import Term

GEN = torch.Generator().manual_seed(5)
LOGITS, TEACHER = torch.randn(2, 3, 7, generator=GEN), torch.randn(2, 3, 7, generator=GEN)
HIDDEN, TEACHER_HIDDEN = torch.randn(2, 3, 4, generator=GEN), torch.randn(2, 3, 4, generator=GEN)
LABELS = torch.tensor([[1, -100, 3], [-100, 6, -100]])
MASK = torch.tensor([[True, True, False], [True, True, True]])


def body(logits: Any, hidden: Any, teacher: Any, labels: Any, teacher_hidden: Any, mask: Any) -> dict[str, Any]:
    """The ``/v1/distill`` request, each tensor given in whatever form the test sends it."""
    return {
        "student_logits": logits,
        "student_features": {"hidden": hidden},
        "mask": mask,
        "terms": [
            {"loss": "kl_div", "coefficient": 5.0, "teacher_logits": teacher, "temperature": 2.0},
            {"loss": "cross_entropy", "coefficient": 2.0, "labels": labels},
            {"loss": "cosine_embedding_loss", "coefficient": 1.0, "student": "hidden", "teacher": teacher_hidden},
        ],
    }


def expected(*, term_grads: bool = False) -> distill.DistillResult:
    """What the engine computes for :func:`body`."""
    return distill.distill(
        LOGITS,
        [
            Term.kl_div(5.0, teacher_logits=TEACHER, temperature=2.0),
            Term.cross_entropy(2.0, labels=LABELS),
            Term.cosine_embedding_loss(1.0, student="hidden", teacher=TEACHER_HIDDEN),
        ],
        student_features={"hidden": HIDDEN},
        mask=MASK,
        term_grads=term_grads,
    )
