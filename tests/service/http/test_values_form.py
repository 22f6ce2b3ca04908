"""The ``{"shape", "values", "dtype"?}`` tensor form over HTTP: every route reads it, answers in it, and refuses it
when malformed with a problem naming the tensor.

Every test runs twice: with the compiled JSON reader and with simdjson alone (compiled code off, so the
engine's expected results are computed under the same switch).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from distill import LOSSES, functional, native, wire
from tests.distill.test_functional import _cases
from tests.service.conftest import binary, from_binary, make_client
from tests.service.distilbert import HIDDEN, LABELS, LOGITS, MASK, TEACHER, TEACHER_HIDDEN, body
from tests.service.distilbert import expected as distilbert_expected
from tests.tolerances import TOLERANCE, assert_close

SPECS = list(LOSSES.values())
IDS = [spec.name for spec in SPECS]
VALUES_KEYS = {"dtype", "shape", "values"}


@pytest.fixture(params=["compiled", "general"], autouse=True)
def reader(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every case twice: with the compiled JSON reader, and with simdjson alone (compiled code off)."""
    with native.switched(request.param == "compiled"):
        yield request.param


@pytest.fixture(scope="module")
def small() -> Iterator[TestClient]:
    with make_client(device="cpu", max_tensor_elements=10) as test_client:
        yield test_client


def values(tensor: torch.Tensor, dtype: str | bool = False) -> dict[str, Any]:
    """The values form of a tensor: its shape and flat row-major numbers, with its dtype if ``dtype``
    (True: the tensor's own; a name: that one)."""
    form: dict[str, Any] = {"shape": list(tensor.shape), "values": tensor.reshape(-1).tolist()}
    if dtype:
        form["dtype"] = dtype if isinstance(dtype, str) else wire.NAMES[tensor.dtype]
    return form


def from_values(value: Any) -> torch.Tensor:
    """A tensor from a values object of a response (checking that it is one)."""
    assert isinstance(value, dict) and set(value) == VALUES_KEYS, value
    dtype = wire.DTYPES[value["dtype"]]
    if dtype.is_floating_point:
        array = np.asarray(value["values"], dtype=np.float64)
        tensor = torch.from_numpy(array if dtype == torch.float64 else array.astype(np.float32)).to(dtype)
    else:
        tensor = torch.tensor(value["values"], dtype=dtype)
    assert tensor.numel() == math.prod(value["shape"])
    return tensor.reshape(value["shape"])


def from_any(value: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A response tensor in any encoding (nested lists read as ``dtype``)."""
    if isinstance(value, dict) and "values" in value:
        return from_values(value)
    if isinstance(value, dict):
        return from_binary(value)
    array = np.asarray(value, dtype=np.float64)
    return torch.from_numpy(array if dtype == torch.float64 else array.astype(np.float32)).to(dtype)


def same_bits(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    view = {8: torch.int64, 4: torch.int32, 2: torch.int16}[actual.element_size()]
    return torch.equal(actual.contiguous().view(view), expected.contiguous().view(view))


def post(client: TestClient, route: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post(f"/v1/{route}", json=body)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.headers["content-type"] == "application/json"
    else:
        assert response.headers["content-type"] == "application/problem+json"
    return response.json()


# --- every loss, as the engine computes it ----------------------------------------------------------------


#: How the tensors of a request are written: without dtype (floats take the request's float32), with their
#: own dtype (labels as int32), typed float64, or without dtype in a request whose dtype is float64 or float16.
VARIANTS = {
    "untyped": (torch.float32, lambda tensor: values(tensor), {}),
    "typed": (torch.float32, lambda tensor: values(tensor, "int32" if not tensor.is_floating_point() else True), {}),
    "typed_float64": (torch.float64, lambda tensor: values(tensor, True), {}),
    "request_float64": (torch.float64, lambda tensor: values(tensor), {"dtype": "float64"}),
    "request_float16": (torch.float16, lambda tensor: values(tensor), {"dtype": "float16"}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_every_loss_in_values_form_answers_what_the_engine_computes(client, spec, variant):
    dtype, encode, extra = VARIANTS[variant]
    student = torch.randn(3, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
    name = spec.students[0].name

    def cast(value: Any) -> Any:
        return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    for example in spec.examples(student):
        example = {key: cast(value) for key, value in example.items()}
        expected = spec.compute(**{name: student}, **example)
        body = {name: encode(student), **extra}
        body |= {key: encode(value) if isinstance(value, torch.Tensor) else value for key, value in example.items()}
        answer = post(client, spec.name, body)
        assert answer["loss"] == pytest.approx(float(expected.loss), rel=max(TOLERANCE[dtype], 1e-6))
        assert answer["grad"]["dtype"] == wire.NAMES[dtype] and answer["grad"]["shape"] == [3, 4]
        assert_close(from_values(answer["grad"]), expected.grad, dtype)


@pytest.mark.parametrize("spec", [spec for spec in SPECS if "none" in spec.reductions], ids=lambda spec: spec.name)
def test_reduction_none_returns_the_loss_as_a_values_object(client, spec):
    student = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(2))
    name = spec.students[0].name
    for example in spec.examples(student):
        example = example | {"reduction": "none"}
        expected = spec.compute(**{name: student}, **example)
        body = {name: values(student)} | {key: values(v) if isinstance(v, torch.Tensor) else v for key, v in example.items()}
        answer = post(client, spec.name, body)
        assert answer["reduction"] == "none"
        loss = from_values(answer["loss"])
        assert loss.shape == expected.loss.shape and answer["loss"]["dtype"] == "float32"
        assert_close(loss, expected.loss, torch.float32)
        assert_close(from_values(answer["grad"]), expected.grad, torch.float32)
        assert answer["loss_sum"] == pytest.approx(float(expected.loss_sum), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "mask",
    [
        lambda mask: values(mask),
        lambda mask: values(mask, "bool"),
        lambda mask: {"shape": list(mask.shape), "values": mask.to(torch.uint8).reshape(-1).tolist(), "dtype": "uint8"},
        lambda mask: {"shape": list(mask.shape), "values": [float(v) for v in mask.reshape(-1).tolist()], "dtype": "uint8"},
    ],
    ids=["untyped", "bool", "uint8", "uint8-as-floats"],
)
def test_a_mask_in_values_form_drops_its_rows(client, mask):
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 3, 5, generator=generator), torch.randn(2, 3, 5, generator=generator)
    rows = torch.tensor([[True, False, True], [False, True, True]])
    expected = LOSSES["kl_div"].compute(student, teacher_logits=teacher, temperature=2.0, mask=rows)
    body = {"student_logits": values(student), "teacher_logits": values(teacher), "temperature": 2.0, "mask": mask(rows)}
    answer = post(client, "kl_div", body)
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    grad = from_values(answer["grad"])
    assert_close(grad, expected.grad, torch.float32)
    assert not grad[~rows].any()


def test_values_response_is_the_base64_response_bit_for_bit(client):
    generator = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(8, 1000, generator=generator) * 5, torch.randn(8, 1000, generator=generator) * 5
    body = {"teacher_logits": binary(teacher), "temperature": 1.5, "reduction": "none"}
    answer = post(client, "kl_div", body | {"student_logits": values(student)})
    reference = post(client, "kl_div", body | {"student_logits": binary(student)})
    assert answer["loss_sum"] == reference["loss_sum"]
    assert same_bits(from_values(answer["grad"]), from_binary(reference["grad"]))
    assert same_bits(from_values(answer["loss"]), from_binary(reference["loss"]))


def test_a_large_values_body_decoded_off_the_event_loop(client):
    """Over 256 KiB the body is decoded on a codec thread."""
    generator = torch.Generator().manual_seed(5)
    student, teacher = torch.randn(64, 2000, generator=generator), torch.randn(64, 2000, generator=generator)
    body = {"student_logits": values(student, True), "teacher_logits": values(teacher), "temperature": 2.0}
    assert len(json.dumps(body)) > 256 << 10
    expected = LOSSES["kl_div"].compute(student, teacher_logits=teacher, temperature=2.0)
    answer = post(client, "kl_div", body)
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(from_values(answer["grad"]), expected.grad, torch.float32)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_students_answer_in_their_dtype(client, dtype):
    generator = torch.Generator().manual_seed(6)
    student = torch.randn(3, 6, generator=generator).to(wire.DTYPES[dtype])
    teacher = torch.randn(3, 6, generator=generator)
    expected = LOSSES["kl_div"].compute(student, teacher_logits=teacher)
    answer = post(client, "kl_div", {"student_logits": values(student, True), "teacher_logits": values(teacher)})
    assert answer["grad"]["dtype"] == dtype
    assert same_bits(from_values(answer["grad"]), expected.grad)
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)


# --- encodings of the answer ---------------------------------------------------------------------------------

SENT = {"values": lambda tensor: values(tensor), "base64": binary, "json": lambda tensor: tensor.tolist()}


@pytest.mark.parametrize("override", [None, "values", "base64", "json"])
@pytest.mark.parametrize("sent", list(SENT))
def test_the_answer_mirrors_the_student_unless_response_encoding_says(client, sent, override):
    generator = torch.Generator().manual_seed(7)
    student, teacher = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    reference = LOSSES["kl_div"].compute(student, teacher_logits=teacher)
    unreduced = LOSSES["kl_div"].compute(student, teacher_logits=teacher, reduction="none")
    body = {"student_logits": SENT[sent](student), "teacher_logits": values(teacher)}
    if override:
        body["response_encoding"] = override
    answer = post(client, "kl_div", body)
    encoding = override or sent
    grad = answer["grad"]
    if encoding == "values":
        assert set(grad) == VALUES_KEYS and grad["shape"] == [3, 5]
    elif encoding == "base64":
        assert set(grad) == {"dtype", "shape", "data"}
    else:
        assert isinstance(grad, list) and len(grad) == 3
    assert isinstance(answer["loss"], float)  # a reduced loss is a number in every encoding
    assert answer["loss"] == pytest.approx(float(reference.loss), rel=1e-6)
    assert_close(from_any(grad), reference.grad, torch.float32)
    none = post(client, "kl_div", body | {"reduction": "none"})
    if encoding == "values":
        assert set(none["loss"]) == VALUES_KEYS
    elif encoding == "json":
        assert isinstance(none["loss"], list)
    loss = from_any(none["loss"])
    assert loss.shape == (3, 5)
    assert_close(loss, unreduced.loss, torch.float32)


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        ({"student_logits": "values", "teacher_logits": "json", "mask": "base64"}, "values"),
        ({"student_logits": "values", "teacher_logits": "base64", "mask": "json"}, "values"),
        ({"student_logits": "json", "teacher_logits": "values", "mask": "values"}, "json"),
        ({"student_logits": "base64", "teacher_logits": "values", "mask": "values"}, "base64"),
    ],
)
def test_mixed_forms_in_one_request(client, body, encoding):
    generator = torch.Generator().manual_seed(8)
    student, teacher = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    mask = torch.tensor([True, False, True, True])
    expected = LOSSES["kl_div"].compute(student, teacher_logits=teacher, mask=mask)
    tensors = {"student_logits": student, "teacher_logits": teacher, "mask": mask}
    answer = post(client, "kl_div", {name: SENT[form](tensors[name]) for name, form in body.items()})
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    grad = answer["grad"]
    assert (set(grad) == VALUES_KEYS) if encoding == "values" else ("data" in grad) if encoding == "base64" else isinstance(grad, list)
    assert_close(from_any(grad), expected.grad, torch.float32)


def test_labels_in_values_form_with_a_nested_list_student(client):
    student = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    expected = LOSSES["cross_entropy"].compute(student, labels=torch.tensor([0, 2]))
    for labels in ({"shape": [2], "values": [0, 2]}, {"shape": [2], "values": [0.0, 2.0], "dtype": "int64"}):
        answer = post(client, "cross_entropy", {"student_logits": student.tolist(), "labels": labels})
        assert isinstance(answer["grad"], list)
        assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)


def test_generated_client_nulls_are_absent(client):
    student = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    teacher = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    expected = LOSSES["kl_div"].compute(student, teacher_logits=teacher)
    body = {
        "student_logits": {"dtype": None, "shape": [2, 3], "values": student.reshape(-1).tolist(), "data": None},
        "teacher_logits": {"dtype": "float32", "shape": [2, 3], "values": teacher.reshape(-1).tolist(), "data": None},
        "teacher_probs": None,
        "mask": None,
        "response_encoding": None,
    }
    answer = post(client, "kl_div", body)
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(from_values(answer["grad"]), expected.grad, torch.float32)
    binary_teacher = binary(teacher) | {"values": None}
    answer = post(client, "kl_div", body | {"teacher_logits": binary_teacher})
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)


# --- the combined objective -----------------------------------------------------------------------------------


def objective_body(logits: Any, hidden: Any) -> dict[str, Any]:
    """The objective with its students as given and every other tensor in the values form."""
    return body(logits, hidden, values(TEACHER), values(LABELS, True), values(TEACHER_HIDDEN, True), values(MASK)) | {"term_grads": True}


def test_the_objective_in_values_form_answers_what_the_engine_computes(client):
    answer = post(client, "distill", objective_body(values(LOGITS), values(HIDDEN, True)))
    expected = distilbert_expected(term_grads=True)
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert answer["grad"]["shape"] == [2, 3, 7]
    assert_close(from_values(answer["grad"]), expected.grad, torch.float32)
    assert set(answer["grads"]) == {"hidden"} and answer["grads"]["hidden"]["shape"] == [2, 3, 4]
    assert_close(from_values(answer["grads"]["hidden"]), expected.grads["hidden"], torch.float32)
    assert [term["name"] for term in answer["terms"]] == ["kl_div", "cross_entropy", "cosine_embedding_loss"]
    for term, reference in zip(answer["terms"], expected.terms, strict=True):
        assert term["loss"] == pytest.approx(float(reference.result.loss), rel=1e-6)
        assert_close(from_values(term["grad"]), reference.result.grad, torch.float32)


@pytest.mark.parametrize(
    ("logits", "hidden", "override", "encodings"),
    [
        ("json", "values", None, ("json", "values")),
        ("values", "json", None, ("values", "json")),
        ("values", "base64", None, ("values", "base64")),
        ("json", "values", "base64", ("base64", "base64")),
        ("json", "json", "values", ("values", "values")),
        ("values", "values", "json", ("json", "json")),
    ],
)
def test_each_objective_gradient_mirrors_its_own_tensor(  # a term's own gradient too: its student's encoding
    client, logits, hidden, override, encodings
):
    body = objective_body(SENT[logits](LOGITS), SENT[hidden](HIDDEN)) | ({"response_encoding": override} if override else {})
    answer = post(client, "distill", body)
    expected = distilbert_expected(term_grads=True)
    for value, encoding, reference in (
        (answer["grad"], encodings[0], expected.grad),
        (answer["grads"]["hidden"], encodings[1], expected.grads["hidden"]),
        *(
            (term["grad"], encodings[term["student"] == "hidden"], reference.result.grad)
            for term, reference in zip(answer["terms"], expected.terms, strict=True)
        ),
    ):
        if encoding == "values":
            assert set(value) == VALUES_KEYS
        elif encoding == "base64":
            assert set(value) == {"dtype", "shape", "data"}
        else:
            assert isinstance(value, list)
        assert_close(from_any(value), reference, torch.float32)


# --- the functional family -------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", [True, False], ids=["float64-typed", "untyped"])
@pytest.mark.parametrize("name", list(functional.FUNCTIONS))
def test_every_function_in_values_form_answers_what_the_engine_computes(client, name, typed):
    dtype = torch.float64 if typed else torch.float32
    for tensors, options in _cases(torch.Generator().manual_seed(7), 4, 5, torch.float64)[name]:
        tensors = {key: value.to(dtype) if value.is_floating_point() else value for key, value in tensors.items()}
        for reduction in functional.FUNCTIONS[name].reductions:
            body = {**{key: values(value, typed) for key, value in tensors.items()}, **options, "reduction": reduction}
            answer = post(client, f"functional/{name}", body)
            expected = functional.compute(name, **tensors, **options, reduction=reduction)
            assert answer["reduction"] == reduction and answer["normalizer"] == expected.normalizer
            if reduction == "none":
                loss = from_values(answer["loss"])
                assert loss.dtype == expected.loss.dtype
            else:
                assert isinstance(answer["loss"], float)  # a reduced loss is a number in a values answer
                loss = torch.tensor(answer["loss"], dtype=torch.float64)
            assert_close(loss, expected.loss, dtype)
            assert set(answer["grads"]) == set(expected.grads)
            for key, gradient in expected.grads.items():
                assert answer["grads"][key]["shape"] == list(gradient.shape)
                assert_close(from_values(answer["grads"][key]), gradient, dtype)


def test_mse_loss_in_values_form(client):
    body = {"input": {"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]}, "target": {"shape": [2, 2], "values": [0.0, 2.0, 3.0, 6.0]}}
    answer = post(client, "functional/mse_loss", body)
    assert answer["loss"] == pytest.approx(1.25) and answer["loss_sum"] == pytest.approx(5.0) and answer["normalizer"] == 4.0
    assert answer["grads"] == {"input": {"dtype": "float32", "shape": [2, 2], "values": [0.5, 0.0, 0.0, -1.0]}}
    none = post(client, "functional/mse_loss", body | {"reduction": "none"})
    assert none["loss"] == {"dtype": "float32", "shape": [2, 2], "values": [1.0, 0.0, 0.0, 4.0]}
    as_base64 = post(client, "functional/mse_loss", body | {"response_encoding": "base64"})
    assert torch.equal(from_binary(as_base64["loss"]), torch.tensor(1.25))  # a 0-d tensor object in base64
    as_json = post(client, "functional/mse_loss", body | {"response_encoding": "json"})
    assert as_json["loss"] == 1.25 and as_json["grads"]["input"] == [[0.5, 0.0], [0.0, -1.0]]


def test_cross_entropy_class_indices_as_whole_floats_typed_int64(client):
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]])
    expected = functional.cross_entropy(logits, torch.tensor([0, 2]))
    body = {"input": values(logits), "target": {"shape": [2], "values": [0.0, 2.0], "dtype": "int64"}}
    answer = post(client, "functional/cross_entropy", body)
    assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert_close(from_values(answer["grads"]["input"]), expected.grads["input"], torch.float32)
    assert set(answer["grads"]) == {"input"}  # class indices have no gradient
    untyped = post(client, "functional/cross_entropy", body | {"target": {"shape": [2], "values": [0, 2]}})
    assert untyped["loss"] == answer["loss"]


def test_cross_entropy_probabilities_in_values_form(client):
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]])
    target = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    expected = functional.cross_entropy(logits, target)
    for form in (values(target), values(target, "float32"), values(target.double(), True)):
        answer = post(client, "functional/cross_entropy", {"input": values(logits), "target": form})
        assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
        assert set(answer["grads"]) == set(expected.grads)
        assert_close(from_values(answer["grads"]["input"]), expected.grads["input"], torch.float32)


def test_whole_float_targets_without_dtype_are_probabilities_not_indices(client):
    logits = {"shape": [2, 3], "values": [1.0, 2.0, 3.0, 0.5, 0.1, -1.0]}
    problem = post(client, "functional/cross_entropy", {"input": logits, "target": {"shape": [2], "values": [0.0, 2.0]}}, 422)
    assert problem["field"] == "target"


def test_0d_tensors_in_values_form(client):
    body = {"input1": {"shape": [], "values": [0.5]}, "input2": {"shape": [], "values": [0.2]}, "target": {"shape": [], "values": [-1.0]}}
    answer = post(client, "functional/margin_ranking_loss", body | {"margin": 0.1})
    assert answer["loss"] == pytest.approx(0.4)
    assert answer["grads"] == {
        "input1": {"dtype": "float32", "shape": [], "values": [1.0]},
        "input2": {"dtype": "float32", "shape": [], "values": [-1.0]},
    }
    none = post(client, "functional/margin_ranking_loss", body | {"margin": 0.1, "reduction": "none"})
    assert none["loss"]["shape"] == [] and none["loss"]["values"] == [pytest.approx(0.4)]
    as_json = post(client, "functional/margin_ranking_loss", body | {"margin": 0.1, "response_encoding": "json"})
    assert as_json["grads"] == {"input1": 1.0, "input2": -1.0}
    mixed = post(client, "functional/mse_loss", {"input": {"shape": [], "values": [1.0]}, "target": 3.0})
    assert mixed["loss"] == 4.0 and mixed["grads"]["input"] == {"dtype": "float32", "shape": [], "values": [-4.0]}


def test_functional_answers_mirror_the_first_tensor(client):
    answer = post(client, "functional/mse_loss", {"input": [1.0, 2.0], "target": {"shape": [2], "values": [3.0, 3.0]}})
    assert answer["grads"] == {"input": [-2.0, -1.0]}
    answer = post(client, "functional/mse_loss", {"input": {"shape": [2], "values": [1.0, 2.0]}, "target": [3.0, 3.0]})
    assert answer["grads"] == {"input": {"dtype": "float32", "shape": [2], "values": [-2.0, -1.0]}}
    answer = post(client, "functional/mse_loss", {"input": [1.0, 2.0], "target": [3.0, 3.0], "response_encoding": "values"})
    assert answer["loss"] == 2.5 and answer["grads"]["input"] == {"dtype": "float32", "shape": [2], "values": [-2.0, -1.0]}


# --- errors --------------------------------------------------------------------------------------------------

S = {"shape": [2, 3], "values": [1.0, 2.0, 3.0, 0.5, 0.1, -1.0]}
T = {"shape": [2, 3], "values": [0.0, 1.0, 2.0, 1.0, 1.0, 1.0]}
H = {"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]}
L = {"shape": [2], "values": [0, 2]}

#: Valid requests in values form, by name: (route, body). Each error case changes one tensor of one of them.
BASES: dict[str, tuple[str, dict[str, Any]]] = {
    "kl": ("kl_div", {"student_logits": S, "teacher_logits": T, "mask": {"shape": [2], "values": [True, True]}}),
    "ce": ("cross_entropy", {"student_logits": S, "labels": L}),
    "topk": (
        "kl_div",
        {
            "student_logits": S,
            "teacher_topk_indices": {"shape": [2, 1], "values": [0, 1]},
            "teacher_topk_log_probs": {"shape": [2, 1], "values": [-0.1, -0.2]},
            "missing_mass": "tail",
        },
    ),
    "objective": (
        "distill",
        {
            "student_logits": S,
            "student_features": {"hidden": H},
            "mask": {"shape": [2], "values": [True, True]},
            "terms": [
                {"loss": "kl_div", "teacher_logits": T},
                {"loss": "cross_entropy", "labels": L},
                {"loss": "mse_loss", "student": "hidden", "teacher": H},
            ],
        },
    ),
    "f.ce": ("functional/cross_entropy", {"input": S, "target": L}),
    "f.nll": ("functional/nll_loss", {"input": S, "target": L, "weight": {"shape": [3], "values": [1.0, 1.0, 1.0]}}),
    "f.mse": ("functional/mse_loss", {"input": {"shape": [], "values": [1.0]}, "target": {"shape": [], "values": [3.0]}}),
}


def changed(base: str, path: str, tensor: Any) -> tuple[str, dict[str, Any]]:
    """The route and body of ``base`` with the tensor at the dotted ``path`` replaced."""
    route, body = BASES[base]
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = tensor
    return route, body


def shaped(shape: Any, flat: Any, dtype: str | None = None) -> dict[str, Any]:
    return {"shape": shape, "values": flat} | ({"dtype": dtype} if dtype else {})


SIX = S["values"]
#: (id, base, the tensor's path, the tensor sent there, what the detail says)
ERRORS = [
    ("nested values", "kl", "student_logits", shaped([2, 3], [SIX[:3], SIX[3:]]), "flat list"),
    ("nested single row", "kl", "teacher_logits", shaped([1, 6], [SIX]), "flat list"),
    ("list for a number", "kl", "student_logits", shaped([2, 3], [*SIX[:5], [1.0]]), "a list where a number belongs"),
    ("too few values", "kl", "teacher_logits", shaped([2, 3], SIX[:5]), "values has 5 numbers; shape [2, 3] needs 6"),
    ("too many values", "kl", "student_logits", shaped([2, 3], [*SIX, 1.0]), "values has 7 numbers; shape [2, 3] needs 6"),
    ("values and data", "kl", "student_logits", S | {"dtype": "float32", "data": "AAAA"}, "values or data, not both"),
    ("no shape", "kl", "student_logits", {"values": SIX}, "a tensor object has shape and values (dtype optional)"),
    ("null shape", "kl", "student_logits", {"shape": None, "values": SIX}, "a tensor object has shape and values"),
    ("null values", "kl", "student_logits", {"shape": [2, 3], "values": None}, "a tensor object has shape and values"),
    ("unknown key", "kl", "student_logits", S | {"order": "C"}, "(unknown: ['order'])"),
    ("string value", "kl", "teacher_logits", shaped([2, 3], ["0.0", *SIX[1:]]), "only numbers"),
    ("boolean value", "kl", "student_logits", shaped([2, 3], [True, *SIX[1:]]), "only numbers"),
    ("typed boolean value", "kl", "student_logits", shaped([2, 3], [True, *SIX[1:]], "float32"), "only numbers"),
    ("null value", "kl", "student_logits", shaped([2, 3], [None, *SIX[1:]]), "only numbers"),
    ("object value", "kl", "student_logits", shaped([2, 3], [{}, *SIX[1:]]), "values must be a flat list of numbers"),
    ("object after a number", "kl", "student_logits", shaped([2, 3], [*SIX[:5], {}]), "only numbers"),
    ("values a number", "kl", "student_logits", shaped([], 1.0), "flat list of numbers (the shape goes in shape), got a number"),
    ("values a string", "kl", "student_logits", shaped([2, 3], "1 2 3 4 5 6"), "got a string"),
    ("values an object", "kl", "student_logits", shaped([2, 3], {"row0": SIX[:3]}), "got a JSON object"),
    ("negative dimension", "kl", "student_logits", shaped([-2, -3], SIX), "shape must be a list of at most 64 non-negative integers"),
    ("65 dimensions", "kl", "student_logits", shaped([1] * 65, [1.0]), "at most 64"),
    ("fractional dimension", "kl", "student_logits", shaped([2, 3.5], SIX), "non-negative integers"),
    ("boolean dimension", "kl", "student_logits", shaped([True, 6], SIX), "non-negative integers"),
    ("shape a string", "kl", "student_logits", shaped("2x3", SIX), "non-negative integers"),
    ("unknown dtype", "kl", "student_logits", S | {"dtype": "float8"}, "dtype must be one of float32, float64, float16, bfloat16"),
    ("integer dtype for logits", "kl", "teacher_logits", T | {"dtype": "int64"}, "got 'int64'"),
    ("dtype a number", "kl", "teacher_logits", T | {"dtype": 32}, "got a number"),
    ("floats in an untyped mask", "kl", "mask", shaped([2], [1, 0]), "true/false"),
    ("numbers in a bool mask", "kl", "mask", shaped([2], [1, 0], "bool"), "true/false"),
    ("booleans in a uint8 mask", "kl", "mask", shaped([2], [True, False], "uint8"), "only numbers"),
    ("uint8 mask beyond range", "kl", "mask", shaped([2], [1, 256], "uint8"), "holds 256, beyond uint8"),
    ("negative uint8 mask", "kl", "mask", shaped([2], [-1, 1], "uint8"), "beyond uint8"),
    ("fractional uint8 mask", "kl", "mask", shaped([2], [0.5, 1], "uint8"), "not a whole number"),
    ("float dtype for a mask", "kl", "mask", shaped([2], [1.0, 0.0], "float32"), "dtype must be one of bool, uint8"),
    ("mask count", "kl", "mask", shaped([2], [True]), "values has 1 numbers"),
    ("float labels without dtype", "ce", "labels", shaped([2], [0.0, 2.0]), "only integers"),
    ("boolean labels", "ce", "labels", shaped([2], [True, False]), "only integers"),
    ("string labels", "ce", "labels", shaped([2], ["0", "2"]), "only integers"),
    ("fractional label", "ce", "labels", shaped([2], [0.5, 2.0], "int64"), "holds 0.5, not a whole number, for dtype int64"),
    ("int32 overflow", "ce", "labels", shaped([2], [0, 2147483648], "int32"), "holds 2147483648, beyond int32"),
    ("int32 underflow", "ce", "labels", shaped([2], [0, -2147483649.0], "int32"), "beyond int32"),
    ("int64 overflow", "ce", "labels", shaped([2], [0, 1e19], "int64"), "beyond int64"),
    ("float dtype for labels", "ce", "labels", shaped([2], [0, 2], "float32"), "dtype must be one of int64, int32"),
    ("bool dtype for labels", "ce", "labels", shaped([2], [0, 1], "bool"), "got 'bool'"),
    ("label count", "ce", "labels", shaped([2], [0, 1, 2]), "values has 3 numbers"),
    ("nested labels", "ce", "labels", shaped([2, 1], [[0], [2]]), "flat list"),
    ("top-k index not whole", "topk", "teacher_topk_indices", shaped([2, 1], [0, 1.5], "int64"), "not a whole number"),
    ("top-k float indices", "topk", "teacher_topk_indices", shaped([2, 1], [0.0, 1.0]), "only integers"),
    ("top-k log-probs nested", "topk", "teacher_topk_log_probs", shaped([2, 1], [[-0.1], [-0.2]]), "flat list"),
    ("term teacher nested", "objective", "terms.0.teacher_logits", shaped([2, 3], [SIX[:3], SIX[3:]]), "flat list"),
    ("term labels count", "objective", "terms.1.labels", shaped([2], [1]), "values has 1 numbers"),
    ("term labels fractional", "objective", "terms.1.labels", shaped([2], [0.5, 1], "int64"), "not a whole number"),
    ("term labels int32 overflow", "objective", "terms.1.labels", shaped([2], [0, -(2**31) - 1], "int32"), "beyond int32"),
    ("term unknown key", "objective", "terms.2.teacher", H | {"strides": [2, 1]}, "(unknown: ['strides'])"),
    ("term both forms", "objective", "terms.2.teacher", H | {"dtype": "float32", "data": "AAAAAA=="}, "not both"),
    ("feature count", "objective", "student_features.hidden", shaped([2, 2], [1.0, 2.0, 3.0]), "values has 3 numbers"),
    ("feature nested", "objective", "student_features.hidden", shaped([2, 2], [[1.0, 2.0], [3.0, 4.0]]), "flat list"),
    ("feature no shape", "objective", "student_features.hidden", {"values": [1.0, 2.0, 3.0, 4.0]}, "a tensor object has"),
    ("objective student dtype", "objective", "student_logits", S | {"dtype": "int32"}, "got 'int32'"),
    ("objective mask numbers", "objective", "mask", shaped([2], [1, 1]), "true/false"),
    ("functional target not whole", "f.ce", "target", shaped([2], [0.5, 2.0], "int64"), "not a whole number"),
    ("functional target bool dtype", "f.ce", "target", shaped([2], [0, 2], "bool"), "got 'bool'"),
    ("functional target uint8 dtype", "f.ce", "target", shaped([2], [0, 2], "uint8"), "got 'uint8'"),
    ("functional target int32 overflow", "f.ce", "target", shaped([2], [0, 3e9], "int32"), "beyond int32"),
    ("functional target strings", "f.ce", "target", shaped([2], ["0", "2"]), "only numbers"),
    ("functional target booleans", "f.ce", "target", shaped([2], [True, False]), "only numbers"),
    ("functional index target floats", "f.nll", "target", shaped([2], [0.0, 1.0]), "only integers"),
    ("functional nested weight", "f.nll", "weight", shaped([1, 3], [[1.0, 1.0, 1.0]]), "flat list"),
    ("functional 0-d with two values", "f.mse", "input", shaped([], [1.0, 2.0]), "values has 2 numbers; shape [] needs 1"),
    ("functional 0-d without a value", "f.mse", "target", shaped([], []), "values has 0 numbers; shape [] needs 1"),
    ("functional string values", "f.mse", "input", shaped([1], ["1"]), "only numbers"),
]


@pytest.mark.parametrize("base", list(BASES))
def test_each_base_request_is_valid(client, base):
    route, body = BASES[base]
    answer = post(client, route, body)
    gradients = [answer["grad"]] if "grad" in answer else list(answer["grads"].values())
    assert gradients and all(set(gradient) == VALUES_KEYS for gradient in gradients)


@pytest.mark.parametrize(("base", "field", "tensor", "reason"), [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_a_malformed_values_tensor_is_a_422_naming_it(client, base, field, tensor, reason):
    problem = post(client, *changed(base, field, tensor), 422)
    assert problem["status"] == 422 and problem["type"].endswith("/invalid-request") and problem["title"] == "Invalid request"
    assert problem["field"] == field, problem
    assert reason in problem["detail"] and problem["detail"].startswith(f"{field}: "), problem


def test_the_offending_value_is_located(client):
    problem = post(client, "cross_entropy", {"student_logits": S, "labels": {"shape": [2], "values": [1, 0.25], "dtype": "int64"}}, 422)
    assert problem["index"] == [1]
    problem = post(
        client, "kl_div", {"student_logits": S, "teacher_probs": {"shape": [2, 3], "values": [0.2, 0.3, 0.5, 0.1, 1.5, 0.8]}}, 422
    )
    assert problem["field"] == "teacher_probs" and problem["index"] == [1, 1]  # the engine's check, in the tensor's shape


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("kl_div", {"student_logits": {"shape": [2], "values": [0.0] * 11}, "teacher_logits": [0.0, 0.0]}, "student_logits"),
        ("kl_div", {"student_logits": {"shape": [11], "values": [0.0] * 11}, "teacher_logits": [0.0] * 11}, "student_logits"),
        ("kl_div", {"student_logits": {"shape": [1 << 30], "values": []}, "teacher_logits": [0.0]}, "student_logits"),
        ("kl_div", {"student_logits": {"shape": [0, 11], "values": []}, "teacher_logits": [0.0]}, "student_logits"),
        (
            "kl_div",
            {"student_logits": [0.0], "teacher_logits": {"shape": [3, 4], "values": [0.0] * 12, "dtype": "float64"}},
            "teacher_logits",
        ),
        ("cross_entropy", {"student_logits": [[0.0, 1.0]], "labels": {"shape": [11], "values": [0] * 11, "dtype": "int32"}}, "labels"),
        (
            "distill",
            {"student_logits": [[0.0]], "terms": [{"loss": "mse_loss", "teacher": {"shape": [12], "values": [0.0] * 12}}]},
            "terms.0.teacher",
        ),
        (
            "distill",
            {
                "student_logits": [[0.0]],
                "student_features": {"h": {"shape": [4, 4], "values": [0.0] * 16}},
                "terms": [{"loss": "mse_loss", "student": "h", "teacher": [0.0]}],
            },
            "student_features.h",
        ),
        ("functional/mse_loss", {"input": {"shape": [12], "values": [0.0] * 12}, "target": 0.0}, "input"),
    ],
)
def test_over_the_element_limit_is_a_413_naming_the_tensor(small, route, body, field):
    problem = post(small, route, body, 413)
    assert problem["status"] == 413 and problem["field"] == field and "exceeds the limit of 10 elements" in problem["detail"], problem


def test_within_the_element_limit_is_served(small):
    answer = post(
        small,
        "kl_div",
        {"student_logits": {"shape": [2, 5], "values": [0.0] * 10}, "teacher_logits": {"shape": [2, 5], "values": [1.0] * 10}},
    )
    assert answer["loss"] == pytest.approx(0.0, abs=1e-7)


def test_64_dimensions_are_served(client):
    answer = post(
        client, "kl_div", {"student_logits": {"shape": [1] * 64, "values": [1.0]}, "teacher_logits": {"shape": [1] * 64, "values": [3.0]}}
    )
    assert answer["grad"]["shape"] == [1] * 64 and answer["grad"]["values"] == [0.0]


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_64_dimensions_are_answered_in_every_encoding(client, encoding):
    """numpy before 2.0 (the declared floor is 1.24) holds 32 dimensions: answers must not depend on it."""
    tensor = torch.tensor([1.5, -0.5]).reshape([1] * 63 + [2])
    answer = post(
        client, "kl_div", {"student_logits": SENT[encoding](tensor), "teacher_logits": SENT[encoding](tensor), "reduction": "none"}
    )
    for value in (answer["loss"], answer["grad"]):
        shape = torch.tensor(value).shape if encoding == "json" else tuple(value["shape"])  # torch: numpy 1.x nests 32 deep
        assert shape == tensor.shape


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (
            "bce",
            {
                "student_probs": {"dtype": "float16", "shape": [1, 2], "values": [0.0, 1.0]},
                "teacher_probs": [[1.0, 0.0]],
                "reduction": "sum",
            },
            "grad",
        ),
        (
            "mse_loss",
            {
                "student": {"dtype": "float16", "shape": [1, 2], "values": [60000.0, 1.0]},
                "teacher": {"shape": [1, 2], "values": [-60000.0, 1.0], "dtype": "float16"},
                "reduction": "none",
            },
            "grad",
        ),
        (
            "functional/mse_loss",
            {
                "input": {"shape": [1], "values": [60000.0], "dtype": "float16"},
                "target": {"shape": [1], "values": [-60000.0], "dtype": "float16"},
                "reduction": "none",
            },
            "loss",
        ),
        (
            "functional/mse_loss",
            {
                "input": {"shape": [1], "values": [60000.0], "dtype": "float16"},
                "target": {"shape": [1], "values": [-60000.0], "dtype": "float16"},
                "reduction": "sum",
            },
            "loss",
        ),
    ],
)
def test_a_non_finite_answer_in_values_is_a_422_and_base64_carries_it(client, route, body, field):
    problem = post(client, route, body, 422)
    assert problem["type"].endswith("/not-representable") and problem["field"] == field
    if route.startswith("functional/"):
        return  # its loss_sum, a number in every encoding, is infinite too
    answer = post(client, route, body | {"response_encoding": "base64"})
    tensors = [value for value in (answer.get("grad"), *answer.get("grads", {}).values(), answer["loss"]) if isinstance(value, dict)]
    assert any(not torch.isfinite(from_binary(value)).all() for value in tensors)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 as float32, general parser
def test_a_non_finite_student_value_is_the_engines_422(client):
    problem = post(
        client,
        "kl_div",
        {"student_logits": {"shape": [1, 2], "values": [1e5, 0.0], "dtype": "float16"}, "teacher_logits": [[1.0, 1.0]]},
        422,
    )
    assert problem["field"] == "student_logits" and problem["index"] == [0, 0]
    problem = post(client, "kl_div", {"student_logits": {"shape": [1, 2], "values": [1e39, 0.0]}, "teacher_logits": [[1.0, 1.0]]}, 422)
    assert problem["field"] == "student_logits"


# --- found by these tests (fixed) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (
            "cross_entropy",
            {"student_logits": S, "labels": {"shape": [2], "values": [0, 9223372036854775808.0], "dtype": "int64"}},
            "labels",
        ),
        (
            "functional/cross_entropy",
            {"input": S, "target": {"shape": [2], "values": [0, 9223372036854775808.0], "dtype": "int64"}},
            "target",
        ),
    ],
)
def test_two_to_the_63_is_refused_as_beyond_int64(client, route, body, field):
    problem = post(client, route, body, 422)
    assert problem["field"] == field and "beyond int64" in problem["detail"] and problem["index"] == [1], problem


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_typed_float_student_takes_integer_tokens_of_any_size(client, dtype):
    """JavaScript's JSON.stringify(1e16) is "10000000000000000": a float tensor may hold such integer tokens."""
    student = {"shape": [1, 2], "values": [10**16, 0], "dtype": dtype}
    answer = post(client, "mse_loss", {"student": student, "teacher": [[0.0, 0.0]], "reduction": "sum"})
    untyped = post(client, "mse_loss", {"student": {"shape": [1, 2], "values": [10**16, 0]}, "teacher": [[0.0, 0.0]], "reduction": "sum"})
    assert answer["loss"] == pytest.approx(untyped["loss"], rel=1e-6)


def test_a_conversion_error_names_the_element_by_its_position_in_shape(client):
    labels = {"shape": [2, 2], "values": [0, 1, 2.5, 0], "dtype": "int64"}
    problem = post(client, "cross_entropy", {"student_logits": {"shape": [2, 2, 3], "values": [0.0] * 12}, "labels": labels}, 422)
    assert problem["field"] == "labels" and problem["index"] == [1, 0] and "not a whole number" in problem["detail"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("cross_entropy", {"student_logits": [1.0, 2.0, 3.0], "labels": 1, "reduction": "none"}),
        ("cosine_embedding_loss", {"student": [1.5, 1.0], "teacher": [0.5, 1.0], "reduction": "none"}),
        (
            "cross_entropy",
            {"student_logits": {"shape": [3], "values": [1.0, 2.0, 3.0]}, "labels": {"shape": [], "values": [1]}, "reduction": "none"},
        ),
    ],
)
def test_a_0d_unreduced_loss_is_a_number_in_json(client, route, body):
    """One row (a 1-D student) and reduction none: the per-row loss is 0-d, a bare number in a JSON answer."""
    answer = post(client, route, body | {"response_encoding": "json"})
    assert isinstance(answer["loss"], float)
