"""Loss modules whose forward calls the service and whose backward uses the service's gradient.

``loss = RemoteKLDiv(client, temperature=4.0)(student_logits, teacher_logits)`` then
``loss.backward()`` propagates d(loss)/d(student_logits), as computed by the service, through the rest
of the student's graph. Student tensors may live on any device and be any float dtype: they are sent
detached, the loss comes back as a tensor on the student's device, and backward returns
``grad_output × gradient`` in the student's dtype and device. Teacher tensors, labels and masks get no
gradient. Under ``torch.no_grad()`` (or for a student that does not require grad) no gradient is asked
for. Only reducing reductions are offered: a per-element loss would need the caller's per-element
upstream gradient, which a single service call does not take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from distill.client.http import DistillClient
from distill.objective import DistillResult, Term
from distill.result import LossResult

Compute = Callable[[Tensor, bool], LossResult | DistillResult]


class _ServiceLoss(torch.autograd.Function):
    """Autograd bridge: forward asks the service, backward scales the gradient it returned."""

    @staticmethod
    def forward(ctx: Any, student: Tensor, compute: Compute) -> Tensor:  # type: ignore[override]
        result = compute(student.detach(), True)
        assert result.grad is not None
        ctx.save_for_backward(result.grad.to(device=student.device, dtype=student.dtype))
        return result.loss.to(student.device)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_output.to(grad.dtype), None


def _apply(student: Tensor, compute: Compute) -> Tensor:
    if torch.is_grad_enabled() and student.requires_grad:
        return _ServiceLoss.apply(student, compute)
    return compute(student.detach(), False).loss.to(student.device)


def _check_reduction(reduction: str) -> str:
    if reduction == "none":
        raise ValueError("remote losses must reduce to a number; use the client directly for reduction='none'")
    return reduction


class RemoteKLDiv(nn.Module):
    """T²·KL(teacher ‖ student) computed by the service (see :func:`distill.kl_div`)."""

    def __init__(self, client: DistillClient, *, temperature: float = 1.0, scale_t2: bool = True, reduction: str = "batchmean") -> None:
        super().__init__()
        self.client, self.temperature, self.scale_t2, self.reduction = client, temperature, scale_t2, _check_reduction(reduction)

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        teacher_probs: Tensor | None = None,
        teacher_log_probs: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        def compute(student: Tensor, grad: bool) -> LossResult:
            return self.client.kl_div(
                student,
                teacher_logits=teacher_logits,
                teacher_probs=teacher_probs,
                teacher_log_probs=teacher_log_probs,
                temperature=self.temperature,
                scale_t2=self.scale_t2,
                reduction=self.reduction,
                mask=mask,
                compute_grad=grad,
            )

        return _apply(student_logits, compute)


class RemoteCrossEntropy(nn.Module):
    """Cross-entropy with hard labels or soft targets, computed by the service (see :func:`distill.cross_entropy`)."""

    def __init__(
        self,
        client: DistillClient,
        *,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        temperature: float | None = None,
        scale_t2: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.client, self.weight, self.ignore_index, self.label_smoothing = client, weight, ignore_index, label_smoothing
        self.temperature, self.scale_t2, self.reduction = temperature, scale_t2, _check_reduction(reduction)

    def forward(
        self,
        student_logits: Tensor,
        labels: Tensor | None = None,
        *,
        teacher_logits: Tensor | None = None,
        teacher_probs: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        def compute(student: Tensor, grad: bool) -> LossResult:
            return self.client.cross_entropy(
                student,
                labels=labels,
                teacher_logits=teacher_logits,
                teacher_probs=teacher_probs,
                temperature=self.temperature,
                scale_t2=self.scale_t2,
                weight=self.weight,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                reduction=self.reduction,
                mask=mask,
                compute_grad=grad,
            )

        return _apply(student_logits, compute)


class RemoteBCE(nn.Module):
    """Soft-label BCE with logits, computed by the service (see :func:`distill.bce`)."""

    def __init__(
        self,
        client: DistillClient,
        *,
        temperature: float | None = None,
        scale_t2: bool = True,
        weight: Tensor | None = None,
        pos_weight: Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.client, self.temperature, self.scale_t2 = client, temperature, scale_t2
        self.weight, self.pos_weight, self.reduction = weight, pos_weight, _check_reduction(reduction)

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        teacher_probs: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        def compute(student: Tensor, grad: bool) -> LossResult:
            return self.client.bce(
                student,
                teacher_logits=teacher_logits,
                teacher_probs=teacher_probs,
                temperature=self.temperature,
                scale_t2=self.scale_t2,
                weight=self.weight,
                pos_weight=self.pos_weight,
                reduction=self.reduction,
                mask=mask,
                compute_grad=grad,
            )

        return _apply(student_logits, compute)


class RemoteDistillLoss(nn.Module):
    """Hinton's objective α·T²·KL(teacher ‖ student) + (1 − α)·CE(labels), computed by the service.

    ``label_smoothing`` applies to the cross-entropy term. For other combinations, pass ``terms``
    builders: a callable ``(teacher_logits, labels) -> list[Term]``.
    """

    def __init__(
        self,
        client: DistillClient,
        *,
        alpha: float = 0.5,
        temperature: float = 4.0,
        label_smoothing: float = 0.0,
        terms: Callable[[Tensor, Tensor | None], list[Term]] | None = None,
    ) -> None:
        super().__init__()
        self.client, self.alpha, self.temperature, self.label_smoothing = client, alpha, temperature, label_smoothing
        self.terms = terms or self._hinton

    def _hinton(self, teacher_logits: Tensor, labels: Tensor | None) -> list[Term]:
        if labels is None:
            raise ValueError("Hinton's objective needs labels")
        return [
            Term.kl_div(self.alpha, teacher_logits=teacher_logits, temperature=self.temperature),
            Term.cross_entropy(1.0 - self.alpha, labels=labels, label_smoothing=self.label_smoothing),
        ]

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None
    ) -> Tensor:
        terms = self.terms(teacher_logits.detach(), labels)

        def compute(student: Tensor, grad: bool) -> DistillResult:
            return self.client.distill(student, terms, mask=mask, compute_grad=grad)

        return _apply(student_logits, compute)
