"""Over HTTP: concurrent requests are batched, each answer equals its solo answer, failures stay alone."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
import torch

import distill
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import binary, make_client
from tests.tolerances import assert_close


def mixed_requests(count: int) -> list[tuple[str, dict[str, Any], Any]]:
    """Distinct requests (shapes, temperatures, reductions, labels, masks) with their solo answers."""
    out = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        rows = 1 + index % 5
        student, teacher = torch.randn(rows, 2, 16, generator=generator), torch.randn(rows, 2, 16, generator=generator)
        mask = torch.rand(rows, 2, generator=generator) > 0.3
        mask[0, 0] = True
        T = [1.0, 2.0, 4.0][(index // 3) % 3]
        if index % 3 == 0:
            reduction = ["batchmean", "sum", "mean"][(index // 3) % 3]
            body = {
                "student_logits": student.tolist(),
                "teacher_logits": teacher.tolist(),
                "temperature": T,
                "reduction": reduction,
                "mask": mask.tolist(),
            }
            expected = distill.kl_div(student, teacher_logits=teacher, temperature=T, reduction=reduction, mask=mask)
            out.append(("kl_div", body, expected))
        elif index % 3 == 1:
            labels = torch.randint(0, 16, (rows, 2), generator=generator)
            body = {"student_logits": student.tolist(), "labels": labels.tolist(), "label_smoothing": 0.1, "mask": mask.tolist()}
            expected = distill.cross_entropy(student, labels=labels, label_smoothing=0.1, mask=mask)
            out.append(("cross_entropy", body, expected))
        else:
            body = {"student_logits": student.tolist(), "teacher_logits": teacher.tolist(), "temperature": T, "reduction": "sum"}
            expected = distill.bce(student, teacher_logits=teacher, temperature=T, reduction="sum")
            out.append(("bce", body, expected))
    return out


async def post_all(settings: Settings, requests: list[tuple[str, dict[str, Any]]]) -> tuple[list[httpx.Response], str]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*(client.post(f"/v1/{route}", json=body) for route, body in requests))
        metrics = (await client.get("/metrics")).text
    return list(responses), metrics


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_distinct_requests_get_their_solo_answers(batching):
    cases = mixed_requests(36)
    settings = Settings(device="cpu", batching=batching, max_wait_ms=20)
    responses, metrics = asyncio.run(post_all(settings, [(route, body) for route, body, _ in cases]))
    for response, (_, _, expected) in zip(responses, cases, strict=True):
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6, abs=1e-7)
        assert answer["normalizer"] == expected.normalizer
        assert_close(torch.tensor(answer["grad"]), expected.grad, torch.float32)
    batch_sizes = [line for line in metrics.splitlines() if line.startswith("distill_batch_requests_count")]
    batches = float(batch_sizes[0].split()[-1])
    assert batches < 36 if batching else batches == 36


def test_request_failing_inside_a_group_fails_alone():
    cases = mixed_requests(9)
    assert any(route == "kl_div" and body["temperature"] == 1.0 for route, body, _ in cases)  # the bad request's group
    bad_student = torch.randn(2, 2, 16)
    bad_student[1, 0, 3] = float("-inf")
    bad = (
        "kl_div",
        {
            "student_logits": binary(bad_student),
            "teacher_logits": torch.randn(2, 2, 16).tolist(),
            "temperature": 1.0,
            "response_encoding": "json",
        },
    )
    requests = [(route, body) for route, body, _ in cases[:4]] + [bad] + [(route, body) for route, body, _ in cases[4:]]
    responses, metrics = asyncio.run(post_all(Settings(device="cpu", max_wait_ms=20), requests))
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 4 + [422] + [200] * 5
    assert responses[4].json()["field"] == "student_logits" and responses[4].json()["index"] == [1, 0, 3]
    assert "distill_batch_requests_bucket" in metrics


def test_full_queue_is_503_with_retry_after():
    with make_client(device="cpu", max_queue=1) as client:
        batcher = client.app.state.runtime.batcher
        release, started = threading.Event(), threading.Event()
        batcher.submit(lambda: (started.set(), release.wait(10)))
        started.wait(10)
        queued = batcher.submit(lambda: None)
        try:
            response = client.post("/v1/kl_div", json={"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.0, 1.0]]})
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1" and response.json()["title"] == "Service overloaded"
        finally:
            release.set()
        queued.result(10)
        assert client.post("/v1/kl_div", json={"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.0, 1.0]]}).status_code == 200


def test_metrics_count_requests_by_route_and_status(client):
    client.post("/v1/kl_div", json={"student_logits": [[1.0, 2.0]], "teacher_logits": [[0.0, 1.0]]})
    client.post("/v1/kl_div", json={"student_logits": [[1.0, 2.0]]})
    text = client.get("/metrics").text
    assert 'distill_requests_total{method="POST",route="/v1/kl_div",status="200"}' in text
    assert 'distill_requests_total{method="POST",route="/v1/kl_div",status="422"}' in text
    assert text.count('distill_requests_total{method="POST",route="/v1/kl_div",status="200"} 1.0') == 1
    for name in (
        "distill_request_seconds_bucket",
        "distill_queue_wait_seconds_bucket",
        "distill_batch_rows_bucket",
        "distill_queue_depth",
        'distill_device_info{device="cpu"}',
    ):
        assert name in text


def test_methods_outside_the_standard_ones_do_not_add_series(client):
    for method in ("FOO", "BAR1", "X" * 50):
        client.request(method, "/v1/kl_div")
    text = client.get("/metrics").text
    assert 'method="OTHER"' in text and "FOO" not in text and "BAR1" not in text
