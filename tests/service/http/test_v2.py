"""The Open Inference Protocol v2 routes: metadata, health, infer in JSON and binary, and errors in the protocol's shape."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import distill
from distill import LOSSES
from service.codec.oip import header_length
from service.errors import InvalidRequest
from tests.service.conftest import make_client

STUDENT = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
TEACHER = torch.tensor([[1.5, 1.0, -0.5], [0.0, 0.0, 1.0]])
NUMPY_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64}


def json_input(name: str, tensor: torch.Tensor, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": list(tensor.shape), "datatype": datatype, "data": tensor.reshape(-1).tolist()}


def binary_request(inputs: list[tuple[str, torch.Tensor, str]], **header: Any) -> tuple[bytes, dict[str, str]]:
    """A hand-built binary infer request: the JSON header, then each input's raw little-endian bytes."""
    sections = [
        tensor.view(torch.int16).numpy().tobytes() if datatype == "BF16" else tensor.numpy().tobytes() for _, tensor, datatype in inputs
    ]
    described = [
        {"name": name, "shape": list(tensor.shape), "datatype": datatype, "parameters": {"binary_data_size": len(section)}}
        for (name, tensor, datatype), section in zip(inputs, sections, strict=True)
    ]
    head = json.dumps({"inputs": described, **header}).encode()
    return head + b"".join(sections), {"Inference-Header-Content-Length": str(len(head))}


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    """Each output's values, from JSON data or from the binary sections after the header."""
    length = response.headers.get("inference-header-content-length")
    header = json.loads(response.content[: int(length)] if length else response.content)
    offset = int(length or 0)
    values: dict[str, np.ndarray] = {}
    for output in header["outputs"]:
        dtype = NUMPY_DTYPES[output["datatype"]]
        if "data" in output:
            values[output["name"]] = np.array(output["data"], dtype=dtype).reshape(output["shape"])
        else:
            size = output["parameters"]["binary_data_size"]
            values[output["name"]] = np.frombuffer(response.content[offset : offset + size], dtype=dtype).reshape(output["shape"])
            offset += size
    assert offset == len(response.content) or not length
    return values


def test_server_metadata_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {"name": "distill", "version": distill.__version__, "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/kl_div/ready").json() == {"name": "kl_div", "ready": True}


@pytest.mark.parametrize("model", list(LOSSES))
def test_every_loss_is_a_model_with_its_tensor_fields_as_inputs(client: TestClient, model: str) -> None:
    metadata = client.get(f"/v2/models/{model}").json()
    assert metadata["name"] == model and metadata["versions"] == ["1"]
    names = [item["name"] for item in metadata["inputs"]]
    assert names == [tensor.name for tensor in LOSSES[model].inputs] + ["mask"]
    assert [item["name"] for item in metadata["outputs"]] == ["loss", "grad", "loss_sum", "normalizer"]


def test_json_infer_matches_the_engine_and_echoes_the_id(client: TestClient) -> None:
    body = {
        "id": "step-7",
        "parameters": {"temperature": 2.0},
        "inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)],
    }
    response = client.post("/v2/models/kl_div/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "step-7" and response.json()["model_name"] == "kl_div"
    expected = distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=2.0)
    values = outputs_of(response)
    assert values["loss"].shape == (1,) and values["loss"][0] == pytest.approx(float(expected.loss), rel=1e-6)
    assert values["loss_sum"][0] == pytest.approx(expected.loss_sum, rel=1e-6) and values["normalizer"][0] == expected.normalizer
    np.testing.assert_allclose(values["grad"], expected.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_binary_infer_both_ways_without_a_content_type(client: TestClient) -> None:
    content, headers = binary_request(
        [("student_logits", STUDENT, "FP32"), ("labels", torch.tensor([0, 2]), "INT64")], parameters={"binary_data_output": True}
    )
    response = client.post("/v2/models/cross_entropy/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    expected = distill.cross_entropy(STUDENT, labels=torch.tensor([0, 2]))
    values = outputs_of(response)
    assert values["loss"][0] == pytest.approx(float(expected.loss), rel=1e-6)
    np.testing.assert_array_equal(values["grad"], expected.grad.numpy())


def test_bfloat16_inputs_give_a_bfloat16_gradient(client: TestClient) -> None:
    student, teacher = STUDENT.bfloat16(), TEACHER.bfloat16()
    content, headers = binary_request(
        [("student_logits", student, "BF16"), ("teacher_logits", teacher, "BF16")],
        parameters={"temperature": 2.0},
        outputs=[{"name": "grad", "parameters": {"binary_data": True}}, {"name": "loss"}],
    )
    response = client.post("/v2/models/kl_div/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    header = json.loads(response.content[: int(response.headers["inference-header-content-length"])])
    assert [(output["name"], output["datatype"]) for output in header["outputs"]] == [("grad", "BF16"), ("loss", "FP64")]
    raw = response.content[int(response.headers["inference-header-content-length"]) :]
    grad = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(2, 3)
    expected = distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
    assert torch.equal(grad, expected.grad)
    assert header["outputs"][1]["data"][0] == pytest.approx(float(expected.loss), rel=1e-6)


def test_v2_and_v1_answer_alike(client: TestClient) -> None:
    v1 = client.post("/v1/jsd", json={"student_logits": STUDENT.tolist(), "teacher_logits": TEACHER.tolist(), "beta": 0.3}).json()
    body = {"parameters": {"beta": 0.3}, "inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)]}
    values = outputs_of(client.post("/v2/models/jsd/infer", json=body))
    assert values["loss"][0] == v1["loss"] and values["loss_sum"][0] == v1["loss_sum"]
    np.testing.assert_array_equal(values["grad"], np.array(v1["grad"], dtype=np.float32))


def test_reduction_none_returns_the_elements_and_masks_and_nested_data_are_read(client: TestClient) -> None:
    body = {
        "parameters": {"reduction": "none", "compute_grad": False},
        "inputs": [
            {"name": "student_logits", "shape": [2, 3], "datatype": "FP64", "data": STUDENT.double().tolist()},
            {"name": "labels", "shape": [2], "datatype": "INT32", "data": [1, 0]},
            {"name": "mask", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        ],
    }
    response = client.post("/v2/models/cross_entropy/infer", json=body)
    assert response.status_code == 200, response.text
    values = outputs_of(response)
    assert "grad" not in values
    expected = distill.cross_entropy(STUDENT.double(), labels=torch.tensor([1, 0]), mask=torch.tensor([True, False]), reduction="none")
    np.testing.assert_array_equal(values["loss"], expected.loss.numpy())


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"inputs": [json_input("student_logits", STUDENT)]}, 422, "teacher"),
        ({"inputs": [json_input("student_logits", STUDENT), json_input("teacher", TEACHER)]}, 422, "has no input 'teacher'"),
        ({"inputs": [json_input("student_logits", STUDENT), json_input("student_logits", STUDENT)]}, 422, "given twice"),
        (
            {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)], "parameters": {"temperature": 0}},
            422,
            "temperature",
        ),
        (
            {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)], "parameters": {"tau": 1}},
            422,
            "no parameter 'tau'",
        ),
        (
            {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)], "outputs": [{"name": "logits"}]},
            422,
            "no output",
        ),
        ({"inputs": [{"name": "student_logits", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}]}, 422, "holds 2 values"),
        ({"inputs": [{"name": "student_logits", "shape": [2, 3], "datatype": "STRING", "data": []}]}, 422, "inputs.0.datatype: "),
        ({"inputs": [{"name": "student_logits", "shape": [2, 3.5], "datatype": "FP32", "data": []}]}, 422, "inputs.0.shape: "),
        ({"inputs": [json_input("student_logits", STUDENT), json_input("teacher_probs", TEACHER)]}, 422, "teacher_probs[0, 0]: "),
        ({"inputs": []}, 422, "inputs"),
        (
            {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", torch.ones(2, 3, dtype=torch.int64), "INT64")]},
            422,
            "inputs.1.datatype: ",
        ),
        ({"inputs": [{"name": "student_logits", "shape": [1], "datatype": "FP16", "data": [70000]}]}, 422, "beyond FP16's range"),
        (
            {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)], "outputs": [{"name": "grad"}] * 2},
            422,
            "outputs.1.name: output 'grad' is asked for twice",
        ),
        ({"inputs": [{"name": "student_logits", "shape": [1 << 40], "datatype": "FP32", "data": []}]}, 413, "exceeds the limit"),
    ],
)
def test_errors_are_the_protocols_error_object_naming_the_field(client: TestClient, body: dict[str, Any], status: int, words: str) -> None:
    response = client.post("/v2/models/kl_div/infer", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"} and words in response.json()["error"]


def test_binary_sections_must_add_up(client: TestClient) -> None:
    content, headers = binary_request([("student_logits", STUDENT, "FP32"), ("teacher_logits", TEACHER, "FP32")])
    for body, header, words in [
        (content[:-4], headers, "bytes of binary data"),
        (content + b"\0\0\0\0", headers, "after the inputs"),
        (content, {"Inference-Header-Content-Length": str(len(content) + 1)}, "Inference-Header-Content-Length"),
        (content, {"Inference-Header-Content-Length": "12"}, ""),
    ]:
        response = client.post("/v2/models/kl_div/infer", content=body, headers=header)
        assert response.status_code in (400, 422), response.text
        assert words in response.json()["error"]


def test_unknown_models_versions_and_media_types(client: TestClient) -> None:
    assert client.get("/v2/models/nope").status_code == 404
    assert "no model named 'nope'" in client.get("/v2/models/nope/ready").json()["error"]
    body = {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER)]}
    assert client.post("/v2/models/kl_div/versions/1/infer", json=body).status_code == 200
    assert client.post("/v2/models/kl_div/versions/2/infer", json=body).status_code == 404
    assert client.get("/v2/models/kl_div/versions/1").json()["name"] == "kl_div"
    assert client.get("/v2/models/kl_div/versions/1/ready").json() == {"name": "kl_div", "ready": True}
    assert client.get("/v2/models/kl_div/versions/3/ready").status_code == 404
    response = client.post("/v2/models/kl_div/infer", content=b"{}", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "error" in response.json()


def test_the_api_key_guards_v2_but_not_its_health() -> None:
    with make_client(device="cpu", api_key="sesame") as keyed:
        assert keyed.get("/v2/health/live").status_code == 200
        assert keyed.get("/v2/health/ready").status_code == 200
        assert keyed.get("/v2/models/kl_div").status_code == 401
        assert keyed.get("/v2/models/kl_div", headers={"Authorization": "Bearer sesame"}).status_code == 200


@pytest.mark.parametrize(
    ("datatype", "labels", "words"), [("INT32", [2**32 + 2, 0], "outside INT32's range"), ("INT64", [2**53, 0], "2^53")]
)
def test_integers_never_wrap(client: TestClient, datatype: str, labels: list[int], words: str) -> None:
    body = {"inputs": [json_input("student_logits", STUDENT), {"name": "labels", "shape": [2], "datatype": datatype, "data": labels}]}
    response = client.post("/v2/models/cross_entropy/infer", json=body)
    assert response.status_code == 422 and response.json()["error"].startswith("inputs.1.data: ") and words in response.json()["error"]


def test_a_uint8_mask_is_a_mask(client: TestClient) -> None:
    mask = {"name": "mask", "shape": [2], "datatype": "UINT8", "data": [1, 0]}
    body = {"inputs": [json_input("student_logits", STUDENT), json_input("teacher_logits", TEACHER), mask]}
    expected = distill.kl_div(STUDENT, teacher_logits=TEACHER, mask=torch.tensor([True, False]))
    assert outputs_of(client.post("/v2/models/kl_div/infer", json=body))["loss"][0] == pytest.approx(float(expected.loss), rel=1e-6)


def test_header_lengths_are_ascii_digits_within_the_body(client: TestClient) -> None:
    for value in ("\u00b2", "-1", "x", "99999"):
        with pytest.raises(InvalidRequest):
            header_length(value, 100)
    response = client.post("/v2/models/kl_div/infer", content=b"\xff\x00", headers={"content-type": "application/octet-stream"})
    assert response.status_code == 400 and "needs the Inference-Header-Content-Length header" in response.json()["error"]


def test_the_functional_family_is_served_as_models(client: TestClient) -> None:
    metadata = client.get("/v2/models/functional.triplet_margin_loss").json()
    assert [item["name"] for item in metadata["inputs"]] == ["anchor", "positive", "negative"]
    assert [item["name"] for item in metadata["outputs"]] == [
        "loss",
        "grads.anchor",
        "grads.positive",
        "grads.negative",
        "loss_sum",
        "normalizer",
    ]
    anchor, positive, negative = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    content, headers = binary_request(
        [("anchor", anchor, "FP32"), ("positive", positive, "FP32"), ("negative", negative, "FP32")],
        parameters={"margin": 0.5, "size_average": False},
        outputs=[{"name": "loss"}, {"name": "grads.negative", "parameters": {"binary_data": True}}],
    )
    response = client.post("/v2/models/functional.triplet_margin_loss/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    values = outputs_of(response)
    assert set(values) == {"loss", "grads.negative"}
    expected = distill.functional.triplet_margin_loss(anchor, positive, negative, margin=0.5, size_average=False)
    assert values["loss"][0] == pytest.approx(float(expected.loss), rel=1e-6)
    np.testing.assert_array_equal(values["grads.negative"], expected.grads["negative"].numpy())
    body = {"inputs": [json_input("input", STUDENT), {"name": "target", "shape": [2], "datatype": "INT64", "data": [0, 2]}]}
    values = outputs_of(client.post("/v2/models/functional.cross_entropy/infer", json=body))
    assert set(values) == {"loss", "grads.input", "loss_sum", "normalizer"}
    assert values["loss"][0] == pytest.approx(float(distill.functional.cross_entropy(STUDENT, torch.tensor([0, 2])).loss), rel=1e-6)


def test_behind_a_root_path_errors_keep_each_protocols_shape() -> None:
    app = make_client(device="cpu").app
    with TestClient(app, root_path="/api", raise_server_exceptions=False) as prefixed:
        v2_error = prefixed.post("/api/v2/models/kl_div/infer", json={"inputs": []})
        assert v2_error.status_code == 422 and set(v2_error.json()) == {"error"}, v2_error.text
        v1_error = prefixed.post("/api/v1/kl_div", json={})
        assert v1_error.status_code == 422 and v1_error.headers["content-type"] == "application/problem+json"
