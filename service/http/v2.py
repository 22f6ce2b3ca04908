"""The Open Inference Protocol v2 routes (KServe, Triton): server and model metadata, health, infer.

Every single loss is a model named as its ``/v1`` route (``kl_div``, ``cross_entropy``…), and every
function of torch.nn.functional's loss family one named ``functional.<name>``; each has version
``1``. Infer requests go through the same pipeline, batcher, limits and metrics as ``/v1``; the
protocol's own parsing and rendering is :mod:`service.codec.oip` and :mod:`service.pipeline.oip`.
The health routes are open, like ``/livez`` and ``/readyz``; the rest take the API key. Errors are
``{"error": detail}`` (see :mod:`service.http.problems`).
"""

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.responses import Response
from typing_extensions import TypeAliasType

import distill
from distill.native.allocator import release_free_memory
from service.codec.body import read_body
from service.codec.parts import PartsResponse
from service.errors import NotReady, UnknownModel
from service.http.auth import SECURITY, require_api_key
from service.http.problems import RETRY_AFTER
from service.pipeline.oip import MODELS, Model, OipInfer

health = APIRouter(prefix="/v2", tags=["open inference protocol"])
v2 = APIRouter(prefix="/v2", tags=["open inference protocol"], dependencies=[Depends(require_api_key)])

#: The protocol extensions served.
EXTENSIONS = ["binary_tensor_data"]
#: The only version of each model.
VERSION = "1"


#: The protocol's ``$parameters``: a named component, so generators make one type of it, not one per field.
Parameters = TypeAliasType("Parameters", dict[str, Any])


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="FP32, FP64, FP16, BF16, INT64, INT32 or BOOL; a float input takes any of the FP types.")
    shape: list[int] = Field(description="-1 for a dimension of any size.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InferInputTensor(BaseModel):
    """An input tensor: ``data`` (row-major numbers) or ``parameters.binary_data_size`` bytes after the JSON header."""

    name: str = Field(description="A tensor field of the /v1 request: student_logits, teacher_logits, labels, mask…")
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferOutputRequest(BaseModel):
    name: str = Field(description="loss, grad, loss_sum or normalizer")
    parameters: Parameters | None = Field(None, description="binary_data: send it as raw bytes after the JSON header")


class InferRequest(BaseModel):
    """The JSON header of an infer request (raw tensor bytes may follow it: Inference-Header-Content-Length)."""

    id: str | None = None
    parameters: Parameters | None = Field(None, description="The loss's options (temperature, reduction…) and binary_data_output.")
    inputs: list[InferInputTensor]
    outputs: list[InferOutputRequest] | None = None


class InferOutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutputTensor]


class InferError(BaseModel):
    error: str


def _model(name: str) -> Model:
    spec = MODELS.get(name)
    if spec is None:
        raise UnknownModel(f"no model named {name[:64]!r}; the models are {', '.join(MODELS)}", field="model")
    return spec


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Error responses in the protocol's shape (422 declared too where the path has parameters, so
    that FastAPI adds no validation-error schema of its own)."""
    return {
        status: {"model": InferError, "description": "The protocol's error object", **({"headers": RETRY_AFTER} if status == 503 else {})}
        for status in statuses
    }


@v2.get("", operation_id="oip_server_metadata", response_model=ServerMetadata, openapi_extra={"security": SECURITY})
async def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and the protocol extensions served."""
    return {"name": "distill", "version": distill.__version__, "extensions": EXTENSIONS}


@health.get("/health/live", operation_id="oip_server_live", response_model=Live)
async def server_live() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"live": True}


@health.get("/health/ready", operation_id="oip_server_ready", response_model=Ready, responses=_errors(503))
async def server_ready(request: Request) -> dict[str, Any]:
    """Readiness: 503 until the engine has warmed up (and again while shutting down)."""
    if not request.app.state.runtime.ready:
        raise NotReady("the engine is warming up or shutting down")
    return {"ready": True}


def _version(model: str, version: str) -> None:
    """Refuse a version other than the one each model has (an unknown model first, as the unversioned route does)."""
    _model(model)
    if version != VERSION:
        raise UnknownModel(f"model {model[:64]!r} has only version {VERSION}", field="version")


_METADATA: dict[str, Any] = {"response_model": ModelMetadata, "responses": _errors(401, 404, 422), "openapi_extra": {"security": SECURITY}}
_READY: dict[str, Any] = {"response_model": ModelReady, "responses": _errors(401, 404, 422, 503), "openapi_extra": {"security": SECURITY}}


@v2.get("/models/{model}", operation_id="oip_model_metadata", **_METADATA)
async def model_metadata(model: str) -> dict[str, Any]:
    """A model's inputs (the /v1 request's tensor fields, or a function's tensor arguments) and outputs."""
    return _model(model).metadata


@v2.get("/models/{model}/versions/{version}", operation_id="oip_model_version_metadata", **_METADATA)
async def model_version_metadata(model: str, version: str) -> dict[str, Any]:
    """As ``/v2/models/{model}``, for the model's one version (``1``)."""
    _version(model, version)
    return await model_metadata(model)


@v2.get("/models/{model}/ready", operation_id="oip_model_ready", **_READY)
async def model_ready(model: str, request: Request) -> dict[str, Any]:
    """Whether the model (the engine) is ready: 503 while warming up or shutting down."""
    spec = _model(model)
    if not request.app.state.runtime.ready:
        raise NotReady("the engine is warming up or shutting down")
    return {"name": spec.name, "ready": True}


@v2.get("/models/{model}/versions/{version}/ready", operation_id="oip_model_version_ready", **_READY)
async def model_version_ready(model: str, version: str, request: Request) -> dict[str, Any]:
    """As ``/v2/models/{model}/ready``, for the model's one version (``1``)."""
    _version(model, version)
    return await model_ready(model, request)


async def _infer(model: str, request: Request) -> Response:
    spec = _model(model)
    runtime = request.app.state.runtime
    settings = runtime.settings
    with runtime.budget.reservation() as reservation:
        body = read_body(request, settings.max_body_bytes, settings.body_timeout_s, reservation.take, binary=True)
        parts, header_length = await request.app.state.pipeline.handle(
            spec.name, body, OipInfer(request.headers.get("inference-header-content-length"))
        )
    background = BackgroundTask(release_free_memory) if reservation.large else None
    if header_length is None:
        return PartsResponse(parts, background=background)
    return PartsResponse(
        parts, background=background, headers={"Inference-Header-Content-Length": str(header_length)}, media_type="application/octet-stream"
    )


_INFER: dict[str, Any] = {
    "response_class": Response,
    "responses": {200: {"model": InferResponse, "description": "The outputs"}, **_errors(400, 401, 404, 408, 413, 415, 422, 503)},
    "openapi_extra": {
        "security": SECURITY,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
}


@v2.post("/models/{model}/infer", operation_id="oip_model_infer", **_INFER)
async def model_infer(model: str, request: Request) -> Response:
    """A loss and its gradient: inputs named as the /v1 request's tensor fields, options as parameters."""
    return await _infer(model, request)


@v2.post("/models/{model}/versions/{version}/infer", operation_id="oip_model_version_infer", **_INFER)
async def model_version_infer(model: str, version: str, request: Request) -> Response:
    """As ``/v2/models/{model}/infer``, for the model's one version (``1``)."""
    _version(model, version)
    return await _infer(model, request)
