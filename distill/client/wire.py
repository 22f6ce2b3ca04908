"""The service's wire format on the client side: request bodies and typed results.

Pure functions shared by the sync and async clients: tensors go out as base64 binary objects (or
nested lists on request) and results come back as the engine's own result types.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from distill.objective import DistillResult, Term, TermResult
from distill.result import LossResult

Encoding = Literal["base64", "json"]

_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
}
_DTYPES = {name: dtype for dtype, name in _NAMES.items()}


def encode_tensor(tensor: Tensor, encoding: Encoding) -> Any:
    """A tensor as the service reads it (any device and dtype; detached, copied to the CPU)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype not in _NAMES:
        tensor = tensor.long() if not tensor.is_floating_point() else tensor.float()
    if encoding == "json":
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).tolist()
    raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
    array = raw.numpy()
    if sys.byteorder != "little":
        array = array.byteswap()
    return {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """A tensor from the service's answer (nested lists or a binary object)."""
    if isinstance(value, dict):
        dtype = _DTYPES[value["dtype"]]
        raw = bytearray(base64.b64decode(value["data"]))
        if not raw:
            return torch.empty(value["shape"], dtype=dtype)
        tensor = torch.frombuffer(raw, dtype=torch.int16 if dtype == torch.bfloat16 else dtype)
        if sys.byteorder != "little" and tensor.element_size() > 1:
            tensor = torch.from_numpy(tensor.numpy().byteswap())
        tensor = tensor.view(dtype) if dtype == torch.bfloat16 else tensor
        return tensor.reshape(value["shape"])
    tensor = torch.from_numpy(np.asarray(value, dtype=np.float64))
    return tensor.to(like.dtype) if like is not None else tensor.float()


def request_body(tensors: Mapping[str, Tensor | None], options: Mapping[str, Any], encoding: Encoding) -> dict[str, Any]:
    """A loss request: every non-None tensor encoded, options as given (None values dropped)."""
    body = {name: encode_tensor(value, encoding) for name, value in tensors.items() if value is not None}
    body.update({name: value for name, value in options.items() if value is not None})
    if encoding == "json":
        student = next(value for name, value in tensors.items() if name.startswith("student") and value is not None)
        if student.dtype == torch.float64:
            body.setdefault("dtype", "float64")
    return body


def term_body(term: Term, encoding: Encoding) -> dict[str, Any]:
    """One term of the combined objective as the service reads it."""
    tensors = {name: value for name, value in term.options.items() if isinstance(value, Tensor)}
    options = {name: value for name, value in term.options.items() if not isinstance(value, Tensor)}
    return {"loss": term.loss, "coefficient": term.coefficient, **request_body(tensors, options, encoding)}


def loss_result(body: dict[str, Any], student: Tensor) -> LossResult:
    """A :class:`LossResult` from a loss response; tensors are on the CPU."""
    loss = body["loss"]
    loss_tensor = (
        decode_tensor(loss, student) if not isinstance(loss, float | int) else torch.tensor(float(loss), dtype=_loss_dtype(student))
    )
    grad = decode_tensor(body["grad"], student) if body.get("grad") is not None else None
    return LossResult(loss_tensor, grad, float(body["loss_sum"]), float(body["normalizer"]), body["reduction"])


def distill_result(body: dict[str, Any], student: Tensor) -> DistillResult:
    """A :class:`DistillResult` from a /v1/distill response."""
    terms = [TermResult(term["name"], float(term["coefficient"]), loss_result(term, student)) for term in body["terms"]]
    grad = decode_tensor(body["grad"], student) if body.get("grad") is not None else None
    return DistillResult(torch.tensor(float(body["loss"]), dtype=_loss_dtype(student)), grad, terms)


def _loss_dtype(student: Tensor) -> torch.dtype:
    return torch.float64 if student.dtype == torch.float64 else torch.float32
