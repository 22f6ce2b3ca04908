"""The per-class terms of each soft-target divergence, shared by the dense losses and the top-k teachers.

Each divergence D is given by its element-wise terms on (rows, bins) tensors q, log q, p, log p: the
elements summing to D, and w = q · ∂D/∂q, from which the gradient through a softmax follows
(∂D/∂z = w − q · Σw; :mod:`distill.losses.divergences` gives the formulas, :mod:`distill.losses.topk`
the top-k collapse). Registering nothing, this module is what both import.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from distill.native import kernels as native

#: (elements, w) of a divergence from (q, log q, p, log p), all (rows, C), and whether to guard its
#: products (see :func:`_product`); see the module docstring for w. w may be the elements tensor
#: itself: the kernel reads w only before it scales the elements.
Terms = Callable[[Tensor, Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor]]
#: Where the value can be infinite: KL(p‖q)-type, KL(q‖p)-type, or nowhere.
Infinite = Literal["forward", "reverse"] | None


@dataclass(frozen=True)
class Divergence:
    """One divergence at its parameter: its torch terms, where it can be infinite, its compiled kernel's code."""

    terms: Terms
    infinite: Infinite
    code: int


def _log(value: float) -> float:
    return -math.inf if value == 0.0 else math.log(value)


def guarded_product(x: Tensor, y: Tensor, guarded: bool) -> Tensor:
    """x·y; guarded, 0 wherever x is 0 whatever y is (0·log 0 = 0, and a vanishing term times ±∞).

    The fast path multiplies plainly; a non-finite row sends the chunk through the guarded path.
    """
    product = x * y
    return product.masked_fill_(x == 0, 0.0) if guarded else product


def _mixture(log_a: float, log_p: Tensor, log_b: float, log_q: Tensor) -> Tensor:
    """log(a·p + b·q) from log p and log q (a or b may be 0: their log is −inf)."""
    if log_a == -math.inf:
        return log_q + log_b
    if log_b == -math.inf:
        return log_p + log_a
    return torch.logaddexp(log_p + log_a, log_q + log_b)


def forward_kl_terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
    """KL(p‖q): elements p·(log p − log q), w = −p."""
    return guarded_product(p, log_p - log_q, guarded), -p


def reverse_kl_terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
    """KL(q‖p): elements q·(log q − log p), and w is the same tensor (the kernel only reads w)."""
    elements = guarded_product(q, log_q - log_p, guarded)
    return elements, elements


FORWARD_KL = Divergence(forward_kl_terms, "forward", native.DIV_FORWARD_KL)
REVERSE_KL = Divergence(reverse_kl_terms, "reverse", native.DIV_REVERSE_KL)


def jsd_divergence(beta: float) -> Divergence:
    """Generalized JSD(β): the end points are the KL divergences (TRL's convention)."""
    if beta == 0.0:
        return FORWARD_KL
    if beta == 1.0:
        return REVERSE_KL
    log_beta, log_rest = math.log(beta), math.log1p(-beta)

    def terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
        log_m = _mixture(log_beta, log_p, log_rest, log_q)
        student = guarded_product(q, log_q - log_m, guarded)
        elements = guarded_product(p, log_p - log_m, guarded).mul_(beta).add_(student, alpha=1.0 - beta)
        return elements, student.mul_(1.0 - beta)

    return Divergence(terms, None, native.DIV_JSD)


def skew_kl_divergence(alpha: float) -> Divergence:
    """KL(p ‖ α·p + (1−α)·q)."""
    if alpha == 0.0:
        return FORWARD_KL
    log_alpha, log_rest = math.log(alpha), _log(1.0 - alpha)

    def terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
        log_m = _mixture(log_alpha, log_p, log_rest, log_q)
        elements = guarded_product(p, log_p - log_m, guarded)
        # (1−α)·q·p/m = p·e^(log(1−α) + log q − log m), whose exponent is ≤ 0 since m ≥ (1−α)·q.
        w = guarded_product(p, torch.exp(log_q + log_rest - log_m), guarded).neg_()
        return elements, w

    return Divergence(terms, None, native.DIV_SKEW_KL)


def skew_reverse_kl_divergence(alpha: float) -> Divergence:
    """KL(q ‖ (1−α)·p + α·q)."""
    if alpha == 0.0:
        return REVERSE_KL
    log_alpha, log_rest = math.log(alpha), _log(1.0 - alpha)

    def terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
        log_ratio = log_q - _mixture(log_rest, log_p, log_alpha, log_q)
        elements = guarded_product(q, log_ratio, guarded)
        # α·q/m = e^(log α + log q − log m) ≤ 1 since m ≥ α·q.
        return elements, elements - guarded_product(q, torch.exp(log_ratio + log_alpha), guarded)

    return Divergence(terms, None, native.DIV_SKEW_REVERSE_KL)


def tvd_terms(q: Tensor, log_q: Tensor, p: Tensor, log_p: Tensor, guarded: bool) -> tuple[Tensor, Tensor]:
    """½ Σ |p − q|: elements ½|q − p|, w = ½·q·sign(q − p)."""
    difference = q - p
    return difference.abs().mul_(0.5), torch.sign(difference).mul_(q).mul_(0.5)


TVD = Divergence(tvd_terms, None, native.DIV_TVD)
