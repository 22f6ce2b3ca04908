"""The request pipeline: body bytes → document → validated request → engine work → result → body parts.

Decoding, validation and preparation (the engine's own checks) run on a codec thread, or on the
event loop for small bodies (:data:`INLINE_BODY_BYTES`); only validated work is submitted to the
batcher, so one bad request can never fail another; the answer is rendered where the request was
decoded (on the codec threads with priority over decoding new requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Protocol

from distill import DistillResult, LossResult, Work
from service.codec.body import parse_json_object
from service.codec.pool import DECODE, ENCODE
from service.errors import NotReady
from service.pipeline.render import render
from service.pipeline.requests import EngineCall, engine_call
from service.pipeline.schemas import validate
from service.runtime import Runtime

#: Bodies up to this size are decoded, and their answers encoded, on the event loop itself. For them
#: a codec thread saves nothing (their decoding is Python holding the GIL, about 0.1 ms at (8, 1000)
#: in base64) and costs two thread hand-offs each way (0.2 ms of a 0.8 ms request, measured); larger
#: bodies go to the codec threads, where the compiled reader and base64 run outside the GIL.
INLINE_BODY_BYTES = 256 << 10


class WireProtocol(Protocol):
    """How one API's requests become engine work and its results replies (``/v1``, or ``/v2``'s infer).

    ``decode`` runs the request's decoding, validation and the engine's checks (blocking; raising the
    domain errors of :mod:`service.errors`, pydantic's and the engine's); it returns what ``encode``
    needs besides the result (the answer's encoding, the requested outputs…) and the work to compute.
    Both run on a codec thread, or on the event loop for small bodies.
    """

    def decode(self, route: str, body: bytearray, runtime: Runtime) -> tuple[Any, Work]: ...

    def encode(self, answer: Any, result: LossResult | DistillResult) -> Any: ...


class V1:
    """The ``/v1`` API: a JSON request object per route; the answer as JSON body parts."""

    def decode(self, route: str, body: bytearray, runtime: Runtime) -> tuple[EngineCall, Work]:
        """Raises: MalformedBody, NotAnObject (not a JSON object); pydantic.ValidationError,
        TensorTooLarge (does not fit its schema); distill.InputError (the engine's checks failed)."""
        document = parse_json_object(body)
        request = validate(route, document, runtime.settings.max_tensor_elements)
        del document  # with it the compiled reader's parsed numbers; the decoded tensors own their memory
        call = engine_call(route, request, runtime.device, runtime.settings.max_tensor_elements)
        return call, call.prepare()

    def encode(self, call: EngineCall, result: LossResult | DistillResult) -> list[bytes]:
        return render(call.encoding, result, call.feature_encodings)


class Pipeline:
    """The stages of one request, over the runtime's codec threads, device and batcher."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(self, route: str, body: Coroutine[Any, Any, bytearray], protocol: WireProtocol) -> Any:
        """The whole pipeline for one request of ``route``, from its body on its way (``read_body(…)``).

        The request counts as work on its way to the batcher (:meth:`distill.Batcher.incoming`) from
        the moment its body starts arriving until it is submitted: the batcher waits for it while
        grouping, and computes a small request on the spot only when no other is arriving.

        Each stage's input is let go as soon as the next stage has what it needs, so a large request
        never holds its body, its input tensors, its gradient and the gradient's encoding at once:
        the body is let go once decoded (this holds its only reference), and the inputs are dropped
        (here and by the batcher) before the answer is encoded. Errors propagate to the error map.

        Raises:
            NotReady: the service is not running.
            (and whatever reading the body, the protocol, :meth:`submit` and the engine raise)
        """
        codec, batcher = self.runtime.codec, self.runtime.batcher
        if codec is None or batcher is None:
            body.close()
            raise NotReady("the service is not running")
        with batcher.incoming():
            await asyncio.sleep(0)  # let requests already accepted announce themselves before this one is decoded
            received = await body
            inline = len(received) <= INLINE_BODY_BYTES
            decode = protocol.decode
            answer, work = (
                decode(route, received, self.runtime) if inline else await codec.run(DECODE, decode, route, received, self.runtime)
            )
            del received
            future = self.submit(work)
        del work
        result = future.result() if future.done() else await asyncio.wrap_future(future)  # computed inline: no loop wake-up
        return protocol.encode(answer, result) if inline else await codec.run(ENCODE, protocol.encode, answer, result)

    def submit(self, work: Work) -> Future[LossResult | DistillResult]:
        """Queue validated work on the batcher; the future resolves to its result.

        Raises:
            NotReady: the engine is not running.
            distill.QueueFull: the queue is full.
            (the future) distill.DeviceMemoryError: the request does not fit in device memory.
        """
        batcher = self.runtime.batcher
        if batcher is None:
            raise NotReady("the engine is not running")
        return batcher.submit(work)
