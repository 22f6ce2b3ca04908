"""The service's per-process state: settings, device, readiness, and the request pipeline.

A request goes: body bytes → parse → validate (pydantic envelope, tensor decoding) → engine call →
compute → encode. Parsing, validation and encoding run in the thread pool, so the event loop only
moves bytes; the compute step is where the batcher (when enabled) groups requests.
"""

from __future__ import annotations

import logging

import torch
from starlette.concurrency import run_in_threadpool

import distill
from distill import DistillResult, LossResult
from service.body import parse_json_object
from service.dispatch import EngineCall, LossName, build_call, render
from service.schemas import REQUESTS
from service.settings import Settings

logger = logging.getLogger("distill.service")


class Runtime:
    """Owns the device and the pipeline for one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = distill.resolve_device(settings.device)
        self.ready = False
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)

    def prepare(self, loss: LossName, body: bytes) -> EngineCall:
        """Parse and validate a body into an engine call (blocking)."""
        data = parse_json_object(body)
        request = REQUESTS[loss].model_validate(data, context={"max_elements": self.settings.max_tensor_elements})
        return build_call(loss, request, self.device)

    async def compute(self, call: EngineCall) -> LossResult | DistillResult:
        """Run the engine off the event loop."""
        return await run_in_threadpool(call.run)

    async def handle(self, loss: LossName, body: bytes) -> bytes:
        """The whole pipeline for one request; errors propagate to the problem handlers."""
        call = await run_in_threadpool(self.prepare, loss, body)
        result = await self.compute(call)
        return await run_in_threadpool(render, call, result)

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
        self.ready = True
        logger.info("engine warmed up on %s", self.device)
