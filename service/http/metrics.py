"""Prometheus metrics (prometheus-client), one registry per app, served at ``/metrics``.

Requests are counted by route template (never the raw path: bounded cardinality) and status; the
batcher reports queue depth, queue wait and batch sizes through :class:`Metrics` as its observer.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class Metrics:
    """The service's metrics, and the batcher's observer."""

    def __init__(self, device: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "distill_requests", "HTTP requests by route and status", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "distill_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.queue_wait = Histogram(
            "distill_queue_wait_seconds", "Time from queueing to computing", buckets=WAIT_BUCKETS, registry=self.registry
        )
        self.batch_requests = Histogram("distill_batch_requests", "Requests per engine call", buckets=SIZE_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("distill_batch_rows", "Kept rows per engine call", buckets=SIZE_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("distill_queue_depth", "Requests waiting for the engine", registry=self.registry)
        Info("distill_device", "Compute device", registry=self.registry).info({"device": device})
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request. The label children are cached (``labels()`` costs microseconds per call);
        methods outside the standard ones are counted as ``OTHER``, so clients cannot add series at will."""
        method = method if method in _METHODS else "OTHER"
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def queued(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def batch(self, requests: int, rows: int, waits: list[float]) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)
        for wait in waits:
            self.queue_wait.observe(wait)


class MetricsMiddleware:
    """Counts every HTTP request by route template and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request(template, scope["method"], status["code"], time.perf_counter() - start)
