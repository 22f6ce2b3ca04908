"""Result types shared by every loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

Reduction = Literal["none", "mean", "sum", "batchmean"]


@dataclass(frozen=True)
class LossResult:
    """A loss value, its gradient with respect to the student input, and how it was normalised.

    ``loss == loss_sum / normalizer`` for the reducing modes (rounded to the compute dtype: ``loss_sum``
    is a Python float summed in at least float64), so a pipeline splitting a batch into
    micro-batches can recover the exact full-batch loss as ``sum(loss_sum) / sum(normalizer)``
    (and rescale each micro-batch's gradient by ``normalizer / total_normalizer``).

    Attributes:
        loss: 0-d tensor for ``mean``/``sum``/``batchmean``; the per-element (or per-row, for
            cross-entropy) tensor for ``none``.
        grad: d(loss)/d(student input), same shape and dtype as the student input; for
            ``none`` it is the gradient of ``loss.sum()``. ``None`` when not requested.
        loss_sum: the unreduced sum of all loss elements (T² and weights included).
        normalizer: what ``loss_sum`` was divided by: kept rows (``batchmean``, soft ``mean``),
            elements (element-wise ``mean``), summed class weights (hard-label weighted ``mean``),
            or 1 (``sum``/``none``). 0 when no row contributed, in which case ``loss`` is 0.
        reduction: the reduction that produced ``loss``.
    """

    loss: Tensor
    grad: Tensor | None
    loss_sum: float
    normalizer: float
    reduction: Reduction
