"""The client's loss methods and Remote* modules come from the registry, one per registered loss."""

from __future__ import annotations

import inspect

import httpx
import orjson
import pytest
import torch

import distill.client
from distill import LOSSES
from distill.client import DistillClient, RemoteLoss
from distill.client.modules import remote_module

SPECS = list(LOSSES.values())
IDS = [spec.name for spec in SPECS]
ANSWER = {"loss": 0.5, "grad": [[0.0] * 3] * 2, "loss_sum": 1.0, "normalizer": 2.0, "reduction": "mean"}


def recording_client() -> tuple[DistillClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=ANSWER)

    return DistillClient("http://service", transport=httpx.MockTransport(handler)), seen


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_each_loss_is_a_client_method_with_the_engine_signature(spec):
    client, seen = recording_client()
    method = client.__getattr__(spec.name)
    assert list(inspect.signature(method).parameters) == list(inspect.signature(spec.prepare).parameters)
    assert spec.name in dir(client)
    student = torch.randn(2, 3)
    example = spec.examples(student)[0]
    getattr(client, spec.name)(**{spec.students[0].name: student}, **example)
    assert seen[0].url.path == f"/v1/{spec.name}"
    body = orjson.loads(seen[0].content)
    assert set(body) == {spec.students[0].name, *example}
    assert body[spec.students[0].name]["dtype"] == "float32"


def test_unknown_losses_and_arguments_are_refused():
    client, _ = recording_client()
    with pytest.raises(AttributeError):
        client.huber_loss  # noqa: B018
    with pytest.raises(ValueError, match="unknown loss"):
        client.loss("huber_loss", torch.zeros(1, 2))
    with pytest.raises(TypeError):
        client.kl_div(torch.zeros(1, 2), temprature=2.0)
    with pytest.raises(ValueError, match="student_logits or student_probs"):
        client.bce(teacher_probs=torch.zeros(1, 2))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_each_loss_has_a_remote_module(spec):
    remote = getattr(distill.client, f"Remote{spec.title}")
    assert remote is remote_module(spec.name) and issubclass(remote, RemoteLoss)
    assert f"Remote{spec.title}" in distill.client.__all__
    settings = inspect.signature(remote).parameters
    assert next(iter(settings)) == "client"
    assert {option.name for option in spec.options} <= set(settings)
    assert not {tensor.name for tensor in spec.inputs if tensor.role in ("student", "target")} & set(settings)
    client, _ = recording_client()
    with pytest.raises(ValueError, match="must reduce"):
        remote(client, reduction="none")
    with pytest.raises(TypeError):
        remote(client, no_such_setting=1)


def test_remote_settings_are_attributes_read_at_each_call():
    client, seen = recording_client()
    remote = distill.client.RemoteKLDiv(client, temperature=4.0)
    student, teacher = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3)
    remote(student, teacher)
    remote.temperature = 2.0
    remote(student, teacher_probs=teacher.softmax(-1))
    first, second = (orjson.loads(request.content) for request in seen)
    assert first["temperature"] == 4.0 and "teacher_logits" in first
    assert second["temperature"] == 2.0 and "teacher_probs" in second
    with pytest.raises(AttributeError):
        distill.client.RemoteHuberLoss  # noqa: B018
