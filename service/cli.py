"""``distill-serve``: run the service with uvicorn; flags override ``DISTILL_*`` variables."""

from __future__ import annotations

import argparse
import os

import uvicorn

from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse flags, export them as ``DISTILL_*`` (so every worker process sees them) and serve."""
    parser = argparse.ArgumentParser(prog="distill-serve", description="Knowledge-distillation loss service")
    parser.add_argument("--host", help="interface to bind (DISTILL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (DISTILL_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (DISTILL_WORKERS, default 1)")
    parser.add_argument("--log-level", help="uvicorn log level (DISTILL_LOG_LEVEL, default info)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (DISTILL_DEVICE, default auto)")
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if value is not None:
            os.environ[f"DISTILL_{name.upper()}"] = str(value)
    settings = Settings()
    uvicorn.run(
        "service.app:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
