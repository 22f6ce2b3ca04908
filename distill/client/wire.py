"""The service's request bodies and typed results on the client side.

Pure functions shared by the sync and async clients: tensors go out as base64 binary objects (or
nested lists on request) in the format of :mod:`distill.wire`, and results come back as the
engine's own result types.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from distill import wire
from distill.objective import LOGITS, DistillResult, Term, TermResult
from distill.result import LossResult

Encoding = Literal["base64", "json"]


def encode_tensor(tensor: Tensor, encoding: Encoding) -> Any:
    """A tensor as the service reads it (any device and dtype; detached, copied to the CPU)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype not in wire.NAMES:
        tensor = tensor.long() if not tensor.is_floating_point() else tensor.float()
    if encoding == "json":
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).tolist()
    raw = wire.to_bytes(tensor)
    return {"dtype": wire.NAMES[tensor.dtype], "shape": list(tensor.shape), "data": base64.b64encode(raw.data).decode("ascii")}


def decode_tensor(value: Any, dtype: torch.dtype | None = None) -> Tensor:
    """A tensor from the service's answer (nested lists, read as ``dtype``, default float32; or a binary object, in its own dtype)."""
    if isinstance(value, dict):
        return wire.from_bytes(bytearray(base64.b64decode(value["data"])), value["dtype"], value["shape"])
    return torch.from_numpy(np.asarray(value, dtype=np.float64)).to(dtype or torch.float32)


def request_body(tensors: Mapping[str, Tensor | None], options: Mapping[str, Any], encoding: Encoding) -> dict[str, Any]:
    """A request (or a term): every non-None tensor encoded, options as given (None values dropped).

    JSON lists are read as the request's ``dtype`` (float32 unless said): a float64 student in a
    JSON request says so, so that float64 stays float64. Terms carry no student and no ``dtype``.
    """
    body = {name: encode_tensor(value, encoding) for name, value in tensors.items() if value is not None}
    body.update({name: value for name, value in options.items() if value is not None})
    if encoding == "json":
        student = next((value for name, value in tensors.items() if name.startswith("student") and value is not None), None)
        if student is not None and student.dtype == torch.float64:
            body.setdefault("dtype", "float64")
    return body


def term_body(term: Term, encoding: Encoding) -> dict[str, Any]:
    """One term of the combined objective as the service reads it."""
    tensors = {name: value for name, value in term.options.items() if isinstance(value, Tensor)}
    options = {name: value for name, value in term.options.items() if not isinstance(value, Tensor)}
    student = {} if term.student == LOGITS else {"student": term.student}
    return {"loss": term.loss, "coefficient": term.coefficient, **student, **request_body(tensors, options, encoding)}


def loss_result(body: dict[str, Any], student: Tensor) -> LossResult:
    """A :class:`LossResult` from a loss response; tensors are on the CPU."""
    loss = body["loss"]
    loss_dtype = _loss_dtype(student)  # losses are float32 for half-precision students, as the engine answers them
    loss_tensor = decode_tensor(loss, loss_dtype) if not isinstance(loss, float | int) else torch.tensor(float(loss), dtype=loss_dtype)
    grad = decode_tensor(body["grad"], student.dtype) if body.get("grad") is not None else None
    return LossResult(loss_tensor, grad, float(body["loss_sum"]), float(body["normalizer"]), body["reduction"])


def distill_result(body: dict[str, Any], student: Tensor, features: Mapping[str, Tensor] | None = None) -> DistillResult:
    """A :class:`DistillResult` from a /v1/distill response (``features``: the named students sent)."""
    students = {LOGITS: student, **(features or {})}
    terms = [
        TermResult(term["name"], float(term["coefficient"]), loss_result(term, students[term["student"]]), term["student"])
        for term in body["terms"]
    ]
    grad = decode_tensor(body["grad"], student.dtype) if body.get("grad") is not None else None
    grads = {name: decode_tensor(value, students[name].dtype) for name, value in body.get("grads", {}).items()}
    return DistillResult(torch.tensor(float(body["loss"]), dtype=_loss_dtype(student)), grad, terms, grads)


def _loss_dtype(student: Tensor) -> torch.dtype:
    return torch.float64 if student.dtype == torch.float64 else torch.float32
