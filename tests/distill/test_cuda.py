"""The CUDA path: every loss, the batcher and the service on a GPU agree with the CPU engine.

Skipped where no GPU is present (CI); run on a machine with one to prove the device path.
"""

from __future__ import annotations

import math

import pytest
import torch

import distill
from distill.batching.batcher import Batcher
from distill.losses.kl_div import prepare_kl_div
from distill.rows.prepared import run
from tests.distill import inputs
from tests.distill.grouping import run_grouped
from tests.tolerances import assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SHAPE = (4, 7, 33)


def cases(device: str):
    student = inputs.logits(SHAPE, torch.float32, 1).to(device)
    teacher = inputs.logits(SHAPE, torch.float32, 2).to(device)
    labels = inputs.labels(SHAPE, 3, ignore_every=5).to(device)
    mask = (torch.arange(28).reshape(4, 7) % 4 != 1).to(device)
    weight = torch.linspace(0.5, 1.5, 33).to(device)
    return {
        "kl": lambda: distill.kl_div(student, teacher_logits=teacher, temperature=2.0, mask=mask),
        "kl_probs_none": lambda: distill.kl_div(student, teacher_probs=torch.softmax(teacher, -1), reduction="none"),
        "bce": lambda: distill.bce(student, teacher_logits=teacher, temperature=2.0, pos_weight=weight, mask=mask),
        "bce_probs": lambda: distill.bce(student_probs=torch.sigmoid(student), teacher_probs=torch.sigmoid(teacher), weight=weight),
        "ce_hard": lambda: distill.cross_entropy(student, labels=labels, weight=weight, label_smoothing=0.1, mask=mask),
        "ce_soft": lambda: distill.cross_entropy(student, teacher_logits=teacher, temperature=4.0, weight=weight),
        "hinton": lambda: distill.hinton(student, teacher, labels, alpha=0.3, temperature=2.0, mask=mask),
    }


@pytest.mark.parametrize("name", list(cases("cpu")))
def test_cuda_matches_cpu(name):
    on_cpu, on_gpu = cases("cpu")[name](), cases("cuda")[name]()
    assert on_gpu.grad.is_cuda and on_gpu.grad.dtype == torch.float32
    assert_close(on_gpu.loss.cpu(), on_cpu.loss, torch.float32)
    assert_close(on_gpu.grad.cpu(), on_cpu.grad, torch.float32)


@pytest.mark.parametrize("spec", list(distill.LOSSES.values()), ids=list(distill.LOSSES))
def test_every_registered_loss_on_cuda_matches_cpu(spec):
    student = inputs.logits(SHAPE, torch.float32, 10)
    mask = torch.arange(28).reshape(4, 7) % 4 != 1
    for example in spec.examples(student):
        on_cpu = spec.compute(**{spec.students[0].name: student}, **example, mask=mask)
        on_gpu_example = {name: value.cuda() if isinstance(value, torch.Tensor) else value for name, value in example.items()}
        on_gpu = spec.compute(**{spec.students[0].name: student.cuda()}, **on_gpu_example, mask=mask.cuda())
        assert on_gpu.grad.is_cuda
        assert_close(on_gpu.loss.cpu(), on_cpu.loss, torch.float32)
        assert_close(on_gpu.grad.cpu(), on_cpu.grad, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_cuda_dtypes(dtype):
    student, teacher = inputs.logits((8, 100), dtype, 4), inputs.logits((8, 100), dtype, 5)
    on_gpu = distill.kl_div(student.cuda(), teacher_logits=teacher.cuda(), temperature=2.0)
    on_cpu = distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
    assert on_gpu.grad.dtype == dtype
    assert_close(on_gpu.grad.cpu(), on_cpu.grad, dtype)


def test_cuda_masked_vocabulary_error_names_row_and_class():
    student = inputs.logits((3, 6), torch.float32, 6).cuda()
    student[2, 4] = -math.inf
    with pytest.raises(distill.InputError) as error:
        distill.kl_div(student, teacher_logits=inputs.logits((3, 6), torch.float32, 7).cuda())
    assert error.value.index == (2, 4)


def test_cuda_group_and_batcher():
    work = [
        prepare_kl_div(
            inputs.logits((8, 1000), torch.float32, i).cuda(),
            teacher_logits=inputs.logits((8, 1000), torch.float32, 50 + i).cuda(),
            temperature=2.0,
        )
        for i in range(16)
    ]
    for grouped, item in zip(run_grouped(work), work, strict=True):
        assert_close(grouped.grad.cpu(), run(item).grad.cpu(), torch.float32)
    batcher = Batcher(max_wait_ms=5)
    try:
        futures = [batcher.submit(item) for item in work]
        for future, item in zip(futures, work, strict=True):
            assert_close(future.result(30).grad.cpu(), run(item).grad.cpu(), torch.float32)
    finally:
        batcher.close()


def test_service_on_cuda():
    from tests.service.conftest import make_client

    with make_client(device="cuda") as client:
        assert client.get("/v1/info").json()["device"].startswith("cuda")
        student, teacher = inputs.logits((2, 5), torch.float32, 8), inputs.logits((2, 5), torch.float32, 9)
        response = client.post(
            "/v1/kl_div", json={"student_logits": student.tolist(), "teacher_logits": teacher.tolist(), "temperature": 2.0}
        )
        assert response.status_code == 200
        expected = distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
        assert_close(torch.tensor(response.json()["grad"]), expected.grad, torch.float32)
