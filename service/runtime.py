"""The service's per-process lifecycle: settings applied, device, codec threads, batcher, readiness.

:meth:`Runtime.start` starts the codec threads and the batcher and warms the engine up on every
registered loss; the service is ready afterwards. :meth:`Runtime.stop` refuses new work and
finishes what is queued. The request path itself is :class:`service.pipeline.Pipeline`.
"""

from __future__ import annotations

import logging
import os

import torch

import distill
from distill import LOSSES, Batcher, BatchObserver, native
from service.codec.budget import DEFAULT_INFLIGHT_BODIES, ByteBudget
from service.codec.pool import CodecPool
from service.settings import Settings

logger = logging.getLogger("distill.service")


class Runtime:
    """Owns the device, the codec threads and the batcher of one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = distill.resolve_device(settings.device)
        self.batcher: Batcher | None = None
        self.codec: CodecPool | None = None
        self.ready = False
        self.budget = ByteBudget(settings.max_inflight_bytes or DEFAULT_INFLIGHT_BODIES * settings.max_body_bytes)
        self.workers = settings.codec_threads or os.cpu_count() or 2
        native.set_enabled(settings.native)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        native.keep_freed_memory()

    def start(self, observer: BatchObserver | None = None) -> None:
        """Start the codec threads and the batcher (reporting to ``observer``), and warm the engine up."""
        self.codec = CodecPool(self.workers)
        self.batcher = Batcher(
            max_wait_ms=self.settings.max_wait_ms,
            max_batch_rows=self.settings.max_batch_rows,
            max_batch_elements=self.settings.max_batch_elements,
            max_queue=self.settings.max_queue,
            enabled=self.settings.batching,
            observer=observer,
        )
        self.warm_up()
        self.ready = True

    def stop(self) -> None:
        """Not ready any more; refuse new work, finish what is queued."""
        self.ready = False
        if self.batcher is not None:
            self.batcher.close()
        if self.codec is not None:
            self.codec.shutdown()

    def warm_up(self) -> None:
        """Run every registered loss on its tiny examples so the first real request pays no lazy start-up."""
        student = torch.randn(2, 3, device=self.device)
        for spec in LOSSES.values():
            for example in spec.examples(student):
                spec.compute(**{spec.students[0].name: student}, **example)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        logger.info("engine warmed up on %s", self.device)
