"""The Open Inference Protocol v2 over the same pipeline: each loss and each functional loss is a model.

A ``/v2/models/<loss>/infer`` request carries the ``/v1`` request's tensor fields as inputs (named as
there: ``student_logits``, ``teacher_logits``, ``labels``, ``mask``…) and its scalar options as
request parameters (``temperature``, ``reduction``, ``beta``…); it is validated by the same request
model, checked by the same engine code and batched with ``/v1`` requests. The outputs are ``loss``
(FP64, shape [1]; the per-element tensor, in FP64 too, for ``reduction: "none"``), ``grad`` (the
student's datatype and shape), ``loss_sum`` and ``normalizer`` (FP64, shape [1]).

``/v2/models/functional.<name>/infer`` is torch.nn.functional's ``<name>`` (``/v1/functional/<name>``):
its tensor arguments are the inputs, its other arguments (options, legacy flags) the parameters, and
its gradients the outputs ``grads.<argument>``; the gradients computed are those asked for (all, when
``outputs`` is not given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distill import LOSSES, DistillResult, LossResult, LossSpec, Work, wire
from distill.functional import FUNCTIONS, FunctionalResult, FunctionalSpec
from distill.wire import Kind
from service.codec.oip import PROTOCOL_NAMES, Output, RequestedOutput, header_length, parse_infer_request, render_infer_response
from service.codec.tensors import WireTensor
from service.errors import InvalidRequest
from service.pipeline.requests import engine_call
from service.pipeline.schemas import FUNCTIONAL, REQUESTS
from service.runtime import Runtime

#: The outputs of a loss's model, in response order.
OUTPUTS = ("loss", "grad", "loss_sum", "normalizer")
_DATATYPE = {Kind.FLOAT: "FP32", Kind.INDEX: "INT64", Kind.MASK: "BOOL", Kind.NUMBER: "FP32"}
_SCALARS = [{"name": "loss_sum", "datatype": "FP64", "shape": [1]}, {"name": "normalizer", "datatype": "FP64", "shape": [1]}]


@dataclass(frozen=True)
class Model:
    """A model of the ``/v2`` API: a loss, or a function of the functional family.

    Attributes:
        name: the model's name, which is its ``/v1`` route (``kl_div``, ``functional.mse_loss``).
        inputs: its inputs and what each holds, in order.
        parameters: the request parameters it takes (besides ``binary_data_output``).
        outputs: its outputs, in response order.
        metadata: its model metadata (``GET /v2/models/<name>``).
    """

    name: str
    inputs: dict[str, Kind]
    parameters: tuple[str, ...]
    outputs: tuple[str, ...]
    metadata: dict[str, Any]

    @property
    def functional(self) -> bool:
        return self.name.startswith(FUNCTIONAL)


def loss_model(spec: LossSpec) -> Model:
    """A loss as a model. A float input accepts FP32, FP64, FP16 and BF16 (FP32 is listed). Shapes are
    those of a 2-D student: per-class tensors [-1, -1] (rows, classes; a student of more dimensions
    has its leading ones flattened into rows, and the other inputs follow it), labels and the mask
    [-1] (one per row), weights [-1] (one per class, or broadcast as the loss documents)."""
    inputs = {tensor.name: tensor.kind for tensor in spec.inputs} | {"mask": Kind.MASK}
    vectors = {"labels", "mask"} | {tensor.name for tensor in spec.inputs if tensor.role == "weight"}
    described = [
        {"name": name, "datatype": _DATATYPE[kind], "shape": [-1] if name in vectors else [-1, -1]} for name, kind in inputs.items()
    ]
    outputs = [{"name": "loss", "datatype": "FP64", "shape": [-1]}, {"name": "grad", "datatype": "FP32", "shape": [-1, -1]}, *_SCALARS]
    metadata = {"name": spec.name, "versions": ["1"], "platform": "distill", "inputs": described, "outputs": outputs}
    return Model(spec.name, inputs, (*(option.name for option in spec.options), "compute_grad"), OUTPUTS, metadata)


def function_model(spec: FunctionalSpec) -> Model:
    """A function of the family as a model: its tensor arguments as inputs (each of any shape its
    function takes: [-1] is listed), its other arguments as parameters, a gradient output per
    differentiable argument (the argument's datatype and shape)."""
    name = FUNCTIONAL + spec.name
    inputs = {argument: spec.kind(argument) for argument in spec.tensors}
    grads = tuple(f"grads.{argument}" for argument in spec.differentiable)
    described = [{"name": argument, "datatype": _DATATYPE[kind], "shape": [-1]} for argument, kind in inputs.items()]
    outputs = [
        {"name": "loss", "datatype": "FP64", "shape": [-1]},
        *({"name": grad, "datatype": "FP32", "shape": [-1]} for grad in grads),
        *_SCALARS,
    ]
    parameters = tuple(argument for argument in spec.signature.parameters if argument not in inputs)
    metadata = {"name": name, "versions": ["1"], "platform": "distill", "inputs": described, "outputs": outputs}
    return Model(name, inputs, parameters, ("loss", *grads, "loss_sum", "normalizer"), metadata)


#: Every model by name: the losses, then the functional family.
MODELS: dict[str, Model] = {
    **{spec.name: loss_model(spec) for spec in LOSSES.values()},
    **{FUNCTIONAL + spec.name: function_model(spec) for spec in FUNCTIONS.values()},
}


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
        model = MODELS[route]
        limit = runtime.settings.max_tensor_elements
        request = parse_infer_request(body, header_length(self.header, len(body)), limit)
        inputs: dict[str, WireTensor] = {}
        for position, (name, value) in enumerate(request.inputs.items()):
            if name not in model.inputs:
                known = ", ".join(model.inputs)
                raise InvalidRequest(f"model {route} has no input {name[:64]!r}; its inputs are {known}", field=f"inputs.{position}.name")
            kind, dtype = model.inputs[name], wire.NAMES[value.tensor.dtype]
            if dtype not in kind.dtypes:
                accepted = ", ".join(PROTOCOL_NAMES[option] for option in kind.dtypes)
                raise InvalidRequest(f"{name} takes {accepted}, not {PROTOCOL_NAMES[dtype]}", field=f"inputs.{position}.datatype")
            inputs[name] = WireTensor(value.tensor.bool(), value.encoding) if kind is Kind.MASK else value  # UINT8 masks, as on /v1
        for name in request.parameters:
            if name not in model.parameters:
                known = ", ".join(("binary_data_output", *model.parameters))
                raise InvalidRequest(
                    f"model {route} has no parameter {name[:64]!r}; its parameters are {known}", field=f"parameters.{name[:64]}"
                )
        outputs = request.outputs or [RequestedOutput(name, request.binary_output) for name in self._default_outputs(model, inputs)]
        for position, output in enumerate(outputs):
            if output.name not in model.outputs:
                known = ", ".join(model.outputs)
                raise InvalidRequest(
                    f"model {route} has no output {output.name[:64]!r}; its outputs are {known}", field=f"outputs.{position}.name"
                )
        document: dict[str, Any] = {**request.parameters, **inputs}
        if model.functional:
            document["grad_wrt"] = [output.name.removeprefix("grads.") for output in outputs if output.name.startswith("grads.")]
        validated = REQUESTS[route].model_validate(document, context={"max_elements": limit})
        computes_grad = model.functional or getattr(validated, "compute_grad")  # noqa: B009  # a field of every loss's model
        if not computes_grad and any(output.name == "grad" for output in outputs):
            if request.outputs is not None:
                raise InvalidRequest("grad is asked for with compute_grad false", field="outputs")
            outputs = [output for output in outputs if output.name != "grad"]
        call = engine_call(route, validated, runtime.device, limit)
        return InferAnswer(route, request.id, outputs), call.prepare()

    @staticmethod
    def _default_outputs(model: Model, inputs: dict[str, WireTensor]) -> tuple[str, ...]:
        """Every output, but a function's gradients only for float inputs that were given (a 0-d var is a number)."""
        # A 0-d var is a constant variance (a number to the engine): it has no gradient.
        given = {
            f"grads.{name}" for name, value in inputs.items() if value.tensor.is_floating_point() and (name != "var" or value.tensor.dim())
        }
        return tuple(name for name in model.outputs if not name.startswith("grads.") or name in given)

    def encode(self, answer: InferAnswer, result: LossResult | DistillResult | FunctionalResult) -> tuple[list[bytes], int | None]:
        """The response body in parts, and the JSON header's length when binary outputs follow it."""
        assert not isinstance(result, DistillResult)
        loss = result.loss.double() if result.reduction == "none" else _scalar(float(result.loss))
        values: dict[str, torch.Tensor | None] = {
            "loss": loss,
            "loss_sum": _scalar(result.loss_sum),
            "normalizer": _scalar(result.normalizer),
        }
        if isinstance(result, FunctionalResult):
            values |= {f"grads.{name}": grad for name, grad in result.grads.items()}
        else:
            values["grad"] = result.grad
        outputs = [
            Output(output.name, tensor, output.binary) for output in answer.outputs if (tensor := values.get(output.name)) is not None
        ]
        return render_infer_response(answer.model, answer.id, outputs)


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float64)
