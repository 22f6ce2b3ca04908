"""distill: knowledge-distillation losses with closed-form gradients, PyTorch-exact.

Every loss returns the loss and d(loss)/d(student input) without autograd. Conventions shared by
all losses: the class dimension is last, leading dimensions are flattened into rows, an optional
boolean ``mask`` over the leading dimensions drops rows, and soft-target terms at temperature T are
scaled by T² (Hinton et al. 2015).
"""

from distill.bce import bce
from distill.cross_entropy import cross_entropy
from distill.device import resolve_device
from distill.errors import InputError
from distill.kl_div import kl_div
from distill.objective import DistillResult, Term, TermResult, distill, hinton
from distill.result import LossResult, Reduction

__version__ = "0.1.0"

__all__ = [
    "DistillResult",
    "InputError",
    "LossResult",
    "Reduction",
    "Term",
    "TermResult",
    "__version__",
    "bce",
    "cross_entropy",
    "distill",
    "hinton",
    "kl_div",
    "resolve_device",
]
