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
