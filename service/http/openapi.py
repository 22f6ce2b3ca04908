"""Shaping the OpenAPI document: exact request schemas for routes that parse their own bodies, the
Retry-After header of every 503, ``security: []`` on the operations open without a key, and schemas
that client generators turn into working code.

Loss routes read the raw body (to parse it fast and strictly), so FastAPI cannot infer their
request schemas; each route declares ``request_body(Model)`` and :func:`build` adds the models (the
problem schema, and the Open Inference Protocol's infer request header) to ``components``.

What generators need (openapi-generator's TypeScript, Java and Go clients, openapi-python-client),
done by :func:`generator_safe` over the whole document:

* an optional request field is published as its type alone, not ``anyOf [type, null]``: the server
  takes an omitted field and ``null`` alike, and generators make the ``anyOf`` a wrapper type with a
  made-up name (``Mask``, ``MissingMass1``) instead of the type itself;
* numbers are ``format: double`` and integers ``format: int64`` (Go and Java otherwise choose float32
  and int32: losses would lose digits, byte counts would overflow);
* no ``title`` on properties (generators name inline types after them).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from service.http.auth import SECURITY_SCHEMES
from service.http.problems import MEDIA_TYPE, RETRY_AFTER
from service.http.v2 import InferRequest
from service.pipeline.schemas import REQUESTS

REF = "#/components/schemas/{model}"


class FieldError(BaseModel):
    """One validation error of a request."""

    field: str = Field(description="Dotted path of the field, e.g. terms.0.labels.")
    message: str
    type: str = Field(description="The kind of error, e.g. invalid_tensor, missing, extra_forbidden.")
    index: list[int] | None = Field(None, description="First offending element of that field, when there is one.")


class Problem(BaseModel):
    """An RFC 9457 problem: every error response of the service."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="Dotted path of the request field at fault, e.g. terms.0.labels.")
    index: list[int] | None = Field(None, description="First offending element of that field.")
    errors: list[FieldError] | None = Field(None, description="Every validation error, when there are several.")


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body is ``model``."""
    schema = {"$ref": REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Response entries for the given error statuses, each an application/problem+json Problem."""
    descriptions = {
        400: "Malformed JSON, or a body that is not a JSON object",
        401: "Missing or wrong API key",
        408: "The body did not arrive in time",
        415: "The body is not JSON, or has a Content-Encoding",
        413: "Body or tensor too large",
        422: "Invalid request: the field and the reason are named",
        503: "Queue full or not ready; retry after Retry-After seconds",
    }
    content = {MEDIA_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}}
    return {
        status: {"description": descriptions[status], "content": content, **({"headers": RETRY_AFTER} if status == 503 else {})}
        for status in statuses
    }


def build(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with request and problem schemas in ``components``."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        license_info=app.license_info,
        servers=app.servers,
        separate_input_output_schemas=False,
    )
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.setdefault("security", [])  # an operation that requires no key says so (the probes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    requests: set[str] = set()
    models: tuple[type[BaseModel], ...] = (*REQUESTS.values(), InferRequest)
    for model in models:
        schema = model.model_json_schema(ref_template=REF, mode="validation")
        definitions = schema.pop("$defs", {})
        schemas.update(definitions)
        schemas[model.__name__] = schema
        requests |= {model.__name__, *definitions}
    schemas["Problem"] = Problem.model_json_schema(ref_template=REF)
    schemas.update(schemas["Problem"].pop("$defs"))
    requests |= {"Problem", "FieldError"}  # a problem leaves out what it does not have, never null
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    generator_safe(schemas, requests)
    return document


NULL = {"type": "null"}


def generator_safe(schemas: dict[str, Any], without_null: set[str]) -> None:
    """Rewrite ``schemas`` in place as the module docstring says; ``without_null`` names the schemas whose
    optional fields are published without ``null`` (requests, and problems, which omit what they lack)."""
    for name, schema in schemas.items():
        for field in schema.get("properties", {}).values():
            field.pop("title", None)
            options = field.get("anyOf", [])
            if name in without_null and NULL in options and field.get("default", ...) is None:
                (only,) = (option for option in options if option != NULL)
                del field["anyOf"], field["default"]
                field.update(only)
        _formats(schema)


def _formats(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type") in ("number", "integer") and "format" not in schema:
            schema["format"] = "double" if schema["type"] == "number" else "int64"
        for value in schema.values():
            _formats(value)
    elif isinstance(schema, list):
        for value in schema:
            _formats(value)
