"""HTTP routes: the four losses and /v1/info (behind the optional API key), and the probes.

Routes are thin: read the body under the size limit and hand it to the runtime's pipeline.

This module keeps real (not postponed) annotations: Ray Serve's ingress re-analyses the routes and
then no longer resolves a string ``"Request"``, turning ``request`` into a required query parameter.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import torch
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.responses import Response

import distill
from distill import native
from service import json_native
from service.auth import require_api_key
from service.body import read_body
from service.dispatch import LossName
from service.openapi import problem_responses, request_body
from service.problems import ProblemError
from service.responses import PartsResponse
from service.schemas import REQUESTS, DistillResponse, LossResponse
from service.tensors import FLOAT_DTYPES

v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
probes = APIRouter(tags=["probes"])

_LOSSES: list[tuple[LossName, type[BaseModel], str]] = [
    ("kl_div", LossResponse, "KL divergence T²·KL(teacher ‖ student) and its gradient"),
    ("bce", LossResponse, "Soft-label binary cross-entropy and its gradient"),
    ("cross_entropy", LossResponse, "Cross-entropy (hard labels or soft targets) and its gradient"),
    ("distill", DistillResponse, "Combined objective Σ a_k·L_k and its gradient"),
]


def _loss_endpoint(loss: LossName) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        runtime = request.app.state.runtime
        body = await read_body(request, runtime.settings.max_body_bytes)
        return PartsResponse(await runtime.handle(loss, body))

    endpoint.__name__ = loss
    return endpoint


for _loss, _response, _summary in _LOSSES:
    v1.add_api_route(
        f"/{_loss}",
        _loss_endpoint(_loss),
        methods=["POST"],
        operation_id=_loss,
        summary=_summary,
        description=(REQUESTS[_loss].__doc__ or "").strip(),
        tags=["losses"],
        response_class=Response,
        responses={200: {"model": _response, "description": "The loss and its gradient"}, **problem_responses(400, 401, 413, 422, 503)},
        openapi_extra=request_body(REQUESTS[_loss]),
    )


class Info(BaseModel):
    """What this server is and what it accepts."""

    version: str
    torch: str
    device: str
    kernels: str = Field(description="CPU kernels in use: avx2 or baseline (compiled), or torch (eager ops)")
    json_reader: str = Field(description="How JSON bodies are read: compiled (tensors cut out by the C++ reader) or simdjson")
    dtypes: list[str]
    losses: list[str]
    max_body_bytes: int
    max_tensor_elements: int
    batching: bool
    max_wait_ms: float
    max_batch_rows: int


@v1.get("/info", operation_id="info", tags=["service"], response_model=Info, responses=problem_responses(401))
async def info(request: Request) -> Info:
    """Version, device, accepted dtypes and limits."""
    runtime = request.app.state.runtime
    return Info(
        version=distill.__version__,
        torch=torch.__version__,
        device=str(runtime.device),
        kernels=native.instruction_set() if native.enabled() else "torch",
        json_reader="compiled" if json_native.enabled() else "simdjson",
        dtypes=list(FLOAT_DTYPES),
        losses=[loss for loss, _, _ in _LOSSES],
        max_body_bytes=runtime.settings.max_body_bytes,
        max_tensor_elements=runtime.settings.max_tensor_elements,
        batching=runtime.settings.batching,
        max_wait_ms=runtime.settings.max_wait_ms,
        max_batch_rows=runtime.settings.max_batch_rows,
    )


@probes.get("/metrics", operation_id="metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests by route and status, latency, queue depth and wait, batch sizes."""
    return Response(generate_latest(request.app.state.runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class Status(BaseModel):
    status: str


@probes.get("/livez", operation_id="livez", response_model=Status)
async def livez() -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@probes.get("/healthz", operation_id="healthz", response_model=Status)
async def healthz() -> dict[str, Any]:
    """Alias of /livez."""
    return {"status": "ok"}


@probes.get("/readyz", operation_id="readyz", response_model=Status, responses=problem_responses(503))
async def readyz(request: Request) -> dict[str, Any]:
    """Readiness: 503 until the engine has warmed up (and again while shutting down)."""
    if not request.app.state.runtime.ready:
        raise ProblemError(503, "not-ready", "Not ready", "the engine is warming up or shutting down", headers={"Retry-After": "1"})
    return {"status": "ready"}
