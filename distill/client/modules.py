"""Loss modules whose forward calls the service and whose backward uses the service's gradient.

There is one module class per registered loss, named ``Remote<Title>`` after its registry entry
(``RemoteKLDiv``, ``RemoteBCE``, ``RemoteCrossEntropy``) and made from that entry on first use,
plus :class:`RemoteObjective` for the combined objective with any terms (feature terms included:
gradients flow back to the logits and to every named student tensor) and :class:`RemoteDistillLoss`
for Hinton's recipe.

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distill.client.http import DistillClient
from distill.objective import DistillResult, Term
from distill.registry import LOSSES, LossSpec
from distill.result import LossResult

#: One service call: the detached students and whether gradients are wanted → the loss and, when
#: wanted, one gradient per student (in the same order).
Compute = Callable[[tuple[Tensor, ...], bool], tuple[Tensor, tuple[Tensor, ...]]]


class _ServiceLoss(torch.autograd.Function):
    """Autograd bridge: forward asks the service, backward scales the gradients it returned."""

    @staticmethod
    def forward(ctx: Any, compute: Compute, *students: Tensor) -> Tensor:  # type: ignore[override]
        loss, grads = compute(tuple(student.detach() for student in students), True)
        ctx.save_for_backward(*(grad.to(device=student.device, dtype=student.dtype) for grad, student in zip(grads, students, strict=True)))
        return loss.to(students[0].device)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        return (None, *(grad * grad_output.to(grad.dtype) for grad in ctx.saved_tensors))


def _apply(compute: Compute, *students: Tensor) -> Tensor:
    if torch.is_grad_enabled() and any(student.requires_grad for student in students):
        return _ServiceLoss.apply(compute, *students)
    return compute(tuple(student.detach() for student in students), False)[0].to(students[0].device)


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

        def compute(detached: tuple[Tensor, ...], grad: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
            result: LossResult = self.client.loss(self.spec.name, **{student_name: detached[0]}, **targets, **settings, compute_grad=grad)
            return result.loss, () if result.grad is None else (result.grad,)

        return _apply(compute, student)


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


class RemoteObjective(nn.Module):
    """The combined objective Σ a_k · L_k with any terms, computed by the service in one call.

    ``RemoteObjective(client)(student_logits, terms, student_features={"hidden": h}, mask=m)`` returns
    the total loss; ``backward`` sends the service's gradients to the logits and to every named
    student tensor (hidden states, attention maps) that requires grad. Terms are built per call (they
    hold the batch's teacher tensors); see :func:`distill.distill` for their semantics.
    """

    def __init__(self, client: DistillClient) -> None:
        super().__init__()
        self.client = client

    def forward(
        self,
        student_logits: Tensor,
        terms: Sequence[Term],
        *,
        student_features: Mapping[str, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        names = list(student_features or {})

        def compute(detached: tuple[Tensor, ...], grad: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
            features = dict(zip(names, detached[1:], strict=True))
            result: DistillResult = self.client.distill(detached[0], terms, student_features=features or None, mask=mask, compute_grad=grad)
            if result.grad is None:
                return result.loss, ()
            return result.loss, (result.grad, *(result.grads[name] for name in names))

        return _apply(compute, student_logits, *(student_features or {}).values())


class RemoteDistillLoss(nn.Module):
    """Hinton's objective α·T²·KL(teacher ‖ student) + (1 − α)·CE(labels), computed by the service.

    ``label_smoothing`` applies to the cross-entropy term. For other combinations on the logits, pass
    ``terms`` builders: a callable ``(teacher_logits, labels) -> list[Term]``; for terms on further
    student tensors, :class:`RemoteObjective`.
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
        self.objective = RemoteObjective(client)
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
        return self.objective(student_logits, self.terms(teacher_logits.detach(), labels), mask=mask)
