"""Problem details (RFC 9457) and the one place that maps exceptions to HTTP responses.

Every error the service returns on ``/v1`` is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and, where one field is at fault, ``field`` (a dotted path such as ``terms.0.labels``) and
``index`` (the first offending element); on the Open Inference Protocol's ``/v2`` routes it is that
protocol's ``{"error": message}``: the same detail, prefixed with the field, under the same status. The other layers raise domain errors
(:mod:`service.errors`, the engine's :class:`~distill.InputError`, :class:`~distill.QueueFull`,
:class:`~distill.DeviceMemoryError`); :data:`PROBLEMS` says which status, problem type and headers
each one gets, and :func:`install` registers the handlers. Nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distill import LOSSES, DeviceMemoryError, InputError, QueueFull
from service.errors import (
    TOO_LARGE,
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    DuplicateKey,
    InvalidRequest,
    MalformedBody,
    NotAnObject,
    NotReady,
    NotRepresentable,
    NumberOutOfRange,
    Overloaded,
    Refused,
    TensorTooLarge,
    TooManyKeys,
    Unauthorized,
    UnknownModel,
    UnsupportedMediaType,
    UpgradeWithBody,
)
from service.http.dispatch import route_path

logger = logging.getLogger("distill.service")

PROBLEM_TYPE = "https://distill.dev/problems/"
MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class ProblemType:
    """How one kind of error is answered: status, problem type (a slug of PROBLEM_TYPE), title, headers."""

    status: int
    slug: str
    title: str
    headers: dict[str, str] = field(default_factory=dict)


#: Errors found before the body was read (or while it was): the rest of it may still be on its way,
#: and would be read as the next request on the connection, so the connection is closed.
_CLOSE = {"Connection": "close"}

#: The OpenAPI declaration of the header every 503 below carries.
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 0}, "required": True}
}

#: The error map: each domain error type and how it is answered.
PROBLEMS: dict[type[Exception], ProblemType] = {
    MalformedBody: ProblemType(400, "malformed-json", "Malformed JSON"),
    NotAnObject: ProblemType(400, "not-an-object", "Body is not a JSON object"),
    UpgradeWithBody: ProblemType(400, "upgrade-with-body", "Body sent with an upgrade offer", _CLOSE),
    Unauthorized: ProblemType(401, "unauthorized", "Unauthorized", {"WWW-Authenticate": "Bearer"}),
    UnknownModel: ProblemType(404, "unknown-model", "Unknown model"),
    UnsupportedMediaType: ProblemType(415, "unsupported-media-type", "Unsupported media type", _CLOSE),
    DuplicateKey: ProblemType(422, "duplicate-key", "Duplicate key"),
    InvalidRequest: ProblemType(422, "invalid-request", "Invalid request"),
    NumberOutOfRange: ProblemType(422, "number-out-of-range", "Number out of range"),
    BodyTimeout: ProblemType(408, "body-timeout", "Request body timeout", _CLOSE),
    BodyTooLarge: ProblemType(413, "body-too-large", "Request body too large", _CLOSE),
    TensorTooLarge: ProblemType(413, "tensor-too-large", "Tensor too large"),
    TooManyKeys: ProblemType(413, "too-many-keys", "Too many keys"),
    InputError: ProblemType(422, "invalid-input", "Invalid input"),
    NotRepresentable: ProblemType(422, "not-representable", "Result not representable"),
    NotReady: ProblemType(503, "not-ready", "Not ready", {"Retry-After": "1"}),
    # 499 (nginx's "client closed request"): no one reads it; /metrics counts aborts apart from errors.
    ClientDisconnected: ProblemType(499, "client-disconnected", "Client disconnected"),
    QueueFull: ProblemType(503, "overloaded", "Service overloaded", {"Retry-After": "1"}),
    Overloaded: ProblemType(503, "overloaded", "Service overloaded", {"Retry-After": "1", **_CLOSE}),
    DeviceMemoryError: ProblemType(503, "device-memory", "Device out of memory", {"Retry-After": "5"}),
}
_VALIDATION = ProblemType(422, "invalid-request", "Invalid request")
_INTERNAL = ProblemType(500, "internal", "Internal error")


class ProblemDetails:
    """One problem as answered: its type, detail, and where the fault lies."""

    def __init__(
        self,
        problem: ProblemType,
        detail: str,
        *,
        field: str | None = None,
        index: tuple[int, ...] | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = problem.status
        self.problem = problem
        self.detail = detail
        self.field = field
        self.index = index
        self.errors = errors
        self.headers = {**problem.headers, **(headers or {})}

    def body(self) -> dict[str, Any]:
        """The RFC 9457 problem object."""
        problem: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.problem.slug,
            "title": self.problem.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            problem["field"] = self.field
        if self.index is not None:
            problem["index"] = list(self.index)
        if self.errors:
            problem["errors"] = self.errors
        return problem

    def message(self) -> str:
        """The detail as one line that names the field at fault (and the element), for the ``/v2`` error object."""
        if self.field is None or self.detail.startswith(self.field):
            return self.detail
        where = self.field + (f" at {list(self.index)}" if self.index is not None else "")
        return f"{where}: {self.detail}"

    def response(self, path: str = "") -> Response:
        """The problem as an ``application/problem+json`` response; on the Open Inference Protocol's
        routes (``/v2``, ``path`` taken without the app's root path) in that protocol's shape,
        ``{"error": message}`` (clients such as tritonclient raise their own exception with it), with
        the same status and headers."""
        if path == "/v2" or path.startswith("/v2/"):
            return Response(
                orjson.dumps({"error": self.message()}), status_code=self.status, media_type="application/json", headers=self.headers
            )
        return Response(orjson.dumps(self.body()), status_code=self.status, media_type=MEDIA_TYPE, headers=self.headers)


def problem_for(error: Exception) -> ProblemDetails:
    """The problem that answers ``error``: from :data:`PROBLEMS`, validation errors, HTTP errors, or a 500."""
    if isinstance(error, ValidationError | RequestValidationError):
        return from_validation_error(error)
    if isinstance(error, StarletteHTTPException):
        title = {404: "Not found", 405: "Method not allowed"}.get(error.status_code, "HTTP error")
        kind = ProblemType(error.status_code, title.lower().replace(" ", "-"), title)
        return ProblemDetails(kind, str(error.detail), headers=dict(error.headers or {}))
    mapped = next((PROBLEMS[cls] for cls in type(error).__mro__ if cls in PROBLEMS), None)
    if mapped is None:
        return ProblemDetails(_INTERNAL, "the server failed to process the request; see its log")
    if isinstance(error, InputError):
        return ProblemDetails(mapped, str(error), field=error.argument, index=error.index)
    if isinstance(error, Refused):
        return ProblemDetails(mapped, error.detail, field=error.field, index=error.index)
    return ProblemDetails(mapped, str(error))


#: At most this many validation errors are listed, each field path and message cut to MAX_TEXT
#: characters: a problem stays a few KiB whatever the body (an unknown key may be megabytes long).
MAX_ERRORS, MAX_TEXT = 20, 200


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def from_validation_error(error: ValidationError | RequestValidationError) -> ProblemDetails:
    """A pydantic validation failure as a 422 problem naming the first failing field (a 413 naming the
    tensor when one is over the element limit)."""
    items = error.errors(include_url=False, include_input=False) if isinstance(error, ValidationError) else error.errors()
    errors: list[dict[str, Any]] = []
    for item in items[:MAX_ERRORS]:
        field, message = _path(item["loc"]), item["msg"]
        if item["type"] in ("union_tag_not_found", "union_tag_invalid"):  # a term's "loss" missing or unknown: name the key
            field, message = f"{field}.loss", f"{'Field required' if item['type'] == 'union_tag_not_found' else 'Unknown loss'}: {_TAGS}"
        entry: dict[str, Any] = {"field": _cut(field), "message": _cut(message)}
        entry["type"] = item["type"]
        index = (item.get("ctx") or {}).get("index")
        if index is not None:
            entry["index"] = index
        errors.append(entry)
    too_large = [entry for entry in errors if entry["type"] == TOO_LARGE]
    first = too_large[0] if too_large else errors[0] if errors else {"field": "", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    index = tuple(first["index"]) if "index" in first else None
    problem = PROBLEMS[TensorTooLarge] if too_large else _VALIDATION
    return ProblemDetails(problem, detail, field=first["field"] or None, index=index, errors=errors)


_TAGS = f"the loss of a term is one of {', '.join(LOSSES)}"


def _path(loc: tuple[int | str, ...]) -> str:
    """A dotted field path, without the tag pydantic inserts after a discriminated-union index; a bad key
    of an object names the object (the message quotes the key)."""
    if len(loc) >= 2 and loc[-1] == "[key]":
        loc = loc[:-2]
    parts: list[str] = []
    for position, part in enumerate(loc):
        if part == "body" or (position and isinstance(loc[position - 1], int) and part in LOSSES):
            continue
        parts.append(str(part))
    return ".".join(parts)


class UnexpectedErrors:
    """The last resort: an exception no handler maps becomes one 500 problem, logged once with its traceback.

    Registering a handler for ``Exception`` would leave it to Starlette's outermost middleware, which
    answers and then re-raises, so the server logs it again and drops the keep-alive connection; here the
    exception ends with the answer and the connection stays usable. (An error after the response has
    started cannot be answered: it propagates.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if started:
                raise
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=error)
            await problem_for(error).response(route_path(scope) if "path" in scope else "")(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the exception handlers (every mapped error, validation and HTTP errors) and the last resort (500)."""

    async def answer(request: Request, exc: Exception) -> Response:
        return problem_for(exc).response(route_path(request.scope))

    for error_type in (*PROBLEMS, RequestValidationError, ValidationError, StarletteHTTPException):
        app.add_exception_handler(error_type, answer)
    app.add_middleware(UnexpectedErrors)
