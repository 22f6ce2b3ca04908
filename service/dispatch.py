"""From a validated request to an engine call, and from the engine's result to the response body.

This is the only module that knows both the wire schemas and the engine's signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch

from distill import DistillResult, LossResult, Term, distill
from distill.batcher import Work
from distill.bce import prepare_bce
from distill.cross_entropy import prepare_cross_entropy
from distill.kl_div import prepare_kl_div
from distill.prepared import Prepared
from service.responses import dump_parts
from service.schemas import (
    BCETerm,
    CrossEntropyTerm,
    DistillRequest,
    KLTerm,
    Strict,
)
from service.tensors import FLOAT_DTYPES, Encoding, WireTensor, encode, encode_number

LossName = Literal["kl_div", "bce", "cross_entropy", "distill"]
PREPARE: dict[str, Callable[..., Prepared]] = {"kl_div": prepare_kl_div, "bce": prepare_bce, "cross_entropy": prepare_cross_entropy}
_TERM_LOSS = {KLTerm: "kl_div", BCETerm: "bce", CrossEntropyTerm: "cross_entropy"}
_NOT_OPTIONS = {"mask", "compute_grad", "dtype", "response_encoding", "loss", "coefficient", "terms", "term_grads"}


@dataclass(frozen=True)
class EngineCall:
    """Everything needed to run one request on the engine and encode its answer."""

    loss: LossName
    kwargs: dict[str, Any]
    encoding: Encoding

    def prepare(self) -> Work:
        """Validate on the engine (blocking): batchable work for a single loss, a callable otherwise.

        The combined objective is not batched across requests: it runs as one unit of work.
        """
        if self.loss == "distill":
            return partial(distill, **self.kwargs)
        return PREPARE[self.loss](**self.kwargs)


def build_call(loss: LossName, request: Strict, device: torch.device) -> EngineCall:
    """Turn a validated request into engine keyword arguments on ``device``."""
    dtype = FLOAT_DTYPES[request.dtype]  # type: ignore[attr-defined]

    def tensor(wire: WireTensor) -> torch.Tensor:
        value = wire.tensor.to(dtype) if wire.encoding == "json" and wire.tensor.is_floating_point() else wire.tensor
        if device.type == "cuda":
            return value.pin_memory().to(device, non_blocking=True)
        return value

    def options(model: Strict) -> dict[str, Any]:
        values = {name: getattr(model, name) for name in type(model).model_fields if name not in _NOT_OPTIONS}
        return {name: tensor(value) if isinstance(value, WireTensor) else value for name, value in values.items()}

    student_wire = getattr(request, "student_logits", None) or getattr(request, "student_probs", None)
    assert student_wire is not None
    encoding: Encoding = request.response_encoding or student_wire.encoding  # type: ignore[attr-defined]
    common = {"mask": tensor(request.mask) if request.mask is not None else None, "compute_grad": request.compute_grad}  # type: ignore[attr-defined]
    if isinstance(request, DistillRequest):
        terms = [Term(_TERM_LOSS[type(term)], term.coefficient, options(term)) for term in request.terms]  # type: ignore[arg-type]
        kwargs = {"student_logits": tensor(request.student_logits), "terms": terms, "term_grads": request.term_grads, **common}
        return EngineCall(loss, kwargs, encoding)
    return EngineCall(loss, {**options(request), **common}, encoding)


def render(call: EngineCall, result: LossResult | DistillResult) -> list[bytes]:
    """The JSON response body for an engine result, in parts (see :mod:`service.responses`)."""
    if isinstance(result, DistillResult):
        body: dict[str, Any] = {
            "loss": encode_number(float(result.loss), "loss"),
            "grad": _grad(result.grad, call.encoding, "grad"),
            "terms": [
                {"name": term.loss, "coefficient": term.coefficient, **_loss_fields(term.result, call.encoding, f"terms.{index}")}
                for index, term in enumerate(result.terms)
            ],
        }
    else:
        body = _loss_fields(result, call.encoding, "")
    return dump_parts(body)


def _loss_fields(result: LossResult, encoding: Encoding, prefix: str) -> dict[str, Any]:
    where = f"{prefix}." if prefix else ""
    loss = (
        encode(result.loss, encoding, f"{where}loss") if result.reduction == "none" else encode_number(float(result.loss), f"{where}loss")
    )
    return {
        "loss": loss,
        "grad": _grad(result.grad, encoding, f"{where}grad"),
        "loss_sum": encode_number(result.loss_sum, f"{where}loss_sum"),
        "normalizer": result.normalizer,
        "reduction": result.reduction,
    }


def _grad(grad: torch.Tensor | None, encoding: Encoding, field: str) -> Any:
    return None if grad is None else encode(grad, encoding, field)
