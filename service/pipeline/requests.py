"""A validated request as engine work: keyword arguments on the device, and the answer's encoding.

The request models are derived from the registry, so a loss request's fields are its engine
function's parameters one for one (:attr:`distill.LossSpec.parameters`), and a term's are the
loss's :attr:`~distill.LossSpec.term_parameters`: the arguments are read by those names, with no
list of fields to skip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from distill import LOSSES, Term, Work, distill, run, wire
from service.codec.tensors import Encoding, WireTensor
from service.pipeline.schemas import Strict

#: The route of the combined objective; every other route is a registered loss's name.
OBJECTIVE = "distill"


@dataclass(frozen=True)
class EngineCall:
    """Everything needed to run one request on the engine and encode its answer.

    Attributes:
        route: a registered loss's name, or ``distill`` (the combined objective).
        kwargs: the engine function's keyword arguments.
        encoding: how the response's tensors are encoded.
    """

    route: str
    kwargs: dict[str, Any]
    encoding: Encoding

    def prepare(self) -> Work:
        """Validate on the engine (blocking): batchable work for a loss that batches, a callable otherwise.

        The combined objective is not batched across requests: it runs as one unit of work.
        """
        if self.route == OBJECTIVE:
            return partial(distill, **self.kwargs)
        spec = LOSSES[self.route]
        prepared = spec.prepare(**self.kwargs)
        return prepared if spec.batches else partial(run, prepared)


def engine_call(route: str, request: Strict, device: torch.device) -> EngineCall:
    """Turn a validated request into engine keyword arguments on ``device``."""
    dtype = wire.DTYPES[request.dtype]  # type: ignore[attr-defined]

    def tensor(value: Any) -> Any:
        if not isinstance(value, WireTensor):
            return value
        converted = value.tensor.to(dtype) if value.encoding == "json" and value.tensor.is_floating_point() else value.tensor
        return converted.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else converted

    def arguments(model: Strict, names: Iterable[str]) -> dict[str, Any]:
        return {name: tensor(getattr(model, name)) for name in names}

    if route == OBJECTIVE:
        terms = [Term(term.loss, term.coefficient, arguments(term, LOSSES[term.loss].term_parameters)) for term in request.terms]  # type: ignore[attr-defined]
        kwargs = arguments(request, ("student_logits", "mask", "compute_grad", "term_grads")) | {"terms": terms}
        students: tuple[str, ...] = ("student_logits",)
    else:
        spec = LOSSES[route]
        kwargs = arguments(request, spec.parameters)
        students = tuple(student.name for student in spec.students)
    given = [getattr(request, name) for name in students if getattr(request, name) is not None]
    encoding: Encoding = request.response_encoding or (given[0].encoding if given else "json")  # type: ignore[attr-defined]
    return EngineCall(route, kwargs, encoding)
