"""A validated request as engine work: keyword arguments on the device, and the answer's encoding.

The request models are derived from the registry, so a loss request's fields are its engine
function's parameters one for one (:attr:`distill.LossSpec.parameters`), and a term's are the
loss's :attr:`~distill.LossSpec.term_parameters`: the arguments are read by those names, with no
list of fields to skip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from distill import LOSSES, Term, Work, distill, functional, run, wire
from distill.functional import FUNCTIONS
from service.codec.tensors import Encoding, WireTensor
from service.errors import TensorTooLarge
from service.pipeline.schemas import FUNCTIONAL, Strict

#: The route of the combined objective; every other route is a registered loss's name.
OBJECTIVE = "distill"


@dataclass(frozen=True)
class EngineCall:
    """Everything needed to run one request on the engine and encode its answer.

    Attributes:
        route: a registered loss's name, ``distill`` (the combined objective), or ``functional.<name>``.
        kwargs: the engine function's keyword arguments.
        encoding: how the response's tensors are encoded.
        feature_encodings: for the combined objective, how each named student's gradient is encoded
            (as that tensor was sent, unless the request's ``response_encoding`` says otherwise).
    """

    route: str
    kwargs: dict[str, Any]
    encoding: Encoding
    feature_encodings: dict[str, Encoding] = field(default_factory=dict)

    def prepare(self) -> Work:
        """Validate on the engine (blocking): batchable work for a loss that batches, a callable otherwise.

        The combined objective and the functional family are not batched across requests: each
        runs as one unit of work (the family's checks are PyTorch's own, made when it computes).
        """
        if self.route == OBJECTIVE:
            return partial(distill, **self.kwargs)
        if self.route.startswith(FUNCTIONAL):
            return partial(functional.compute, self.route.removeprefix(FUNCTIONAL), **self.kwargs)
        spec = LOSSES[self.route]
        prepared = spec.prepare(**self.kwargs)
        return prepared if spec.batches else partial(run, prepared)


#: Most pair comparisons one multilabel_margin_loss call may make (N·C², each class against each
#: target of its row; about 2 ns each on a CPU core, so this bounds the call near two seconds).
MAX_MARGIN_PAIRS = 1 << 30


def bound_functional_work(name: str, kwargs: dict[str, Any], max_elements: int) -> None:
    """Refuse a functional call whose work outgrows its request: any two of its tensors that broadcast
    to more than ``max_elements`` elements (the functions combine them pairwise, so each pair bounds an
    intermediate), or a multilabel margin loss with more than :data:`MAX_MARGIN_PAIRS` pairs.

    Raises:
        TensorTooLarge: either bound is exceeded (the field named is the first tensor of the pair).
    """
    spec = FUNCTIONS[name]
    shapes = {argument: kwargs[argument].shape for argument in spec.tensors if isinstance(kwargs.get(argument), torch.Tensor)}
    var, given = shapes.get("var"), shapes.get("input")
    if var is not None and given is not None and len(given) and tuple(given[:-1]) == tuple(var):
        shapes["var"] = torch.Size((*var, 1))  # gaussian_nll_loss's own reading of a per-row variance
    names = list(shapes)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            try:
                broadcast = math.prod(torch.broadcast_shapes(shapes[first], shapes[second]))
            except RuntimeError:  # not broadcastable: PyTorch's own shape rules apply, and it refuses them
                continue
            if broadcast > max_elements:
                detail = f"{first} and {second} broadcast to {broadcast} elements, over the limit of {max_elements}"
                raise TensorTooLarge(detail, field=first)
    if name == "multilabel_margin_loss" and "input" in shapes:
        dims = shapes["input"]
        rows, classes = (math.prod(dims[:-1]), dims[-1]) if len(dims) else (1, 1)
        if rows * classes * classes > MAX_MARGIN_PAIRS:
            raise TensorTooLarge(
                f"N·C² = {rows * classes * classes} margin comparisons, over the limit of {MAX_MARGIN_PAIRS}", field="input"
            )


def engine_call(route: str, request: Strict, device: torch.device, max_elements: int) -> EngineCall:
    """Turn a validated request into engine keyword arguments on ``device``.

    Raises:
        TensorTooLarge: a functional call's work would outgrow its request (:func:`bound_functional_work`).
    """
    dtype = wire.DTYPES[request.dtype]  # type: ignore[attr-defined]

    def tensor(value: Any) -> Any:
        if not isinstance(value, WireTensor):
            return value
        converted = value.tensor.to(dtype) if value.untyped and value.tensor.is_floating_point() else value.tensor
        return converted.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else converted

    def arguments(model: Strict, names: Iterable[str]) -> dict[str, Any]:
        return {name: tensor(getattr(model, name)) for name in names}

    if route.startswith(FUNCTIONAL):
        function = FUNCTIONS[route.removeprefix(FUNCTIONAL)]
        kwargs = arguments(request, (*function.signature.parameters, "grad_wrt"))
        bound_functional_work(function.name, kwargs, max_elements)
        if isinstance(kwargs.get("var"), torch.Tensor) and kwargs["var"].dim() == 0:
            kwargs["var"] = float(kwargs["var"])  # gaussian_nll_loss takes a number for a constant variance
        tensors = [getattr(request, name) for name in function.tensors if getattr(request, name) is not None]
        encoding: Encoding = request.response_encoding or (tensors[0].encoding if tensors else "json")  # type: ignore[attr-defined]
        return EngineCall(route, kwargs, encoding)
    if route == OBJECTIVE:
        terms = [
            Term(term.loss, term.coefficient, arguments(term, LOSSES[term.loss].term_parameters), term.student)
            for term in request.terms  # type: ignore[attr-defined]
        ]
        features = request.student_features or {}  # type: ignore[attr-defined]
        kwargs = arguments(request, ("student_logits", "mask", "compute_grad", "term_grads")) | {
            "terms": terms,
            "student_features": {name: tensor(value) for name, value in features.items()} or None,
        }
        chosen = request.response_encoding  # type: ignore[attr-defined]
        encodings = {name: chosen or value.encoding for name, value in features.items()}
        return EngineCall(route, kwargs, chosen or request.student_logits.encoding, encodings)  # type: ignore[attr-defined]
    spec = LOSSES[route]
    kwargs = arguments(request, spec.parameters)
    students = tuple(student.name for student in spec.students)
    given = [getattr(request, name) for name in students if getattr(request, name) is not None]
    encoding = request.response_encoding or (given[0].encoding if given else "json")  # type: ignore[attr-defined]
    return EngineCall(route, kwargs, encoding)
