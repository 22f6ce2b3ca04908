"""An engine result as the JSON response body, in parts (see :mod:`service.codec.parts`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from distill import DistillResult, LossResult
from distill.functional import FunctionalResult
from service.codec.parts import dump_parts
from service.codec.tensors import Encoding, encode, encode_number


def render(
    encoding: Encoding, result: LossResult | DistillResult | FunctionalResult, feature_encodings: Mapping[str, Encoding] | None = None
) -> list[bytes]:
    """The response body for an engine result, its tensors in ``encoding`` (a named student's gradient in
    its ``feature_encodings`` entry, where given).

    Raises:
        NotRepresentable: a value JSON cannot carry (non-finite) in a JSON response.
    """
    body: dict[str, Any]
    feature_encodings = feature_encodings or {}
    if isinstance(result, FunctionalResult):
        body = {
            "loss": _functional_loss(result, encoding),
            "reduction": result.reduction,
            "loss_sum": encode_number(result.loss_sum, "loss_sum"),
            "normalizer": result.normalizer,
            "grads": {name: encode(grad, encoding, f"grads.{name}") for name, grad in result.grads.items()},
        }
    elif isinstance(result, DistillResult):
        body = {
            "loss": encode_number(float(result.loss), "loss"),
            "grad": _grad(result.grad, encoding, "grad"),
            "grads": {name: encode(grad, feature_encodings.get(name, encoding), f"grads.{name}") for name, grad in result.grads.items()},
            "terms": [
                {
                    "name": term.loss,
                    "coefficient": term.coefficient,
                    "student": term.student,
                    **_loss_fields(term.result, feature_encodings.get(term.student, encoding), f"terms.{index}"),
                }
                for index, term in enumerate(result.terms)
            ],
        }
    else:
        body = _loss_fields(result, encoding, "")
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


def _functional_loss(result: FunctionalResult, encoding: Encoding) -> Any:
    """A reduced loss is a number in a ``values`` or nested-list response, written as ``/v1/<loss>``
    writes it (the float32 value in full), a 0-d tensor object in a base64 one (as it always was); an
    unreduced one a tensor (0-d in JSON: a number)."""
    if result.reduction != "none" and encoding != "base64":
        return encode_number(float(result.loss), "loss")
    return encode(result.loss, encoding, "loss")
