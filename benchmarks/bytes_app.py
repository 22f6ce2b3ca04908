"""A trivial ASGI app for benchmarks/oip.py: reads the whole body, answers ``DISTILL_BENCH_ANSWER_BYTES`` zero bytes.

It moves the same bytes as a binary /v2 request and answer with no work at all: what uvicorn and the
loopback cost on their own, the floor under the service's end-to-end figures. The allocator is set as
the service sets it (distill/native/allocator.py), so that neither pays page faults the other does not.
"""

from __future__ import annotations

import os
from typing import Any

from distill.native.allocator import keep_freed_memory

keep_freed_memory()
ANSWER = bytes(int(os.environ.get("DISTILL_BENCH_ANSWER_BYTES", "0")))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})
