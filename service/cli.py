"""``distill-serve``: run the service with uvicorn; flags override ``DISTILL_*`` variables."""

from __future__ import annotations

import argparse
import os

try:
    import uvicorn

    from service.settings import Settings
except ModuleNotFoundError as missing:  # `pip install distill` brings the engine and the client only
    raise SystemExit(f"distill-serve needs the server extra: pip install 'distill[server]' ({missing})") from None


def main(argv: list[str] | None = None) -> None:
    """Parse flags, export them as ``DISTILL_*`` (so every worker process sees them) and serve."""
    parser = argparse.ArgumentParser(prog="distill-serve", description="Knowledge-distillation loss service")
    parser.add_argument("--host", help="interface to bind (DISTILL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (DISTILL_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (DISTILL_WORKERS, default 1)")
    parser.add_argument("--log-level", help="uvicorn log level (DISTILL_LOG_LEVEL, default info)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (DISTILL_DEVICE, default auto)")
    ray = parser.add_argument_group("Ray Serve (needs the 'ray' extra)")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve (the cluster in RAY_ADDRESS, else a local one)")
    ray.add_argument("--replicas", type=int, help="fixed replica count (default: autoscale 1..--max-replicas)")
    ray.add_argument("--max-replicas", type=int, default=4, help="autoscaling upper bound (default 4)")
    args = parser.parse_args(argv)
    for name in ("host", "port", "workers", "log_level", "device"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"DISTILL_{name.upper()}"] = str(value)
    settings = Settings()
    if args.ray:
        serve_on_ray(settings, args.replicas, args.max_replicas)
        return
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


def serve_on_ray(settings: Settings, replicas: int | None, max_replicas: int) -> None:
    """Start Ray Serve's proxy on host:port and run the distill application until interrupted."""
    import ray
    from ray import serve

    from service.ray_serve import build_app

    ray.init(address=os.environ.get("RAY_ADDRESS"), runtime_env={"env_vars": _distill_environment()})
    serve.start(http_options={"host": settings.host, "port": settings.port})
    args = {"replicas": replicas} if replicas else {"max_replicas": max_replicas}
    serve.run(build_app(args), name="distill", route_prefix="/", blocking=True)


def _distill_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("DISTILL_")}


if __name__ == "__main__":
    main()
