"""The ASGI application: ``service.app:app`` (settings from ``DISTILL_*``), or :func:`create_app`.

Three layers, calls going one way: the HTTP layer (:mod:`service.http`: routes, auth, OpenAPI,
metrics, the error map) → the pipeline (:mod:`service.pipeline`: decode → validate → prepare →
submit → render) → the codec (:mod:`service.codec`: body reading, the JSON reader, tensors,
response parts, codec threads), over the engine's public face (:mod:`distill`). The
:class:`~service.runtime.Runtime` owns the lifecycle (device, threads, batcher, readiness).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

import distill
from service.http import openapi, problems
from service.http.dispatch import ExactPathRoutes
from service.http.metrics import Metrics, MetricsMiddleware
from service.http.routes import ENDPOINTS, probes, v1
from service.http.v2 import health as v2_health
from service.http.v2 import v2
from service.pipeline import Pipeline
from service.runtime import Runtime
from service.settings import Settings

DESCRIPTION = """Knowledge-distillation losses over HTTP: send student and teacher logits, get back the
loss and d(loss)/d(student) to backpropagate locally. Semantics follow torch.nn.functional; the class
dimension is last, leading dimensions are flattened into rows, soft-target terms at temperature T
carry T²."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the engine warms up at start-up and /readyz turns 200 when it has."""
    runtime = Runtime(settings or Settings())
    metrics = Metrics(str(runtime.device))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runtime.start, metrics)
        yield
        await run_in_threadpool(runtime.stop)

    # /docs and /redoc with Swagger UI's and ReDoc's scripts served from the package, not from a CDN.
    app = FastAPIOffline(
        title="distill",
        version=distill.__version__,
        description=DESCRIPTION,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        servers=[
            {"url": "/", "description": "The server that serves this document"},
            {"url": "http://127.0.0.1:8000", "description": "distill-serve with its default host and port"},
        ],
        lifespan=lifespan,
        separate_input_output_schemas=False,
    )
    app.state.runtime = runtime
    app.state.pipeline = Pipeline(runtime)
    app.state.metrics = metrics
    problems.install(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(probes)
    app.include_router(v1)
    app.include_router(v2_health)
    app.include_router(v2)
    app.router.routes.insert(0, ExactPathRoutes(ENDPOINTS))

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.build(app)
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


app = create_app()
