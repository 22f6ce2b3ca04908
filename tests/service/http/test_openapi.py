"""The committed spec is what the app generates, is valid OpenAPI, and reads well for clients."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from distill import LOSSES
from distill.functional import FUNCTIONS
from scripts.export_openapi import SPEC, render

COMMITTED = json.loads(SPEC.read_text())


def test_committed_spec_matches_the_app():
    assert SPEC.read_text() == render(), "openapi/openapi.json is stale: run python scripts/export_openapi.py"


def test_spec_is_valid_openapi():
    validate(COMMITTED)


def test_operation_ids_are_chosen():
    ids = {path: next(iter(methods.values()))["operationId"] for path, methods in COMMITTED["paths"].items()}
    losses = {f"/v1/{name}": name for name in LOSSES}
    functions = {f"/v1/functional/{name}": f"functional_{name}" for name in FUNCTIONS}
    assert {"/v1/kl_div", "/v1/bce", "/v1/cross_entropy"} <= set(losses)
    assert ids == {
        **losses,
        **functions,
        "/v1/distill": "distill",
        "/v1/info": "info",
        "/livez": "livez",
        "/healthz": "healthz",
        "/readyz": "readyz",
        "/metrics": "metrics",
        "/v2": "oip_server_metadata",
        "/v2/health/live": "oip_server_live",
        "/v2/health/ready": "oip_server_ready",
        "/v2/models/{model}": "oip_model_metadata",
        "/v2/models/{model}/ready": "oip_model_ready",
        "/v2/models/{model}/infer": "oip_model_infer",
        "/v2/models/{model}/versions/{version}/infer": "oip_model_version_infer",
        "/v2/models/{model}/versions/{version}": "oip_model_version_metadata",
        "/v2/models/{model}/versions/{version}/ready": "oip_model_version_ready",
    }


def test_request_schemas_are_exact_and_not_duplicated():
    schemas = COMMITTED["components"]["schemas"]
    assert not [name for name in schemas if name.endswith(("-Input", "-Output", "Input", "Output"))]
    kl = schemas["KLDivRequest"]
    assert kl["additionalProperties"] is False and kl["required"] == ["student_logits"]
    assert kl["properties"]["reduction"]["enum"] == ["batchmean", "sum", "mean", "none"]
    body = COMMITTED["paths"]["/v1/kl_div"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/KLDivRequest"}


def test_errors_are_documented_as_problems():
    responses = COMMITTED["paths"]["/v1/distill"]["post"]["responses"]
    assert {"400", "401", "413", "422", "503"} <= set(responses)
    assert "application/problem+json" in responses["422"]["content"]


def test_license_servers_open_operations_and_retry_after_are_declared():
    assert COMMITTED["info"]["license"] == {"name": "Apache-2.0", "identifier": "Apache-2.0"}
    assert COMMITTED["servers"][0]["url"] == "/"
    operations = [operation for methods in COMMITTED["paths"].values() for operation in methods.values()]
    open_ids = {operation["operationId"] for operation in operations if operation["security"] == []}
    assert open_ids == {"livez", "healthz", "readyz", "metrics", "oip_server_live", "oip_server_ready"}
    unavailable = [operation["responses"]["503"] for operation in operations if "503" in operation["responses"]]
    assert unavailable and all(response["headers"]["Retry-After"]["required"] for response in unavailable)


def _walk(node: object, path: str = "") -> list[tuple[str, dict]]:
    """Every schema object under ``node`` with its JSON path."""
    found: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _walk(value, f"{path}/{index}")
    return found


def test_schemas_are_what_client_generators_handle():
    """The shape tests/openapi proves with the generators themselves, checked without them: every tensor field
    is a named tensor object (no nested-list ``oneOf``), unions are named components, an optional request
    field is its type alone (no ``anyOf`` with null), numbers are float64 and integers int64, and no
    property carries a title that a generator would name a type after."""
    schemas = COMMITTED["components"]["schemas"]
    assert {"FloatTensor", "IntegerTensor", "BooleanTensor", "Dtype", "Loss", "Term"} <= set(schemas)
    assert not {"NestedNumbers", "NestedIntegers", "NestedBooleans", "BinaryTensor"} & set(schemas)
    for name, schema in schemas.items():
        for path, node in _walk(schema):
            where = f"{name}{path}"
            assert not ("oneOf" in node or "anyOf" in node) or name in ("Loss", "Term") or path == "" or _nullable(node), where
            if node.get("type") == "number":
                assert node.get("format") == "double", where
            if node.get("type") == "integer":
                assert node.get("format") == "int64", where
        for field, prop in schema.get("properties", {}).items():
            assert "title" not in prop, f"{name}.{field}"
            if name.endswith(("Request", "Term")) or name in ("InferInputTensor", "StudentFeatures"):
                assert "anyOf" not in prop and prop.get("default", ...) is not None, f"{name}.{field}"
    tensors = {"FloatTensor", "IntegerTensor", "BooleanTensor"}
    student = schemas["KLDivRequest"]["properties"]["student_logits"]
    labels = schemas["CrossEntropyRequest"]["properties"]["labels"]
    mask = schemas["KLDivRequest"]["properties"]["mask"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in (student, labels, mask)] == ["FloatTensor", "IntegerTensor", "BooleanTensor"]
    assert all(schemas[tensor]["required"] == ["shape"] for tensor in tensors)


def _nullable(node: dict) -> bool:
    """``anyOf [X, null]``: how a response field that may be null is published (generators read it as nullable X)."""
    options = node.get("anyOf", [])
    return len(options) == 2 and {"type": "null"} in options
