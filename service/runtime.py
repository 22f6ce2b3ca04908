"""The service's per-process state: settings, device, batcher, metrics, readiness; and the pipeline.

A request goes: body bytes → parse → validate (pydantic envelope, tensor decoding, then the engine's
own checks) → queue → batched compute → encode. Parsing, validation and encoding run in the thread
pool; only validated work joins the batcher, so one bad request can never fail another.
"""

from __future__ import annotations

import asyncio
import logging
import os

import torch

import distill
from distill import DistillResult, LossResult
from distill.allocator import keep_freed_memory
from distill.batcher import Batcher, DeviceMemoryError, QueueFull, Work
from service.body import parse_json_object
from service.codec_pool import DECODE, ENCODE, CodecPool
from service.dispatch import EngineCall, LossName, build_call, render
from service.metrics import Metrics
from service.problems import ProblemError
from service.schemas import REQUESTS
from service.settings import Settings

logger = logging.getLogger("distill.service")


class Runtime:
    """Owns the device, the batcher and the pipeline for one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = distill.resolve_device(settings.device)
        self.metrics = Metrics(str(self.device))
        self.batcher: Batcher | None = None
        self.ready = False
        self.workers = settings.codec_threads or os.cpu_count() or 2
        self.codec: CodecPool | None = None
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        keep_freed_memory()

    def start(self) -> None:
        """Start the codec threads and the batcher, warm the engine up; the service is ready afterwards."""
        self.codec = CodecPool(self.workers)
        self.batcher = Batcher(
            max_wait_ms=self.settings.max_wait_ms,
            max_batch_rows=self.settings.max_batch_rows,
            max_batch_elements=self.settings.max_batch_elements,
            max_queue=self.settings.max_queue,
            enabled=self.settings.batching,
            observer=self.metrics,
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

    def prepare(self, loss: LossName, body: bytes) -> tuple[EngineCall, Work]:
        """Parse and validate a body into engine work (blocking)."""
        data = parse_json_object(body)
        model = REQUESTS[loss]
        json_dtype = data.get("dtype", model.model_fields["dtype"].default)
        request = model.model_validate(data, context={"max_elements": self.settings.max_tensor_elements, "json_dtype": json_dtype})
        call = build_call(loss, request, self.device)
        return call, call.prepare()

    async def compute(self, work: Work) -> LossResult | DistillResult:
        """Queue validated work on the batcher and wait for its result."""
        if self.batcher is None:
            raise ProblemError(503, "not-ready", "Not ready", "the engine is not running", headers={"Retry-After": "1"})
        try:
            future = self.batcher.submit(work)
        except QueueFull as error:
            raise ProblemError(503, "overloaded", "Service overloaded", str(error), headers={"Retry-After": "1"}) from None
        try:
            return await asyncio.wrap_future(future)
        except DeviceMemoryError as error:
            raise ProblemError(503, "device-memory", "Device out of memory", str(error), headers={"Retry-After": "5"}) from None

    async def handle(self, loss: LossName, body: bytes) -> list[bytes]:
        """The whole pipeline for one request; errors propagate to the problem handlers."""
        if self.codec is None:
            raise ProblemError(503, "not-ready", "Not ready", "the service is not running", headers={"Retry-After": "1"})
        call, work = await self.codec.run(DECODE, self.prepare, loss, body)
        result = await self.compute(work)
        return await self.codec.run(ENCODE, render, call, result)

    def warm_up(self) -> None:
        """Run every loss once on a tiny input so the first real request pays no lazy start-up."""
        student = torch.randn(2, 3, device=self.device)
        teacher = torch.randn(2, 3, device=self.device)
        labels = torch.tensor([0, 2], device=self.device)
        distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
        distill.bce(student, teacher_logits=teacher)
        distill.cross_entropy(student, labels=labels, label_smoothing=0.1)
        distill.cross_entropy(student, teacher_logits=teacher)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        logger.info("engine warmed up on %s", self.device)
