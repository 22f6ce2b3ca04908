"""torch.nn.functional's loss family, each returning its value and its gradients.

``distill.functional.<name>(...)`` takes exactly the arguments of ``torch.nn.functional.<name>``
(names, defaults, the legacy ``size_average`` / ``reduce`` flags) plus ``grad_wrt``, and returns a
:class:`FunctionalResult`: the loss as PyTorch computes it, the reduction applied (legacy flags mapped
as PyTorch maps them), ``loss_sum`` and ``normalizer`` (``loss = loss_sum / normalizer`` for the
reducing reductions, as on every ``/v1`` answer), and the gradient of the loss (of its sum for
``none``) with respect to each float tensor argument other than ``target``/``targets``, ``weight`` and
``pos_weight`` (``grad_wrt`` narrows that set).

Shapes, dtypes and values follow each function's own rules (classes in dim 1 for ``cross_entropy``,
``nll_loss`` and ``multi_margin_loss``; no ``/v1`` row convention, mask or temperature): what PyTorch
accepts is accepted, and what it rejects is an :class:`~distill.errors.InputError` naming the argument
its message points at. The gradients are PyTorch's autograd on the function itself, for every function
(no closed form is used; benchmarks/functional.py puts the engine at autograd's time for the MSE,
cosine-embedding and triplet-margin losses).

``sigmoid_focal_loss`` is torchvision's (``torchvision.ops.sigmoid_focal_loss``, Lin et al. 2017):
p = σ(x), CE = BCE-with-logits(x, t), p_t = p·t + (1 − p)(1 − t), loss = CE·(1 − p_t)^γ, times
α·t + (1 − α)(1 − t) when α ≥ 0; reductions ``none`` (default), ``mean``, ``sum``.

Normalisers: ``mean`` divides by the number of elements of the unreduced loss, except for class-index
targets of ``cross_entropy`` and ``nll_loss``, where PyTorch divides by Σ weight[target] over the
targets that are not ``ignore_index`` (their count without weights), and for ``l1_loss`` and
``mse_loss`` with an element-wise ``weight``, Σ weight (``huber_loss`` divides its weighted elements by
their count); ``kl_div``'s ``batchmean``
divides by ``input.size(0)``. Where nothing contributes (an empty input, every target ignored)
PyTorch answers NaN; here the loss is 0 with normaliser 0 and zero gradients, as on ``/v1``. Weights
that sum to 0 over contributing elements are an InputError naming ``weight`` (PyTorch: ±inf or
NaN); a negative sum divides as PyTorch divides. Half-precision losses are summed in float32.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import InputError
from distill.wire import Kind

#: Tensor arguments that never get a gradient: targets and weights are data, not parameters.
NOT_DIFFERENTIATED = frozenset({"target", "targets", "weight", "pos_weight"})
LEGACY_FLAGS = ("size_average", "reduce")


def _sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2, reduction: str = "none") -> Tensor:
    """torchvision's sigmoid focal loss, written out (torchvision's own does not import beside this torch)."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"Invalid Value for arg 'reduction': '{reduction} \n Supported reduction modes: 'none', 'mean', 'sum'")


@dataclass(frozen=True)
class FunctionalSpec:
    """One function of the family.

    Attributes:
        name: its name in ``torch.nn.functional`` (or torchvision, for ``sigmoid_focal_loss``).
        function: the function itself.
        signature: its signature (argument names and defaults, as the service's request models use them).
        tensors: its tensor arguments, in signature order.
        reductions: the reductions it accepts, its default first.
        target_kind: what its ``target`` holds: floats, class indices, or either (``cross_entropy``:
            class indices or probabilities, told apart by dtype).
    """

    name: str
    function: Callable[..., Tensor]
    signature: inspect.Signature
    tensors: tuple[str, ...]
    reductions: tuple[str, ...]
    target_kind: Kind = Kind.FLOAT

    def kind(self, argument: str) -> Kind:
        """What the tensor argument ``argument`` holds."""
        return self.target_kind if argument == "target" else Kind.FLOAT

    @property
    def differentiable(self) -> tuple[str, ...]:
        """The tensor arguments a gradient is returned for (when they are float tensors)."""
        return tuple(name for name in self.tensors if name not in NOT_DIFFERENTIATED)

    @property
    def legacy(self) -> bool:
        """Whether it takes the legacy ``size_average`` / ``reduce`` flags."""
        return "size_average" in self.signature.parameters


def _spec(
    function: Callable[..., Tensor],
    tensors: tuple[str, ...],
    reductions: tuple[str, ...] = ("mean", "sum", "none"),
    name: str = "",
    target: Kind = Kind.FLOAT,
) -> FunctionalSpec:
    return FunctionalSpec(name or function.__name__, function, inspect.signature(function), tensors, reductions, target)


#: Every function of the family by name.
FUNCTIONS: dict[str, FunctionalSpec] = {
    spec.name: spec
    for spec in (
        _spec(F.l1_loss, ("input", "target", "weight")),
        _spec(F.mse_loss, ("input", "target", "weight")),
        _spec(F.smooth_l1_loss, ("input", "target")),
        _spec(F.huber_loss, ("input", "target", "weight")),
        _spec(F.nll_loss, ("input", "target", "weight"), target=Kind.INDEX),
        _spec(F.margin_ranking_loss, ("input1", "input2", "target")),
        _spec(F.hinge_embedding_loss, ("input", "target")),
        _spec(F.soft_margin_loss, ("input", "target")),
        _spec(F.multilabel_soft_margin_loss, ("input", "target", "weight")),
        _spec(F.multilabel_margin_loss, ("input", "target"), target=Kind.INDEX),
        _spec(F.cosine_embedding_loss, ("input1", "input2", "target")),
        _spec(F.multi_margin_loss, ("input", "target", "weight"), target=Kind.INDEX),
        _spec(F.triplet_margin_loss, ("anchor", "positive", "negative")),
        _spec(F.binary_cross_entropy, ("input", "target", "weight")),
        _spec(F.binary_cross_entropy_with_logits, ("input", "target", "weight", "pos_weight")),
        _spec(F.cross_entropy, ("input", "target", "weight"), target=Kind.NUMBER),
        _spec(F.kl_div, ("input", "target"), ("mean", "batchmean", "sum", "none")),
        _spec(F.poisson_nll_loss, ("input", "target")),
        _spec(F.gaussian_nll_loss, ("input", "target", "var")),
        _spec(_sigmoid_focal_loss, ("inputs", "targets"), ("none", "mean", "sum"), name="sigmoid_focal_loss"),
    )
}


@dataclass(frozen=True)
class FunctionalResult:
    """A loss of the family and its gradients.

    Attributes:
        loss: the 0-d loss (the compute dtype of its inputs), or the unreduced tensor for ``none``.
        reduction: the reduction applied (after mapping legacy flags).
        loss_sum: the sum of the unreduced loss elements (weighted as the function weights them).
        normalizer: what ``loss_sum`` is divided by for ``mean``/``batchmean`` (1 for ``sum``/``none``).
        grads: argument name → d(loss)/d(argument) (of the sum for ``none``), shaped like the argument.
    """

    loss: Tensor
    reduction: str
    loss_sum: float
    normalizer: float
    grads: dict[str, Tensor]


def reduction_of(spec: FunctionalSpec, arguments: dict[str, Any]) -> str:
    """The reduction a call applies: ``reduction``, or the legacy flags mapped as PyTorch maps them
    (``size_average`` and ``reduce`` both default to True; ``reduce=False`` → ``none``, else
    ``size_average=False`` → ``sum``, else ``mean``), which then override ``reduction``."""
    if spec.legacy and (arguments.get("size_average") is not None or arguments.get("reduce") is not None):
        size_average = True if arguments.get("size_average") is None else arguments["size_average"]
        reduce = True if arguments.get("reduce") is None else arguments["reduce"]
        return "none" if not reduce else ("mean" if size_average else "sum")
    reduction = arguments.get("reduction", spec.signature.parameters["reduction"].default)
    if reduction not in spec.reductions:
        raise InputError("reduction", f"must be one of {', '.join(spec.reductions)}, got {str(reduction)[:64]!r}")
    return reduction


def _normalizer(spec: FunctionalSpec, arguments: dict[str, Any], elements: Tensor, reduction: str) -> tuple[float, int]:
    """What ``mean``/``batchmean`` divide by, and how many loss elements (or targets) contribute."""
    if reduction == "batchmean":
        return (float(arguments["input"].size(0)) if arguments["input"].dim() else 1.0), elements.numel()
    if spec.name in ("l1_loss", "mse_loss") and arguments.get("weight") is not None:
        return float(arguments["weight"].detach().to(torch.float64).sum()), elements.numel()
    target = arguments.get("target")
    if spec.name in ("cross_entropy", "nll_loss") and isinstance(target, Tensor) and not target.is_floating_point():
        kept = target != arguments.get("ignore_index", -100)
        weight = arguments.get("weight")
        if weight is None:
            return float(kept.sum()), int(kept.sum())
        chosen = weight.detach().to(torch.float64)[target.masked_fill(~kept, 0)].masked_fill(~kept, 0)
        return float(chosen.sum()), int(kept.sum())
    return float(elements.numel()), elements.numel()


_MENTIONS = re.compile(
    r"\b(input1|input2|input|inputs|targets|target|weight|pos_weight|anchor|positive|negative|var|margin|p|eps|delta|beta"
    r"|label_smoothing|alpha|gamma)\b",
    re.IGNORECASE,
)


def _argument_in(message: str, spec: FunctionalSpec) -> str:
    """The argument a PyTorch error message points at: the first one it names, else the first tensor."""
    names = set(spec.signature.parameters)
    for match in _MENTIONS.finditer(message):
        if match.group(1).lower() in names:
            return match.group(1).lower()
    return spec.tensors[0]


def compute(name: str, /, *args: Any, grad_wrt: Sequence[str] | None = None, **kwargs: Any) -> FunctionalResult:
    """Call ``torch.nn.functional.<name>`` with these arguments; return the loss and its gradients.

    Raises:
        InputError: an unknown function or argument, a non-tensor where a tensor belongs, a
            ``grad_wrt`` name that is not a differentiable argument, or anything PyTorch rejects
            (shape, dtype, value or class-index rules), named after the argument at fault.
    """
    spec = FUNCTIONS.get(name)
    if spec is None:
        raise InputError("name", f"no function {name[:64]!r}; the family is {', '.join(FUNCTIONS)}")
    try:
        bound = spec.signature.bind(*args, **kwargs)
    except TypeError as error:
        raise InputError(name, str(error)) from None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    reduction = reduction_of(spec, arguments)
    for argument in LEGACY_FLAGS:
        if argument in arguments:
            arguments[argument] = None
    arguments["reduction"] = "none"
    wanted = spec.differentiable if grad_wrt is None else tuple(grad_wrt)
    unknown = [argument for argument in wanted if argument not in spec.differentiable]
    if unknown:
        raise InputError("grad_wrt", f"{unknown[0]!r} is not a differentiable argument of {name}: {', '.join(spec.differentiable)}")
    if "var" in wanted and grad_wrt is not None and isinstance(arguments.get("var"), float | int):
        raise InputError("grad_wrt", "var is a number (a constant variance) and has no gradient: send it as a tensor for one")
    leaves: dict[str, Tensor] = {}
    for argument in spec.tensors:
        value = arguments[argument]
        if value is None or (argument == "var" and isinstance(value, float | int) and not isinstance(value, bool)):
            continue
        if not isinstance(value, Tensor):
            raise InputError(argument, f"must be a tensor, got {type(value).__name__}")
        if argument in wanted and value.is_floating_point():
            leaves[argument] = arguments[argument] = value.detach().requires_grad_(True)
        else:
            arguments[argument] = value.detach()
    with torch.enable_grad():
        try:
            elements = spec.function(**arguments)
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise InputError(_argument_in(message, spec), message) from None
        normalizer, contributing = _normalizer(spec, arguments, elements, reduction) if reduction in ("mean", "batchmean") else (1.0, 1)
        if contributing and not normalizer:
            raise InputError(
                "weight", "the weights of the contributing elements sum to 0: their weighted mean is undefined (use reduction 'sum')"
            )
        # Half-precision losses are summed in float32, as PyTorch's own reductions accumulate them.
        total = elements.sum(dtype=torch.float32 if elements.dtype in (torch.float16, torch.bfloat16) else None)
        if reduction == "none":
            loss = elements
        elif reduction == "sum":
            loss = total.to(elements.dtype)
        elif contributing == 0:  # an empty input, or every target ignored: 0 over 0, where PyTorch answers NaN
            loss, normalizer = (total * 0.0).to(elements.dtype), 0.0
        else:
            loss = (total / normalizer).to(elements.dtype)
        differentiable = list(leaves.values())
        gradients = torch.autograd.grad(total if reduction == "none" else loss, differentiable, allow_unused=True) if differentiable else ()
    grads = {
        argument: (gradient if gradient is not None else torch.zeros_like(leaf)).detach()
        for (argument, leaf), gradient in zip(leaves.items(), gradients, strict=True)
    }
    return FunctionalResult(loss.detach(), reduction, float(total.detach().double()), normalizer, grads)


def _public(spec: FunctionalSpec) -> Callable[..., FunctionalResult]:
    def function(*args: Any, grad_wrt: Sequence[str] | None = None, **kwargs: Any) -> FunctionalResult:
        return compute(spec.name, *args, grad_wrt=grad_wrt, **kwargs)

    grad_wrt = inspect.Parameter("grad_wrt", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="Sequence[str] | None")
    function.__name__ = function.__qualname__ = spec.name
    function.__doc__ = f"``torch.nn.functional.{spec.name}``'s value and gradients (see :mod:`distill.functional`)."
    function.__signature__ = spec.signature.replace(  # type: ignore[attr-defined]
        parameters=[*spec.signature.parameters.values(), grad_wrt], return_annotation="FunctionalResult"
    )
    return function


_PUBLIC = {name: _public(spec) for name, spec in FUNCTIONS.items()}


def __getattr__(name: str) -> Callable[..., FunctionalResult]:
    """``distill.functional.<name>``: each function of the family, with its PyTorch signature plus ``grad_wrt``."""
    try:
        return _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
