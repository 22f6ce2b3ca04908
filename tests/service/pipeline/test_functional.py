"""/v1/functional/<name>: torch.nn.functional's loss family over HTTP, as the engine computes it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from distill import functional
from tests.distill.test_functional import _cases
from tests.service.conftest import binary, from_binary


def as_json(value: Any) -> Any:
    return value.tolist() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("name", list(functional.FUNCTIONS))
def test_every_function_answers_what_the_engine_computes(client: TestClient, name: str) -> None:
    generator = torch.Generator().manual_seed(7)
    for tensors, options in _cases(generator, 4, 5, torch.float64)[name]:
        for reduction in functional.FUNCTIONS[name].reductions:
            body = {**{key: binary(value) for key, value in tensors.items()}, **options, "reduction": reduction}
            response = client.post(f"/v1/functional/{name}", json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            expected = functional.compute(name, **tensors, **options, reduction=reduction)
            assert answer["reduction"] == reduction and answer["normalizer"] == expected.normalizer
            assert answer["loss_sum"] == pytest.approx(expected.loss_sum, rel=1e-12, abs=1e-300)
            loss = from_binary(answer["loss"]) if isinstance(answer["loss"], dict) else torch.tensor(answer["loss"], dtype=torch.float64)
            torch.testing.assert_close(loss, expected.loss, rtol=1e-12, atol=0)
            assert set(answer["grads"]) == set(expected.grads)
            for key, gradient in expected.grads.items():
                assert torch.equal(from_binary(answer["grads"][key]), gradient)


def test_the_seed_documents_example_and_scalars_as_bare_numbers(client: TestClient) -> None:
    answer = client.post("/v1/functional/multilabel_margin_loss", json={"input": [[0.1, 0.2, 0.4, 0.8]], "target": [[3, 0, -1, 1]]}).json()
    assert answer["loss"] == pytest.approx(0.85) and answer["grads"]["input"] == [[-0.5, 0.5, 0.5, -0.5]]
    answer = client.post("/v1/functional/margin_ranking_loss", json={"input1": 0.5, "input2": 0.2, "target": -1, "margin": 0.1}).json()
    assert answer["loss"] == pytest.approx(0.4) and answer["grads"] == {"input1": 1.0, "input2": -1.0}


def test_legacy_flags_are_mapped_and_the_answer_says_so(client: TestClient) -> None:
    body = {"input": [[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]], "target": [1, 2]}
    assert client.post("/v1/functional/cross_entropy", json={**body, "size_average": False}).json()["reduction"] == "sum"
    assert client.post("/v1/functional/cross_entropy", json={**body, "reduce": False, "reduction": "sum"}).json()["reduction"] == "none"
    probabilities = {"input": body["input"], "target": [[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]]}
    expected = functional.cross_entropy(torch.tensor(probabilities["input"]), torch.tensor(probabilities["target"]))
    assert client.post("/v1/functional/cross_entropy", json=probabilities).json()["loss"] == pytest.approx(float(expected.loss), rel=1e-6)


def test_grad_wrt_narrows_and_names_only_differentiable_arguments(client: TestClient) -> None:
    body = {"anchor": [[1.0, 2.0]], "positive": [[1.5, 2.0]], "negative": [[0.0, 0.0]]}
    answer = client.post("/v1/functional/triplet_margin_loss", json={**body, "grad_wrt": ["negative"]}).json()
    assert set(answer["grads"]) == {"negative"}
    response = client.post("/v1/functional/mse_loss", json={"input": [1.0], "target": [2.0], "grad_wrt": ["target"]})
    assert response.status_code == 422 and response.json()["field"] == "grad_wrt.0"


@pytest.mark.parametrize(
    ("name", "body", "status", "field"),
    [
        ("nll_loss", {"input": [[0.1, 0.2, 0.3]], "target": [5]}, 422, "target"),
        ("mse_loss", {"input": [[1.0, 2.0]], "target": [[1.0, 2.0, 3.0]]}, 422, "input"),
        ("binary_cross_entropy", {"input": [2.0], "target": [1.0]}, 422, "input"),
        ("mse_loss", {"input": [1.0]}, 422, "target"),
        ("mse_loss", {"input": [[1.0]] * 6000, "target": [[1.0] * 6000]}, 413, "input"),
        ("multilabel_margin_loss", {"input": [[0.0] * 40000], "target": [[0] * 40000]}, 413, "input"),
        ("kl_div", {"input": [0.1], "target": [0.2], "reduction": "average"}, 422, "reduction"),
        ("cosine_embedding_loss", {"input1": [[0.5]] * 6000, "input2": [[0.5] * 6000], "target": [1.0]}, 413, "input1"),
        ("gaussian_nll_loss", {"input": [[0.5]] * 6000, "target": [[0.5] * 6001], "var": [1.0] * 6000}, 413, "input"),
        ("nll_loss", {"input": [[0.1, 0.2, 0.3]], "target": [1], "weight": [1.0, 0.0, 1.0]}, 422, "weight"),
        ("huber_loss", {"input": [1.0], "target": [2.0], "delta": 0.0}, 422, "delta"),
        ("gaussian_nll_loss", {"input": [1.0, 2.0], "target": [3.0, 1.0], "var": 0.5, "grad_wrt": ["var"]}, 422, "grad_wrt"),
    ],
)
def test_what_pytorch_rejects_or_outgrows_the_request_names_the_field(
    client: TestClient, name: str, body: dict[str, Any], status: int, field: str
) -> None:
    response = client.post(f"/v1/functional/{name}", json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field


def test_every_target_ignored_answers_zero_over_zero(client: TestClient) -> None:
    answer = client.post("/v1/functional/cross_entropy", json={"input": [[1.0, 2.0]], "target": [-100]}).json()
    assert answer["loss"] == 0.0 and answer["normalizer"] == 0.0 and answer["grads"]["input"] == [[0.0, 0.0]]


def test_a_per_row_variance_is_not_taken_for_a_broadcast(client: TestClient) -> None:
    # gaussian_nll_loss reads a var of the input's leading shape as one variance per row.
    body = {"input": [[0.5, 1.0]] * 5000, "target": [[0.0, 1.0]] * 5000, "var": [1.0] * 5000}
    assert client.post("/v1/functional/gaussian_nll_loss", json=body).status_code == 200


@pytest.mark.parametrize("encoding", ["json", "values"])
def test_a_reduced_float32_loss_is_written_in_full_as_v1_losses_write_it(client: TestClient, encoding: str) -> None:
    body = {"input": [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], "target": [0, 2], "response_encoding": encoding}
    answer = client.post("/v1/functional/cross_entropy", json=body).json()
    expected = functional.compute("cross_entropy", input=torch.tensor(body["input"]), target=torch.tensor(body["target"]))
    assert answer["loss"] == float(expected.loss)  # the float32 value as a double, not its shortest float32 text
    assert (
        answer["loss"] == client.post("/v1/cross_entropy", json={"student_logits": body["input"], "labels": body["target"]}).json()["loss"]
    )
