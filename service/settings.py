"""Service settings, from ``DISTILL_*`` environment variables (or flags of ``distill-serve``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1 << 20


class Settings(BaseSettings):
    """Every knob of the service; each is also the environment variable ``DISTILL_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DISTILL_", extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind (0.0.0.0 in containers).")
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, description="Uvicorn worker processes (each has its own engine and batcher).")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N.")
    api_key: SecretStr | None = Field(None, description="When set, /v1 routes require it (Bearer or X-API-Key).")
    max_body_bytes: int = Field(256 * MiB, ge=1, description="Largest request body; larger ones get 413 before buffering.")
    max_tensor_elements: int = Field(1 << 25, ge=1, description="Largest element count of any one tensor (413 beyond).")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's choice).")
    codec_threads: int | None = Field(None, ge=1, description="Threads decoding requests and encoding responses (default: CPU count).")
    batching: bool = Field(True, description="Coalesce compatible concurrent requests into one engine call.")
    max_wait_ms: float = Field(2.0, ge=0, description="How long a request may wait for company (0: take what is queued).")
    max_batch_rows: int = Field(8192, ge=1, description="Kept rows in one engine call at most.")
    max_batch_elements: int = Field(1 << 24, ge=1, description="Rows × classes in one engine call at most.")
    max_queue: int = Field(1024, ge=1, description="Queued requests beyond which new ones get 503 with Retry-After.")
    max_inflight_bytes: int | None = Field(
        None,
        ge=1,
        description="Memory requests in flight may hold, estimated as 2.5 bytes per body byte (503 beyond); default 4 × max_body_bytes.",
    )
    body_timeout_s: float = Field(20.0, gt=0, description="Seconds a request body may take to arrive (408 beyond).")
    native: bool = Field(
        True, description="Use the compiled code (CPU loss kernels, JSON reader); false computes on torch ops and parses with simdjson."
    )
