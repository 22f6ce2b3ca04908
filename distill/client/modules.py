"""Loss modules whose forward calls the service and whose backward uses the service's gradient.

There is one module class per registered loss, named ``Remote<Title>`` after its registry entry
(``RemoteKLDiv``, ``RemoteBCE``, ``RemoteCrossEntropy``) and made from that entry on first use,
plus :class:`RemoteDistillLoss` for the combined objective.

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

import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distill.client.http import DistillClient
from distill.objective import DistillResult, Term
from distill.registry import LOSSES, LossSpec
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


class RemoteLoss(nn.Module):
    """Base of the ``Remote<Loss>`` modules, one per registered loss (``RemoteKLDiv``, ``RemoteBCE``, …).

    The constructor takes the loss's settings: its scalar options and weight tensors (e.g.
    ``temperature``, ``reduction``, ``weight``), with the engine's defaults, kept as attributes that
    may be changed between calls (temperature annealing). ``forward(student, target, *, other
    targets…, mask=None)`` takes the student, its first target positionally (``teacher_logits``, or
    ``labels`` for cross-entropy) and the others by keyword.
    """

    spec: ClassVar[LossSpec]

    def __init__(self, client: DistillClient, **settings: Any) -> None:
        super().__init__()
        self.client = client
        bound = _settings_signature(self.spec).bind(**settings)
        bound.apply_defaults()
        _check_reduction(bound.arguments["reduction"])
        for name, value in bound.arguments.items():
            setattr(self, name, value)

    def forward(self, student: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        targets = _forward_signature(self.spec).bind(student, *args, **kwargs).arguments
        del targets["student"]
        settings = {name: getattr(self, name) for name in _settings_signature(self.spec).parameters}
        student_name = self.spec.students[0].name

        def compute(detached: Tensor, grad: bool) -> LossResult:
            return self.client.loss(self.spec.name, **{student_name: detached}, **targets, **settings, compute_grad=grad)

        return _apply(student, compute)


@functools.cache
def _settings_signature(spec: LossSpec) -> inspect.Signature:
    """The constructor's keywords: the loss's options and weight tensors, engine defaults."""
    names = {option.name for option in spec.options} | {tensor.name for tensor in spec.inputs if tensor.role == "weight"}
    engine = spec.signature.parameters
    return inspect.Signature([engine[name].replace(kind=inspect.Parameter.KEYWORD_ONLY) for name in engine if name in names])


@functools.cache
def _forward_signature(spec: LossSpec) -> inspect.Signature:
    """``forward(student, first_target=None, *, other_targets=None, mask=None)``."""
    targets = [tensor.name for tensor in spec.inputs if tensor.role == "target"]
    parameters = [inspect.Parameter("student", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Tensor)]
    for position, name in enumerate([*targets, "mask"]):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if position == 0 else inspect.Parameter.KEYWORD_ONLY
        parameters.append(inspect.Parameter(name, kind, default=None, annotation=Tensor | None))
    return inspect.Signature(parameters, return_annotation=Tensor)


@functools.cache
def remote_module(name: str) -> type[RemoteLoss]:
    """The ``Remote<Title>`` module class of the registered loss ``name`` (one class per loss)."""
    spec = LOSSES[name]

    def forward(self: RemoteLoss, student: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return RemoteLoss.forward(self, student, *args, **kwargs)

    signature = _forward_signature(spec)
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = signature.replace(parameters=[self_parameter, *signature.parameters.values()])  # type: ignore[attr-defined]
    targets = ", ".join(tensor.name for tensor in spec.inputs if tensor.role == "target")
    forward.__doc__ = f"The loss of ``student`` against one target ({targets}) in one service call; backward uses the service's gradient."
    namespace = {
        "spec": spec,
        "forward": forward,
        "__module__": __name__,
        "__doc__": f"{spec.summary}, computed by the service (see :func:`distill.{name}`); usage as :class:`RemoteLoss`.",
    }
    module = type(f"Remote{spec.title}", (RemoteLoss,), namespace)
    settings = _settings_signature(spec)
    client = inspect.Parameter("client", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=DistillClient)
    module.__signature__ = settings.replace(parameters=[client, *settings.parameters.values()])  # type: ignore[attr-defined]
    return module


def __getattr__(name: str) -> type[RemoteLoss]:
    """``RemoteKLDiv`` and the other ``Remote<Title>`` classes, made on first use from the registry."""
    for spec in LOSSES.values():
        if name == f"Remote{spec.title}":
            return remote_module(spec.name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            Term("kl_div", self.alpha, {"teacher_logits": teacher_logits, "temperature": self.temperature}),
            Term("cross_entropy", 1.0 - self.alpha, {"labels": labels, "label_smoothing": self.label_smoothing}),
        ]

    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None, *, mask: Tensor | None = None
    ) -> Tensor:
        terms = self.terms(teacher_logits.detach(), labels)

        def compute(student: Tensor, grad: bool) -> DistillResult:
            return self.client.distill(student, terms, mask=mask, compute_grad=grad)

        return _apply(student_logits, compute)
