"""HTTP routes: one per registered loss and the combined objective, /v1/info (behind the optional API
key), the probes and /metrics.

The loss routes are generated from the registry (:data:`distill.LOSSES`): ``POST /v1/<name>`` with
operationId ``<name>``, documented by the loss's request model. Routes are thin: read the body under
the size limit, hand it to the pipeline, send the parts it returns.

This module keeps real (not postponed) annotations: Ray Serve's ingress re-analyses the routes and
then no longer resolves a string ``"Request"``, turning ``request`` into a required query parameter.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import torch
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.responses import Response

import distill
from distill import LOSSES, native
from distill.functional import FUNCTIONS
from distill.native.allocator import release_free_memory
from distill.wire import Kind
from service.codec import json_reader
from service.codec.body import read_body
from service.codec.parts import PartsResponse
from service.errors import NotReady
from service.http.auth import SECURITY, require_api_key
from service.http.openapi import problem_responses, request_body
from service.pipeline.pipeline import V1
from service.pipeline.requests import OBJECTIVE
from service.pipeline.schemas import FUNCTIONAL, REQUESTS, DistillResponse, FunctionalResponse, LossResponse

v1 = APIRouter(prefix="/v1")
V1_PROTOCOL = V1()
probes = APIRouter(tags=["probes"])

#: Every computing route: (route, response model, summary, tag), the registered losses first; a
#: route ``functional.<name>`` is served at ``/v1/functional/<name>`` (operationId ``functional_<name>``).
ROUTES: list[tuple[str, type[BaseModel], str, str]] = [
    *((spec.name, LossResponse, spec.summary, "losses") for spec in LOSSES.values()),
    (OBJECTIVE, DistillResponse, "Combined objective Σ a_k·L_k and its gradient", "losses"),
    *((FUNCTIONAL + name, FunctionalResponse, f"torch.nn.functional.{name} and its gradients", "functional") for name in FUNCTIONS),
]


def _endpoint(route: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        await require_api_key(request)
        runtime = request.app.state.runtime
        settings = runtime.settings
        with runtime.budget.reservation() as reservation:
            body = read_body(request, settings.max_body_bytes, settings.body_timeout_s, reservation.take)
            parts = await request.app.state.pipeline.handle(route, body, V1_PROTOCOL)
        return PartsResponse(parts, background=BackgroundTask(release_free_memory) if reservation.large else None)

    endpoint.__name__ = route
    return endpoint


#: The computing endpoints by full path, for :class:`~service.http.dispatch.ExactPathRoutes`.
ENDPOINTS: dict[str, Callable[[Request], Awaitable[Response]]] = {}

for _route, _response, _summary, _tag in ROUTES:
    _path = "/" + _route.replace(".", "/")
    ENDPOINTS[v1.prefix + _path] = _endpoint(_route)
    v1.add_api_route(
        _path,
        ENDPOINTS[v1.prefix + _path],
        methods=["POST"],
        operation_id=_route.replace(".", "_"),
        summary=_summary,
        description=(REQUESTS[_route].__doc__ or "").strip(),
        tags=[_tag],
        response_class=Response,
        responses={
            200: {"model": _response, "description": "The loss and its gradient"},
            **problem_responses(400, 401, 408, 413, 415, 422, 503),
        },
        openapi_extra={**request_body(REQUESTS[_route]), "security": SECURITY},
    )


class Info(BaseModel):
    """What this server is and what it accepts."""

    version: str
    torch: str
    device: str
    kernels: str = Field(description="CPU kernels in use: avx512, avx2 or baseline (compiled), or torch (eager ops)")
    json_reader: str = Field(description="How JSON bodies are read: compiled (tensors cut out by the C++ reader) or simdjson")
    dtypes: list[str]
    losses: list[str]
    max_body_bytes: int
    max_tensor_elements: int
    max_inflight_bytes: int = Field(
        description="Memory the requests in flight may hold, counted as 2.5 bytes per body byte (503 with Retry-After beyond)"
    )
    batching: bool
    max_wait_ms: float
    max_batch_rows: int


@v1.get(
    "/info",
    operation_id="info",
    tags=["service"],
    response_model=Info,
    responses=problem_responses(401),
    openapi_extra={"security": SECURITY},
)
async def info(request: Request) -> Info:
    """Version, device, accepted dtypes and limits."""
    await require_api_key(request)
    runtime = request.app.state.runtime
    return Info(
        version=distill.__version__,
        torch=torch.__version__,
        device=str(runtime.device),
        kernels=native.kernels_in_use(),
        json_reader="compiled" if json_reader.enabled() else "simdjson",
        dtypes=list(Kind.FLOAT.dtypes),
        losses=[route for route, _, _, tag in ROUTES if tag == "losses"],
        max_body_bytes=runtime.settings.max_body_bytes,
        max_tensor_elements=runtime.settings.max_tensor_elements,
        max_inflight_bytes=runtime.budget.limit,
        batching=runtime.settings.batching,
        max_wait_ms=runtime.settings.max_wait_ms,
        max_batch_rows=runtime.settings.max_batch_rows,
    )


# The spec names the media type without the exposition-format version, which moves with prometheus-client.
@probes.get("/metrics", operation_id="metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format: requests by route and status, latency, queue
    depth and wait, batch sizes."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


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
        raise NotReady("the engine is warming up or shutting down")
    return {"status": "ready"}
