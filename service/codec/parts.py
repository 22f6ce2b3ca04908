"""A JSON response sent as several body parts, so large base64 payloads are never copied into it.

A (64, 32000) float32 gradient is 11 MB of base64. Joined into one response body it is copied twice
more (into its quoted JSON string, then into orjson's output); sent as its own body message it goes
from the encoder to the socket as is. The parts are written in order under one Content-Length.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_MARK = b"\0"
#: Bodies up to this size are joined and sent in one message (copying them costs less than sending parts).
JOIN_BELOW_BYTES = 256 << 10


class Payload:
    """Bytes to appear verbatim, inside quotes, where this object stands in a response body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def dump_parts(body: object) -> list[bytes]:
    """Serialise with orjson, leaving each :class:`Payload` out as its own part.

    orjson writes each payload as a raw NUL between its quotes (it escapes NUL everywhere else), so
    splitting the output at NUL bytes gives the pieces between the payloads, in order.
    """
    payloads: list[bytes] = []

    def stand_in(value: object) -> orjson.Fragment:
        if not isinstance(value, Payload):
            raise TypeError(f"cannot serialise {type(value).__name__}")
        payloads.append(value.data)
        return orjson.Fragment(b'"' + _MARK + b'"')

    text = orjson.dumps(body, default=stand_in, option=orjson.OPT_SERIALIZE_NUMPY)
    if not payloads:
        return [text]
    pieces = text.split(_MARK)
    parts = [pieces[0]]
    for payload, piece in zip(payloads, pieces[1:], strict=True):
        parts += (payload, piece)
    return parts


class PartsResponse(Response):
    """A response from body parts, each sent as its own ASGI message (``application/json`` unless told)."""

    media_type = "application/json"

    def __init__(
        self,
        parts: Sequence[bytes],
        status_code: int = 200,
        background: BackgroundTask | None = None,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        size = sum(len(part) for part in parts)
        # A small body goes as one message: each message passes every middleware's send wrapper.
        self.parts = [b"".join(parts)] if size <= JOIN_BELOW_BYTES else list(parts)
        super().__init__(b"", status_code=status_code, background=background, headers=headers, media_type=media_type)
        self.headers["content-length"] = str(size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        parts, self.parts = self.parts or [b""], []
        for index in range(len(parts)):
            part, parts[index] = parts[index], b""  # a sent part is not kept alive through the background task
            await send({"type": "http.response.body", "body": part, "more_body": index < len(parts) - 1})
            del part
        if self.background is not None:
            await self.background()
