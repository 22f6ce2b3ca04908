"""The losses, one module per loss or loss family, each registered in :data:`distill.registry.LOSSES`.

Importing this package registers them all. Each module's docstring gives its formulas and gradient.
"""

from distill.losses.bce import bce
from distill.losses.cross_entropy import cross_entropy
from distill.losses.kl_div import kl_div

__all__ = ["bce", "cross_entropy", "kl_div"]
