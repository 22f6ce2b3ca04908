"""Softmax and log-sum-exp from a single softmax pass.

``q = softmax(z)`` is what every softmax-loss gradient is made of, and the log-sum-exp follows from it
exactly: at the row's arg-max, q = exp(max z − lse) ≥ 1/C never underflows, so

    lse = max z − log(max q)

with an absolute error of a few ulps, like ``torch.logsumexp``. That saves the second transcendental
pass (``log_softmax`` then ``exp``) that dominates these kernels on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor


def softmax_and_lse(z: Tensor, z_max: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Row-wise softmax of a (rows, C) tensor and its log-sum-exp, shape (rows,).

    Args:
        z: the logits.
        z_max: their row maxima (already known from validation, so not recomputed here).
        out: where to write the softmax (the caller's gradient rows), or ``None`` to allocate.
    """
    # torch._softmax is the kernel behind torch.softmax; only it has an out= variant.
    q = torch.softmax(z, dim=-1) if out is None else torch._softmax(z, -1, False, out=out)
    lse = q.amax(dim=-1).log_().neg_().add_(z_max)
    return q, lse
