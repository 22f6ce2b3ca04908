"""The compiled kernels themselves: build, exp/log accuracy, extrema, threading and fallback."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distill
from distill import native
from distill.native import kernels

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are not built")


@pytest.mark.skipif(shutil.which("g++") is None or platform.system() != "Linux", reason="needs Linux and a C++ compiler")
def test_kernels_are_built_where_a_compiler_exists() -> None:
    assert kernels.available()
    assert kernels.instruction_set() in {"avx512", "avx2", "baseline"}


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_matches_float64_over_the_whole_exponent_range(dtype: torch.dtype) -> None:
    # Hard-label CE with an ignored label writes exactly softmax(s) · scale: exercises exp on [-100, 0]
    # (and -inf), including the underflow region, against a float64 softmax.
    student = torch.cat([torch.linspace(-100.0, 0.0, 20_001, dtype=dtype), torch.tensor([-math.inf], dtype=dtype)]).unsqueeze(0)
    grad = torch.empty_like(student)
    row_loss = torch.empty(1, dtype=dtype)
    assert kernels.ce_hard(student, None, None, torch.tensor([0]), -100, None, 0.0, 1.0, grad, row_loss)
    grad[0, 0] += 1.0
    expected = torch.softmax(student.double(), dim=-1)
    normal = expected > 1e-37
    relative = ((grad.double() - expected).abs() / expected)[normal]
    assert float(relative.max()) < (1e-6 if dtype == torch.float32 else 1e-13)
    assert grad[0, -1] == 0.0
    if dtype == torch.float32:
        assert bool((grad[0][student[0] < -88.03] == 0).all())


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("classes", [1, 7, 8, 9, 33, 4097])
def test_row_extrema_match_amax_and_amin(dtype: torch.dtype, classes: int) -> None:
    values = torch.randn(5, classes, dtype=dtype, generator=torch.Generator().manual_seed(classes))
    values[1, -1] = math.inf
    values[2, 0] = -math.inf
    values[3, classes // 2] = math.nan
    assert kernels.row_extrema(values[4:], minima=True)[2]  # a finite row
    high, low, finite = kernels.row_extrema(values, minima=True)
    torch.testing.assert_close(high, values.amax(dim=-1), equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(low, values.amin(dim=-1), equal_nan=True, rtol=0, atol=0)
    assert not finite
    only_high, no_low, finite = kernels.row_extrema(values, minima=False)
    assert no_low is None and not finite
    torch.testing.assert_close(only_high, high, equal_nan=True, rtol=0, atol=0)
    for row in (1, 2, 3):
        for minima in (True, False):
            assert not kernels.row_extrema(values[row : row + 1].contiguous(), minima=minima)[2]


@needs_kernels
@pytest.mark.parametrize(
    ("labels", "ignore_index", "expected"),
    [
        ([0, 4, 2], -100, kernels.LABELS_IN_RANGE),
        ([0, 4, 2], 3, kernels.LABELS_IN_RANGE),
        ([0, 3, 2], 3, kernels.LABELS_SOME_IGNORED),
        ([0, -100, 2], -100, kernels.LABELS_SOME_IGNORED),
        ([0, 5, 2], -100, kernels.LABELS_OUT_OF_RANGE),
        ([-1, 0], -100, kernels.LABELS_OUT_OF_RANGE),
        ([-100, 2**62], -100, kernels.LABELS_OUT_OF_RANGE),
        ([], -100, kernels.LABELS_IN_RANGE),
    ],
)
def test_label_range(labels: list[int], ignore_index: int, expected: int) -> None:
    assert kernels.label_range(torch.tensor(labels, dtype=torch.int64), 5, ignore_index) == expected


@needs_kernels
def test_log_of_teacher_probabilities_including_subnormals() -> None:
    # KL with teacher probabilities takes log p in float32; tiny and subnormal p must stay accurate.
    probs = torch.tensor([[0.5, 0.25, 1e-30, 1e-40, 0.0, 0.25 - 1e-30 - 1e-40]], dtype=torch.float32)
    student = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    with native.switched(True):
        fused = distill.kl_div(student, teacher_probs=probs)
    with native.switched(False):
        eager = distill.kl_div(student, teacher_probs=probs)
    torch.testing.assert_close(fused.loss, eager.loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fused.grad, eager.grad, rtol=1e-6, atol=1e-9)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_rows_split_over_threads_give_the_same_answer(threads: int) -> None:
    generator = torch.Generator().manual_seed(threads)
    student = torch.randn(7, 40_000, generator=generator)
    teacher = torch.randn(7, 40_000, generator=generator)
    before = torch.get_num_threads()
    try:
        with native.switched(True):  # the compiled kernels' row split (torch's own reductions may split a row)
            torch.set_num_threads(1)
            single = distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
            torch.set_num_threads(threads)
            split = distill.kl_div(student, teacher_logits=teacher, temperature=2.0)
    finally:
        torch.set_num_threads(before)
    assert single.loss_sum == split.loss_sum
    assert single.grad is not None and split.grad is not None
    assert torch.equal(single.grad, split.grad)


@needs_kernels
def test_switch_off() -> None:
    with native.switched(False):
        assert not kernels.enabled()
        assert not kernels.supports(torch.zeros(2, 3))
    with native.switched(True):
        assert kernels.supports(torch.zeros(2, 3))
        assert not kernels.supports(torch.zeros(2, 3, dtype=torch.float16))
        assert not kernels.supports(torch.zeros(3, 2).t())


@needs_kernels
def test_infinite_row_falls_back_to_the_precise_error() -> None:
    # The kernel yields an infinite row loss; the torch path then names the offending element.
    student = torch.tensor([[0.0, -math.inf, 1.0], [0.5, 0.5, 0.5]])
    teacher = torch.tensor([[0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])
    with native.switched(True), pytest.raises(distill.InputError) as caught:
        distill.kl_div(student, teacher_probs=teacher)
    assert caught.value.argument == "student_logits"
    assert caught.value.index == (0, 1)


@pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
def test_the_throughput_probe_computes_the_kernels_exp_and_log():
    generator = torch.Generator().manual_seed(0)
    negative = -20 * torch.rand(3, 1001, generator=generator)
    positive = 10 * torch.rand(3, 1001, generator=generator) + 1e-30
    out = torch.empty(3, 1001)
    kernels.transcendental("exp", negative, out)
    torch.testing.assert_close(out, torch.exp(negative), rtol=4e-7, atol=0)
    kernels.transcendental("log", positive, out)
    torch.testing.assert_close(out, torch.log(positive), rtol=0, atol=4e-7)


_EVERY_LOSS = """
import sys, torch, distill
from distill import native
generator = torch.Generator().manual_seed(0)
answers = {}
for classes in (1, 7, 17, 33, 1000):
    student = 4 * torch.randn(5, classes, generator=generator)
    teacher = 4 * torch.randn(5, classes, generator=generator)
    labels = torch.randint(0, classes, (5,), generator=generator)
    with native.switched(True):
        results = [distill.kl_div(student, teacher_logits=teacher, temperature=2.0),
                   distill.cross_entropy(student, labels=labels, label_smoothing=0.1),
                   distill.cross_entropy(student, teacher_logits=teacher, temperature=2.0),
                   distill.bce(student, teacher_logits=teacher, temperature=2.0)]
        results += [getattr(distill, name)(student, teacher_logits=teacher, temperature=2.0)
                    for name in ("jsd", "reverse_kl", "skew_kl", "skew_reverse_kl", "tvd")]
        results += [getattr(distill, name)(student, teacher=teacher) for name in ("mse_loss", "l1_loss", "cosine_embedding_loss")]
        results.append(distill.smooth_l1_loss(student, teacher=teacher, beta=2.0))
    answers[classes] = [(r.loss_sum, r.grad) for r in results]
torch.save({"isa": native.kernels.instruction_set(), "answers": answers}, sys.argv[1])
"""


@needs_kernels
@pytest.mark.parametrize("cap", ["avx2", "baseline"])
def test_every_build_gives_the_answers_of_the_widest(cap: str, tmp_path: Path) -> None:
    # The library picks the widest build the CPU runs; DISTILL_ISA caps it, so each narrower build
    # is checked here against the default one on every loss, with row tails of every length class.
    def answers(environment: dict[str, str], name: str) -> dict:
        out = tmp_path / name
        subprocess.run([sys.executable, "-c", _EVERY_LOSS, str(out)], env=environment, check=True, cwd=Path(__file__).parents[3])
        return torch.load(out)

    widest = answers({k: v for k, v in os.environ.items() if k != "DISTILL_ISA"}, "widest.pt")
    capped = answers({**os.environ, "DISTILL_ISA": cap}, "capped.pt")
    if capped["isa"] == widest["isa"]:
        pytest.skip(f"this CPU runs no build wider than {cap}")
    assert capped["isa"] == cap
    for classes, results in widest["answers"].items():
        for (loss, grad), (capped_loss, capped_grad) in zip(results, capped["answers"][classes], strict=True):
            assert capped_loss == pytest.approx(loss, rel=2e-6, abs=1e-7), classes
            torch.testing.assert_close(capped_grad, grad, rtol=2e-5, atol=1e-7)
