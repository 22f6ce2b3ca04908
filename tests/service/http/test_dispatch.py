"""The computing routes are found by exact path ahead of FastAPI's scan; everything else falls through."""

from __future__ import annotations

import pytest
from starlette.routing import Match, Route

from service.http.dispatch import ExactPathRoutes, route_path
from service.http.routes import ENDPOINTS, ROUTES
from tests.service.conftest import make_client

BODY = {"student_logits": [[1.0, 2.0]], "teacher_logits": [[2.0, 1.0]]}


def scope(path: str, method: str = "POST", root_path: str = "") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": root_path}


def test_every_computing_route_is_held_once():
    assert sorted(ENDPOINTS) == sorted("/v1/" + route.replace(".", "/") for route, *_ in ROUTES)


def test_it_is_tried_first(client):
    assert isinstance(client.app.router.routes[0], ExactPathRoutes)


@pytest.mark.parametrize(
    ("request_scope", "matched"),
    [
        (scope("/v1/kl_div"), "/v1/kl_div"),
        (scope("/v1/functional/cross_entropy"), "/v1/functional/cross_entropy"),
        (scope("/api/v1/kl_div", root_path="/api"), "/v1/kl_div"),
        (scope("/v1/kl_div", method="GET"), None),
        (scope("/v1/kl_div/"), None),
        (scope("/v1/info"), None),
        (scope("/v1/nothing"), None),
        ({"type": "websocket", "path": "/v1/kl_div"}, None),
    ],
)
def test_matches_post_on_exact_paths_only(request_scope, matched):
    match, child = ExactPathRoutes(ENDPOINTS).matches(request_scope)
    if matched is None:
        assert match is Match.NONE and child == {}
    else:
        assert match is Match.FULL
        assert isinstance(child["route"], Route) and child["route"].path == matched
        assert child["endpoint"] is ENDPOINTS[matched]


@pytest.mark.parametrize(
    ("path", "root", "expected"), [("/v1/x", "", "/v1/x"), ("/r/v1/x", "/r", "/v1/x"), ("/r", "/r", "/"), ("/v1/x", "/r", "/v1/x")]
)
def test_route_path_drops_the_root_path(path, root, expected):
    assert route_path(scope(path, root_path=root)) == expected


def test_what_falls_through_is_answered_as_before(client):
    assert client.get("/v1/kl_div").status_code == 405
    assert client.post("/v1/kl_div/", json=BODY, follow_redirects=False).status_code == 307
    assert client.post("/v1/not_a_loss", json=BODY).status_code == 404


def test_errors_from_the_exact_path_are_problems_and_counted(client):
    response = client.post("/v1/kl_div", json={"student_logits": [[1.0, 2.0]]})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    metrics = client.get("/metrics").text
    assert 'distill_requests_total{method="POST",route="/v1/kl_div",status="422"}' in metrics


def test_the_api_key_guards_the_exact_paths():
    with make_client(device="cpu", api_key="k") as secured:
        for path in ENDPOINTS:
            assert secured.post(path, json=BODY).status_code == 401, path
        assert secured.post("/v1/kl_div", json=BODY, headers={"X-API-Key": "k"}).status_code == 200
