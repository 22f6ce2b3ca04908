"""The Open Inference Protocol v2 over the same pipeline: each loss is a model, its tensors the inputs.

A ``/v2/models/<loss>/infer`` request carries the ``/v1`` request's tensor fields as inputs (named as
there: ``student_logits``, ``teacher_logits``, ``labels``, ``mask``…) and its scalar options as
request parameters (``temperature``, ``reduction``, ``beta``…); it is validated by the same request
model, checked by the same engine code and batched with ``/v1`` requests. The outputs are ``loss``
(FP64, shape [1]; the per-element tensor, in FP64 too, for ``reduction: "none"``), ``grad`` (the student's
datatype and shape), ``loss_sum`` and ``normalizer`` (FP64, shape [1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distill import LOSSES, DistillResult, LossResult, LossSpec, Work, wire
from distill.wire import Kind
from service.codec.oip import PROTOCOL_NAMES, Output, RequestedOutput, header_length, parse_infer_request, render_infer_response
from service.codec.tensors import WireTensor
from service.errors import InvalidRequest
from service.pipeline.requests import engine_call
from service.pipeline.schemas import REQUESTS
from service.runtime import Runtime

#: The outputs of every model, in response order.
OUTPUTS = ("loss", "grad", "loss_sum", "normalizer")


def input_kinds(spec: LossSpec) -> dict[str, Kind]:
    """The inputs of a loss's model, in order (its tensor arguments and the row mask), and their kinds."""
    return {tensor.name: tensor.kind for tensor in spec.inputs} | {"mask": Kind.MASK}


def parameter_names(spec: LossSpec) -> tuple[str, ...]:
    """The request parameters of a loss's model: its options and ``compute_grad``."""
    return (*(option.name for option in spec.options), "compute_grad")


def metadata(spec: LossSpec) -> dict[str, Any]:
    """The model metadata of a loss: its inputs and outputs with datatypes and shapes (-1: any size).

    A float input accepts FP32, FP64, FP16 and BF16 (FP32 is listed). Shapes are those of a 2-D
    student: per-class tensors [-1, -1] (rows, classes; a student of more dimensions has its leading
    ones flattened into rows, and the other inputs follow it), labels and the mask [-1] (one per
    row), weights [-1] (one per class, or broadcast as the loss documents).
    """
    one_per_row = {"labels", "mask"}
    weights = {tensor.name for tensor in spec.inputs if tensor.role == "weight"}
    datatype = {Kind.FLOAT: "FP32", Kind.INDEX: "INT64", Kind.MASK: "BOOL"}
    inputs = [
        {"name": name, "datatype": datatype[kind], "shape": [-1] if name in one_per_row | weights else [-1, -1]}
        for name, kind in input_kinds(spec).items()
    ]
    outputs = [
        {"name": "loss", "datatype": "FP64", "shape": [-1]},
        {"name": "grad", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "loss_sum", "datatype": "FP64", "shape": [1]},
        {"name": "normalizer", "datatype": "FP64", "shape": [1]},
    ]
    return {"name": spec.name, "versions": ["1"], "platform": "distill", "inputs": inputs, "outputs": outputs}


@dataclass(frozen=True)
class InferAnswer:
    """What the response needs besides the result: the model, the request's id and the outputs asked for."""

    model: str
    id: str | None
    outputs: list[RequestedOutput]


class OipInfer:
    """One ``/v2`` infer request through the pipeline (see :class:`service.pipeline.pipeline.WireProtocol`).

    Args:
        header: the request's ``Inference-Header-Content-Length`` (None when the body is all JSON).
    """

    def __init__(self, header: str | None) -> None:
        self.header = header

    def decode(self, route: str, body: bytearray, runtime: Runtime) -> tuple[InferAnswer, Work]:
        """Parse, validate with the route's request model, and prepare on the engine.

        Raises:
            InvalidRequest: not an infer request, an input or parameter the model does not have, an
                unknown output, or the gradient asked for with ``compute_grad`` false.
            (and what :class:`~service.pipeline.pipeline.V1` raises for the same request on /v1)
        """
        spec = LOSSES[route]
        limit = runtime.settings.max_tensor_elements
        request = parse_infer_request(body, header_length(self.header, len(body)), limit)
        kinds, parameters = input_kinds(spec), parameter_names(spec)
        for position, (name, value) in enumerate(request.inputs.items()):
            if name not in kinds:
                raise InvalidRequest(
                    f"model {route} has no input {name[:64]!r}; its inputs are {', '.join(kinds)}", field=f"inputs.{position}.name"
                )
            dtype = wire.NAMES[value.tensor.dtype]
            if dtype not in kinds[name].dtypes:
                accepted = ", ".join(PROTOCOL_NAMES[option] for option in kinds[name].dtypes)
                raise InvalidRequest(f"{name} takes {accepted}, not {PROTOCOL_NAMES[dtype]}", field=f"inputs.{position}.datatype")
            if kinds[name] is Kind.MASK:
                request.inputs[name] = WireTensor(value.tensor.bool(), value.encoding)
        for name in request.parameters:
            if name not in parameters:
                known = ", ".join(("binary_data_output", *parameters))
                raise InvalidRequest(
                    f"model {route} has no parameter {name[:64]!r}; its parameters are {known}", field=f"parameters.{name[:64]}"
                )
        document: dict[str, Any] = {**request.parameters, **request.inputs}
        validated = REQUESTS[route].model_validate(document, context={"max_elements": limit})
        compute_grad = getattr(validated, "compute_grad")  # noqa: B009  # a field of every loss's model
        outputs = request.outputs or [RequestedOutput(name, request.binary_output) for name in OUTPUTS if compute_grad or name != "grad"]
        for position, output in enumerate(outputs):
            if output.name not in OUTPUTS:
                raise InvalidRequest(
                    f"model {route} has no output {output.name[:64]!r}; its outputs are {', '.join(OUTPUTS)}",
                    field=f"outputs.{position}.name",
                )
            if output.name == "grad" and not compute_grad:
                raise InvalidRequest("grad is asked for with compute_grad false", field=f"outputs.{position}.name")
        call = engine_call(route, validated, runtime.device, limit)
        return InferAnswer(route, request.id, outputs), call.prepare()

    def encode(self, answer: InferAnswer, result: LossResult | DistillResult) -> tuple[list[bytes], int | None]:
        """The response body in parts, and the JSON header's length when binary outputs follow it."""
        assert isinstance(result, LossResult)
        values: dict[str, torch.Tensor | None] = {
            "loss": result.loss.double() if result.reduction == "none" else _scalar(float(result.loss)),
            "grad": result.grad,
            "loss_sum": _scalar(result.loss_sum),
            "normalizer": _scalar(result.normalizer),
        }
        outputs = [Output(output.name, tensor, output.binary) for output in answer.outputs if (tensor := values[output.name]) is not None]
        return render_infer_response(answer.model, answer.id, outputs)


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float64)
