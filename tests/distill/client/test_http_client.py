"""The HTTP clients: retries on 503 and connection errors, problem details in exceptions, async."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import torch

import distill
from distill.client import AsyncDistillClient, DistillClient, ServiceError
from tests.live import live_server
from tests.tolerances import assert_close

STUDENT = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
TEACHER = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
LABELS = torch.tensor([0, 4, 2])
ANSWER = {"loss": 0.5, "grad": [[0.0] * 5] * 3, "loss_sum": 1.5, "normalizer": 3.0, "reduction": "batchmean"}


def flaky(failures: list[object]) -> httpx.MockTransport:
    """A transport that fails as listed (a status code or an exception), then answers."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(int(failure), headers={"retry-after": "0"}, json={"title": "Service overloaded", "status": failure})
        return httpx.Response(200, json=ANSWER)

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


def test_retries_503_then_succeeds():
    transport = flaky([503, 503])
    with DistillClient("http://service", transport=transport, backoff=0.001) as client:
        result = client.kl_div(STUDENT, teacher_logits=TEACHER)
    assert float(result.loss) == 0.5 and len(transport.seen) == 3


def test_retries_connection_errors():
    transport = flaky([httpx.ConnectError("refused")])
    with DistillClient("http://service", transport=transport, backoff=0.001) as client:
        assert client.kl_div(STUDENT, teacher_logits=TEACHER).normalizer == 3.0


def test_gives_up_after_the_retry_budget():
    transport = flaky([503, 503, 503])
    with DistillClient("http://service", transport=transport, retries=2, backoff=0.001) as client, pytest.raises(ServiceError) as error:
        client.kl_div(STUDENT, teacher_logits=TEACHER)
    assert error.value.status == 503 and len(transport.seen) == 3


def test_api_key_is_sent_as_bearer():
    transport = flaky([])
    with DistillClient("http://service", api_key="k3y", transport=transport) as client:
        client.kl_div(STUDENT, teacher_logits=TEACHER)
    assert transport.seen[0].headers["authorization"] == "Bearer k3y"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server() as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["base64", "json"])
def test_results_match_the_engine(server, encoding):
    with DistillClient(server, encoding=encoding) as client:
        result = client.cross_entropy(STUDENT, labels=torch.tensor([0, 4, 2]), label_smoothing=0.2)
        expected = distill.cross_entropy(STUDENT, labels=torch.tensor([0, 4, 2]), label_smoothing=0.2)
        assert_close(result.loss, expected.loss, torch.float32)
        assert_close(result.grad, expected.grad, torch.float32)
        assert client.info()["losses"] == [*distill.LOSSES, "distill"]


@pytest.mark.slow
@pytest.mark.parametrize("encoding", ["base64", "json"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_combined_objective_in_either_encoding(server, encoding, dtype):
    student, teacher = STUDENT.to(dtype), TEACHER.to(dtype)
    terms = [
        distill.Term("kl_div", 0.5, {"teacher_logits": teacher, "temperature": 2.0}),
        distill.Term("cross_entropy", 0.5, {"labels": LABELS}),
    ]
    with DistillClient(server, encoding=encoding) as client:
        result = client.distill(student, terms)
    expected = distill.distill(student, terms)
    assert result.grad is not None and result.grad.dtype == dtype
    assert_close(result.loss, expected.loss, dtype)
    assert_close(result.grad, expected.grad, dtype)


@pytest.mark.slow
def test_problem_details_surface_in_exceptions(server):
    with DistillClient(server) as client, pytest.raises(ServiceError) as error:
        client.cross_entropy(STUDENT, labels=torch.tensor([0, 9, 2]))
    assert error.value.status == 422 and error.value.field == "labels"
    assert error.value.problem["index"] == [1] and "must be in [0, 5)" in error.value.detail


@pytest.mark.slow
def test_async_client(server):
    async def run() -> list[distill.LossResult]:
        async with AsyncDistillClient(server) as client:
            return await asyncio.gather(*(client.kl_div(STUDENT, teacher_logits=TEACHER, temperature=t) for t in (1.0, 2.0, 4.0)))

    for result, temperature in zip(asyncio.run(run()), (1.0, 2.0, 4.0), strict=True):
        expected = distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=temperature)
        assert_close(result.grad, expected.grad, torch.float32)


def test_lists_and_arrays_are_sent_as_tensors():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        if request.url.path == "/v1/distill":
            return httpx.Response(200, json={"loss": 0.5, "grad": [[0.0, 0.0]], "terms": []})
        return httpx.Response(200, json={**ANSWER, "grad": [[0.0, 0.0]]})

    with DistillClient("http://service", transport=httpx.MockTransport(handler)) as client:
        result = client.kl_div([[1.0, 2.0]], teacher_logits=TEACHER[:1, :2].numpy(), mask=[True])
        assert result.grad is not None and result.grad.dtype == torch.float32 and result.grad.shape == (1, 2)
        client.distill([[1.0, 2.0]], [distill.Term.kl_div(teacher_logits=TEACHER[:1, :2])], mask=[True])
    assert seen[0]["student_logits"]["dtype"] == "float32" and seen[0]["mask"]["dtype"] == "bool"
    assert seen[1]["student_logits"]["shape"] == [1, 2]
