"""API key on /v1 (Bearer or X-API-Key, constant-time), open probes, readiness, /v1/info."""

from __future__ import annotations

import pytest

from distill import LOSSES
from service.codec import json_reader
from tests.service.conftest import make_client

BODY = {"student_logits": [[1.0, 2.0]], "teacher_logits": [[2.0, 1.0]]}


@pytest.fixture(scope="module")
def secured():
    with make_client(device="cpu", api_key="s3cret") as client:
        yield client


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}])
def test_missing_or_wrong_key_is_401(secured, headers):
    response = secured.post("/v1/kl_div", json=BODY, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["title"] == "Unauthorized"
    assert secured.get("/v1/info", headers=headers).status_code == 401


@pytest.mark.parametrize("headers", [{"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}, {"Authorization": "bearer  s3cret "}])
def test_right_key_is_accepted(secured, headers):
    assert secured.post("/v1/kl_div", json=BODY, headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz"])
def test_probes_stay_open(secured, path):
    assert secured.get(path).status_code == 200


def test_readiness_follows_warm_up(client):
    runtime = client.app.state.runtime
    assert client.get("/readyz").json() == {"status": "ready"}
    runtime.ready = False
    try:
        response = client.get("/readyz")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert client.get("/livez").status_code == 200
    finally:
        runtime.ready = True


def test_info(client):
    info = client.get("/v1/info").json()
    assert info["device"] == "cpu"
    assert {"kl_div", "bce", "cross_entropy", "distill"} <= set(info["losses"]) == {*LOSSES, "distill"}
    assert "bfloat16" in info["dtypes"] and info["max_body_bytes"] > 0
    assert info["json_reader"] == ("compiled" if json_reader.enabled() else "simdjson")
