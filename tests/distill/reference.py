"""PyTorch references: F.* on the flattened, masked (rows, C) tensor, gradients by autograd.

This is the parity definition the engine is held to (class dim last, leading dims flattened into
rows, masked rows dropped, soft-target terms at temperature T times T²).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Reference:
    loss: Tensor
    grad: Tensor


def _rows(x: Tensor, mask: Tensor | None) -> Tensor:
    flat = x.reshape(-1, x.shape[-1])
    return flat if mask is None else flat[mask.reshape(-1)]


def run(student: Tensor, mask: Tensor | None, loss_of_rows: Callable[[Tensor], Tensor]) -> Reference:
    """Evaluate ``loss_of_rows`` on the kept rows in float64/float32 and scatter the gradient back."""
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    leaf = student.detach().to(compute).requires_grad_(True)
    loss = loss_of_rows(_rows(leaf, mask))
    (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return Reference(loss.detach(), grad)


def teacher_rows(teacher: Tensor, mask: Tensor | None, compute: torch.dtype) -> Tensor:
    return _rows(teacher.to(compute), mask)


def kl(student: Tensor, teacher: Tensor, kind: str, *, T: float, scale_t2: bool, reduction: str, mask: Tensor | None) -> Reference:
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    t = teacher_rows(teacher, mask, compute)
    factor = T * T if scale_t2 else 1.0

    def loss(s: Tensor) -> Tensor:
        log_q = F.log_softmax(s / T, dim=-1)
        if kind == "logits":
            return factor * F.kl_div(log_q, F.softmax(t / T, dim=-1), reduction=reduction)
        return factor * F.kl_div(log_q, t, reduction=reduction, log_target=kind == "log_probs")

    return run(student, mask, loss)


def bce_logits(
    student: Tensor,
    teacher: Tensor,
    kind: str,
    *,
    T: float,
    scale_t2: bool,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
    mask: Tensor | None,
) -> Reference:
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    t = teacher_rows(teacher, mask, compute)
    y = torch.sigmoid(t / T) if kind == "logits" else t
    w = None if weight is None else _rows(weight.to(compute).expand(student.shape), mask)
    pw = None if pos_weight is None else _rows(pos_weight.to(compute).expand(student.shape), mask)
    factor = T * T if scale_t2 else 1.0
    return run(student, mask, lambda s: factor * F.binary_cross_entropy_with_logits(s / T, y, w, reduction=reduction, pos_weight=pw))


def bce_probs(student: Tensor, teacher: Tensor, kind: str, *, weight: Tensor | None, reduction: str, mask: Tensor | None) -> Reference:
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    t = teacher_rows(teacher, mask, compute)
    y = torch.sigmoid(t) if kind == "logits" else t
    w = None if weight is None else _rows(weight.to(compute).expand(student.shape), mask)
    return run(student, mask, lambda q: F.binary_cross_entropy(q, y, w, reduction=reduction))


def ce_hard(
    student: Tensor,
    labels: Tensor,
    *,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    reduction: str,
    mask: Tensor | None,
) -> Reference:
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    y = labels.reshape(-1) if mask is None else labels.reshape(-1)[mask.reshape(-1)]
    w = None if weight is None else weight.to(compute)
    return run(
        student, mask, lambda s: F.cross_entropy(s, y, w, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    )


def ce_soft(
    student: Tensor,
    teacher: Tensor,
    kind: str,
    *,
    T: float,
    scale_t2: bool,
    weight: Tensor | None,
    label_smoothing: float,
    reduction: str,
    mask: Tensor | None,
) -> Reference:
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    t = teacher_rows(teacher, mask, compute)
    p = {"logits": lambda: F.softmax(t / T, dim=-1), "probs": lambda: t, "log_probs": lambda: t.exp()}[kind]()
    w = None if weight is None else weight.to(compute)
    factor = T * T if scale_t2 else 1.0
    return run(student, mask, lambda s: factor * F.cross_entropy(s / T, p, w, reduction=reduction, label_smoothing=label_smoothing))


def divergence(
    name: str,
    parameter: float,
    student: Tensor,
    teacher: Tensor,
    kind: str,
    *,
    T: float,
    scale_t2: bool,
    reduction: str,
    mask: Tensor | None,
) -> Reference:
    """The LLM divergences written from their formulas (distill.losses.divergences), autograd gradients.

    Computed in float64 for float64 students and in float32 otherwise: the float32 result is PyTorch's
    own float32 error on the same numbers, which the engine's float32 error is measured against.
    """
    compute = torch.float64 if student.dtype == torch.float64 else torch.float32
    t = teacher_rows(teacher, mask, compute)
    factor = T * T if scale_t2 else 1.0
    if kind == "logits":
        log_p = F.log_softmax(t / T, dim=-1)
    elif kind == "probs":
        log_p = t.log()
    else:
        log_p = t
    p = log_p.exp()

    def mixture(a: float, b: float, log_q: Tensor) -> Tensor:
        return torch.logsumexp(torch.stack([log_p + math.log(a), log_q + math.log(b)]), dim=0)

    def times(x: Tensor, log_x: Tensor, log_y: Tensor) -> Tensor:
        """x·(log x − log y) with 0·log 0 = 0 (the difference is replaced before multiplying: no NaN gradient)."""
        return x * torch.where(x > 0, log_x - log_y, torch.zeros_like(x))

    def elements(s: Tensor) -> Tensor:
        log_q = F.log_softmax(s / T, dim=-1)
        q = log_q.exp()
        forward, reverse = times(p, log_p, log_q), times(q, log_q, log_p)
        if name == "reverse_kl" or (name == "jsd" and parameter == 1.0) or (name == "skew_reverse_kl" and parameter == 0.0):
            return reverse
        if (name == "jsd" and parameter == 0.0) or (name == "skew_kl" and parameter == 0.0):
            return forward
        if name == "jsd":
            log_m = mixture(parameter, 1.0 - parameter, log_q)
            return parameter * times(p, log_p, log_m) + (1.0 - parameter) * times(q, log_q, log_m)
        if name == "skew_kl" and parameter == 1.0:
            return 0.0 * q  # KL(p‖p): no dependence on the student
        if name == "skew_kl":
            return times(p, log_p, mixture(parameter, 1.0 - parameter, log_q))
        if name == "skew_reverse_kl":
            return times(q, log_q, log_q if parameter == 1.0 else mixture(1.0 - parameter, parameter, log_q))
        assert name == "tvd"
        return 0.5 * (p - q).abs()

    def loss(s: Tensor) -> Tensor:
        values = elements(s) * factor
        if reduction == "none":
            return values
        if reduction == "sum":
            return values.sum()
        if reduction == "mean":
            return values.sum() / values.numel()
        return values.sum() / s.shape[0]

    return run(student, mask, loss)
