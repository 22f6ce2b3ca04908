"""distill: knowledge-distillation losses with closed-form gradients, PyTorch-exact.

Every loss returns the loss and d(loss)/d(student input) without autograd. Conventions shared by
all losses: the class dimension is last, leading dimensions are flattened into rows, an optional
boolean ``mask`` over the leading dimensions drops rows, and soft-target terms at temperature T are
scaled by T² (Hinton et al. 2015).

This module is the engine's public face, and all the service uses of it: the losses and their
registry (:data:`LOSSES`), the combined objective, the :class:`Batcher`, and what the backend is
(:func:`resolve_device`, :mod:`distill.native`). The tensor wire format is :mod:`distill.wire`.
Every registered loss is ``distill.<name>``; the ones imported by name below are also visible to type
checkers.
"""

from collections.abc import Callable

from distill import functional
from distill.batching import Batcher, BatchObserver, DeviceMemoryError, QueueFull, Work
from distill.device import resolve_device
from distill.errors import InputError
from distill.losses.bce import bce
from distill.losses.common import STUDENT_LOGITS
from distill.losses.cross_entropy import cross_entropy
from distill.losses.kl_div import kl_div
from distill.objective import FEATURE_NAME, LOGITS, MAX_COEFFICIENT, DistillResult, Term, TermResult, distill, hinton
from distill.registry import COMMON, LOSSES, LossSpec, Option, TensorInput, register
from distill.result import LossResult, Reduction
from distill.rows.prepared import Prepared, run

__version__ = "0.1.0"


def __getattr__(name: str) -> Callable[..., LossResult]:
    """``distill.<name>`` for a registered loss that is not imported by name above."""
    if name in LOSSES:
        return LOSSES[name].compute
    raise AttributeError(f"module 'distill' has no attribute {name!r}")


__all__ = [
    "COMMON",
    "FEATURE_NAME",
    "LOGITS",
    "LOSSES",
    "MAX_COEFFICIENT",
    "STUDENT_LOGITS",
    "BatchObserver",
    "Batcher",
    "DeviceMemoryError",
    "DistillResult",
    "InputError",
    "LossResult",
    "LossSpec",
    "Option",
    "Prepared",
    "QueueFull",
    "Reduction",
    "TensorInput",
    "Term",
    "TermResult",
    "Work",
    "__version__",
    "bce",
    "cross_entropy",
    "distill",
    "functional",
    "hinton",
    "kl_div",
    "register",
    "resolve_device",
    "run",
]
