"""Scale-out on Ray Serve: the same FastAPI app behind ``@serve.ingress``, one engine per replica.

Each replica imports this module, builds the app from its ``DISTILL_*`` environment (the lifespan
starts its batcher and warms the engine up, as under uvicorn) and serves it; Ray Serve spreads
requests over replicas behind one HTTP endpoint and autoscales them. Replicas get a GPU each when
the cluster has GPUs. Every response names its replica in ``X-Distill-Replica``.

    distill-serve --ray --replicas 2                      # local Ray, fixed replicas
    serve run service.ray_serve:build_app max_replicas=8  # or a Serve config file (docs/deployment.md)

Requires the ``ray`` extra: ``pip install 'distill[ray]'``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from ray import serve
from ray.serve import Application

from service.app import create_app

app: FastAPI = create_app()


@app.middleware("http")
async def name_the_replica(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    response.headers["X-Distill-Replica"] = serve.get_replica_context().replica_id.unique_id
    return response


@serve.deployment(name="distill", max_ongoing_requests=64, health_check_period_s=10)
@serve.ingress(app)
class DistillReplica:
    """One replica: the FastAPI app above with its own device, batcher and metrics."""


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The Serve application (``import_path: service.ray_serve:build_app``).

    Args (all optional, strings accepted as from ``serve run key=value``):
        replicas: a fixed replica count; otherwise autoscaling between ``min_replicas`` (default 1)
            and ``max_replicas`` (default 4), aiming at ``target_ongoing_requests`` (default 32)
            in flight per replica.
        gpus_per_replica: GPUs each replica reserves (default 1 if the cluster has GPUs, else 0).
        cpus_per_replica: CPUs each replica reserves (default 1).
    """
    args = dict(args or {})
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_cpus": float(args.get("cpus_per_replica", 1)),
            "num_gpus": float(args.get("gpus_per_replica", _cluster_has_gpus())),
        }
    }
    if "replicas" in args:
        options["num_replicas"] = int(args["replicas"])
    else:
        options["autoscaling_config"] = {
            "min_replicas": int(args.get("min_replicas", 1)),
            "max_replicas": int(args.get("max_replicas", 4)),
            "target_ongoing_requests": float(args.get("target_ongoing_requests", 32)),
        }
    return DistillReplica.options(**options).bind()  # type: ignore[attr-defined]  # @serve.deployment made it a Deployment


def _cluster_has_gpus() -> int:
    import ray

    return 1 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 else 0
