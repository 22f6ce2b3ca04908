"""Problem details (RFC 9457) and the one place that maps exceptions to HTTP responses.

Every error the service returns is ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and, where one field is at fault, ``field`` (a dotted path such as ``terms.0.labels``) and
``index`` (the first offending element). Nothing a client sends can produce a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from distill.errors import InputError
from distill.objective import LOSSES

TERM_LOSSES = frozenset(LOSSES)

logger = logging.getLogger("distill.service")

PROBLEM_TYPE = "https://distill.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """An error with an HTTP status, raised anywhere in the service and rendered as a problem."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        index: tuple[int, ...] | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.field = field
        self.index = index
        self.headers = headers or {}
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """The RFC 9457 problem object."""
        problem: dict[str, Any] = {
            "type": PROBLEM_TYPE + self.slug,
            "title": self.title,
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


def problem_response(problem: ProblemError) -> Response:
    """Render a problem as ``application/problem+json``."""
    return Response(orjson.dumps(problem.body()), status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)


def invalid_input(error: InputError, prefix: str = "") -> ProblemError:
    """An engine validation error (bad values, shapes, options) as a 422 problem."""
    field = f"{prefix}{error.argument}"
    return ProblemError(
        422, "invalid-input", "Invalid input", str(error) if not prefix else f"{prefix}{error}", field=field, index=error.index
    )


def from_validation_error(error: ValidationError | RequestValidationError) -> ProblemError:
    """A pydantic validation failure as a 422 problem naming the first failing field."""
    items = error.errors(include_url=False, include_input=False) if isinstance(error, ValidationError) else error.errors()
    errors: list[dict[str, Any]] = []
    for item in items:
        entry: dict[str, Any] = {"field": _path(item["loc"]), "message": item["msg"]}
        entry["type"] = item["type"]
        index = (item.get("ctx") or {}).get("index")
        if index is not None:
            entry["index"] = index
        errors.append(entry)
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    index = tuple(first["index"]) if "index" in first else None
    return ProblemError(422, "invalid-request", "Invalid request", detail, field=first["field"] or None, index=index, errors=errors)


def _path(loc: tuple[int | str, ...]) -> str:
    """A dotted field path, without the tag pydantic inserts after a discriminated-union index."""
    parts: list[str] = []
    for position, part in enumerate(loc):
        if part == "body" or (position and isinstance(loc[position - 1], int) and part in TERM_LOSSES):
            continue
        parts.append(str(part))
    return ".".join(parts)


def install(app: FastAPI) -> None:
    """Register the exception handlers: problems, engine errors, validation errors, HTTP errors, the rest."""

    @app.exception_handler(ProblemError)
    async def on_problem(_: Request, exc: ProblemError) -> Response:
        return problem_response(exc)

    @app.exception_handler(InputError)
    async def on_input_error(_: Request, exc: InputError) -> Response:
        return problem_response(invalid_input(exc))

    @app.exception_handler(RequestValidationError)
    async def on_request_validation(_: Request, exc: RequestValidationError) -> Response:
        return problem_response(from_validation_error(exc))

    @app.exception_handler(ValidationError)
    async def on_validation(_: Request, exc: ValidationError) -> Response:
        return problem_response(from_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        slug = title.lower().replace(" ", "-")
        return problem_response(ProblemError(exc.status_code, slug, title, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(ProblemError(500, "internal", "Internal error", "the server failed to process the request; see its log"))
