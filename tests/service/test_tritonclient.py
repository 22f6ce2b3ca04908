"""NVIDIA's tritonclient drives a live server over the Open Inference Protocol, unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

import distill
from tests.live import live_server

httpclient = pytest.importorskip("tritonclient.http")
ml_dtypes = pytest.importorskip("ml_dtypes")
utils = pytest.importorskip("tritonclient.utils")

STUDENT = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], dtype=np.float32)
TEACHER = np.array([[1.5, 1.0, -0.5], [0.0, 0.0, 1.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def triton() -> Iterator[httpclient.InferenceServerClient]:
    with live_server() as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        yield client
        client.close()


def inputs(datatype: str, binary: bool, student: np.ndarray = STUDENT, teacher: np.ndarray = TEACHER) -> list[httpclient.InferInput]:
    made = []
    for name, values in (("student_logits", student), ("teacher_logits", teacher)):
        tensor = httpclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        made.append(tensor)
    return made


def test_health_and_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("kl_div")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    assert [tensor["name"] for tensor in triton.get_model_metadata("kl_div")["outputs"]] == ["loss", "grad", "loss_sum", "normalizer"]


@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (False, False), (True, False), (False, True)])
def test_float32_infer_matches_the_engine(triton: httpclient.InferenceServerClient, binary_in: bool, binary_out: bool) -> None:
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in ("loss", "grad", "loss_sum", "normalizer")]
    result = triton.infer("kl_div", inputs("FP32", binary_in), outputs=outputs, parameters={"temperature": 2.0}, request_id="r1")
    expected = distill.kl_div(torch.from_numpy(STUDENT), teacher_logits=torch.from_numpy(TEACHER), temperature=2.0)
    assert result.get_response()["id"] == "r1"
    assert result.as_numpy("loss")[0] == pytest.approx(float(expected.loss), rel=1e-6)
    assert result.as_numpy("loss_sum")[0] == pytest.approx(expected.loss_sum, rel=1e-6)
    assert result.as_numpy("normalizer")[0] == 2.0
    np.testing.assert_allclose(result.as_numpy("grad"), expected.grad.numpy(), rtol=1e-6, atol=1e-9)


def test_bfloat16_infer(triton: httpclient.InferenceServerClient) -> None:
    # tritonclient sends BF16 from ml_dtypes.bfloat16 arrays (binary only) and reads it back the same way.
    student = torch.from_numpy(STUDENT).bfloat16()
    teacher = torch.from_numpy(TEACHER).bfloat16()
    outputs = [httpclient.InferRequestedOutput("grad", binary_data=True), httpclient.InferRequestedOutput("loss", binary_data=False)]
    sent = [np.asarray(tensor.float().numpy(), dtype=ml_dtypes.bfloat16) for tensor in (student, teacher)]
    result = triton.infer("kl_div", inputs("BF16", True, *sent), outputs=outputs)
    expected = distill.kl_div(student, teacher_logits=teacher)
    grad = result.as_numpy("grad")
    np.testing.assert_array_equal(np.asarray(grad, dtype=np.float32), expected.grad.float().numpy())
    assert result.as_numpy("loss")[0] == pytest.approx(float(expected.loss), rel=1e-6)


def test_an_error_is_tritonclients_exception_naming_the_field(triton: httpclient.InferenceServerClient) -> None:
    with pytest.raises(utils.InferenceServerException) as raised:
        triton.infer("kl_div", inputs("FP32", True), parameters={"temperature": -1.0})
    assert raised.value.status() == "422"
    assert "temperature" in raised.value.message()
    with pytest.raises(utils.InferenceServerException) as raised:
        triton.infer("not_a_loss", inputs("FP32", True))
    assert raised.value.status() == "404"
