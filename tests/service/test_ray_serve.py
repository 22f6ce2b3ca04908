"""Ray Serve: two replicas on a local Ray, both answering correctly behind one endpoint."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest
import torch

import distill
from tests.live import free_port
from tests.tolerances import assert_close

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"DISTILL_DEVICE": "cpu", "RAY_AUTH_MODE": "disabled"}})
    try:
        from service.ray_serve import build_app

        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"replicas": 2, "cpus_per_replica": 0.5}), name="distill", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_correctly(endpoint):
    student, teacher = torch.randn(4, 9), torch.randn(4, 9)
    expected = distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
    body = {"student_logits": student.tolist(), "teacher_logits": teacher.tolist(), "temperature": 2.0}
    replicas: set[str] = set()
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=30) as client:
        while len(replicas) < 2 and time.monotonic() < deadline:
            response = client.post(f"{endpoint}/v1/kl_div", json=body)
            assert response.status_code == 200, response.text
            assert_close(torch.tensor(response.json()["grad"]), expected.grad, torch.float32)
            replicas.add(response.headers["x-distill-replica"])
        assert len(replicas) == 2, replicas
        assert client.get(f"{endpoint}/readyz").status_code == 200
        problem = client.post(f"{endpoint}/v1/kl_div", json={"student_logits": [[1.0]], "temprature": 1})
        assert problem.status_code == 422 and problem.json()["field"] in ("teacher", "temprature")
