"""Grouped computation gives every request exactly its solo answer."""

from __future__ import annotations

import math

import pytest
import torch

from distill import LOSSES
from distill.batching.group import run_group
from distill.losses.bce import prepare_bce
from distill.losses.cross_entropy import prepare_cross_entropy
from distill.losses.features import prepare_mse_loss
from distill.losses.kl_div import prepare_kl_div
from distill.rows.prepared import Prepared, run
from tests.distill import inputs
from tests.distill.grouping import run_grouped

REDUCTIONS = {"kl_div": ["batchmean", "sum", "mean", "none"], "bce": ["mean", "sum", "none"], "cross_entropy": ["mean", "sum", "none"]}


def requests(loss: str, count: int, seed: int, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        lead = [(3,), (2, 5), (7,), (1,)][index % 4]
        shape = (*lead, 11)
        student = inputs.logits(shape, dtype, seed + index)
        teacher = inputs.logits(shape, dtype, seed + 100 + index)
        mask = (torch.rand(lead, generator=generator) > 0.3) if index % 3 == 0 else None
        if mask is not None:
            mask.view(-1)[0] = True
        reduction = REDUCTIONS[loss][index % len(REDUCTIONS[loss])]
        if loss == "kl_div":
            out.append(prepare_kl_div(student, teacher_logits=teacher, temperature=2.0, reduction=reduction, mask=mask))
        elif loss == "bce":
            out.append(
                prepare_bce(
                    student,
                    teacher_logits=teacher,
                    temperature=2.0,
                    pos_weight=torch.full((11,), 2.0, dtype=dtype),
                    reduction=reduction,
                    mask=mask,
                    weight=torch.rand(shape, generator=generator, dtype=dtype),
                )
            )
        else:
            labels = inputs.labels(shape, seed + 200 + index, ignore_every=4)
            out.append(
                prepare_cross_entropy(
                    student, labels=labels, label_smoothing=0.1, reduction=reduction, mask=mask, compute_grad=index % 5 != 1
                )
            )
    return out


#: Grouped rows go through the same arithmetic as solo rows, but an element-wise transcendental
#: (sigmoid, log) may take a SIMD or a scalar path depending on where the element sits in the
#: flattened tensor, and the two can differ in the last bit: a few ulps of each dtype.
ULPS = {torch.float64: 1e-14, torch.float32: 1e-6, torch.bfloat16: 8e-3}


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    tolerance = ULPS[expected.dtype]
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * scale)


def assert_same(group_result, solo_result):
    close(group_result.loss, solo_result.loss)
    assert group_result.normalizer == solo_result.normalizer
    assert group_result.loss_sum == pytest.approx(solo_result.loss_sum, rel=1e-6)
    if solo_result.grad is None:
        assert group_result.grad is None
    else:
        assert group_result.grad.dtype == solo_result.grad.dtype and group_result.grad.shape == solo_result.grad.shape
        close(group_result.grad, solo_result.grad)


@pytest.mark.parametrize("loss", ["kl_div", "bce", "cross_entropy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_group_equals_solo(loss, dtype):
    group = requests(loss, 9, 1, dtype)
    assert len({item.key for item in group}) == 1
    for grouped, item in zip(run_grouped(group), group, strict=True):
        assert_same(grouped, run(item))


def test_soft_cross_entropy_groups():
    group = [
        prepare_cross_entropy(
            inputs.logits((4, 9), torch.float32, i),
            teacher_probs=inputs.teacher((4, 9), torch.float32, "probs", i),
            reduction=["mean", "none"][i % 2],
        )
        for i in range(6)
    ]
    for grouped, item in zip(run_grouped(group), group, strict=True):
        assert_same(grouped, run(item))


def test_keys_separate_incompatible_requests():
    student, teacher = inputs.logits((2, 5), torch.float32, 1), inputs.logits((2, 5), torch.float32, 2)
    base = prepare_kl_div(student, teacher_logits=teacher, temperature=2.0)
    assert base.key == prepare_kl_div(student, teacher_logits=teacher, temperature=2.0, reduction="sum").key
    assert base.key != prepare_kl_div(student, teacher_logits=teacher, temperature=3.0).key
    assert base.key != prepare_kl_div(student.double(), teacher_logits=teacher.double(), temperature=2.0).key
    assert (
        base.key
        != prepare_kl_div(
            inputs.logits((2, 6), torch.float32, 1), teacher_logits=inputs.logits((2, 6), torch.float32, 2), temperature=2.0
        ).key
    )
    with pytest.raises(ValueError):
        run_group([base, prepare_kl_div(student, teacher_logits=teacher, temperature=3.0)])


@pytest.mark.parametrize(
    ("name", "options"),
    [("jsd", {"beta": 0.3}), ("reverse_kl", {}), ("skew_kl", {"alpha": 0.2}), ("skew_reverse_kl", {"alpha": 0.2}), ("tvd", {})],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_divergences_group_equals_solo(name, options, dtype):
    prepare = LOSSES[name].prepare
    group = []
    for index in range(7):
        lead = [(3,), (2, 5), (7,), (1,)][index % 4]
        mask = torch.ones(lead, dtype=torch.bool)
        mask.view(-1)[-1] = index % 2 == 0
        student, teacher = inputs.logits((*lead, 13), dtype, index), inputs.logits((*lead, 13), dtype, 50 + index)
        group.append(
            prepare(
                student,
                teacher_logits=teacher,
                temperature=2.0,
                reduction=["batchmean", "sum", "mean", "none"][index % 4],
                mask=mask,
                **options,
            )
        )
    assert len({item.key for item in group}) == 1
    for grouped, item in zip(run_grouped(group), group, strict=True):
        assert_same(grouped, run(item))
    other = prepare(inputs.logits((2, 13), dtype, 1), teacher_logits=inputs.logits((2, 13), dtype, 2), temperature=3.0, **options)
    assert other.key != group[0].key


def _features(seed: int, rows: int, **options) -> Prepared:
    generator = torch.Generator().manual_seed(seed)
    return prepare_mse_loss(torch.randn(rows, 300, generator=generator), teacher=torch.randn(rows, 300, generator=generator), **options)


def test_with_and_without_the_gradient_are_grouped_apart_and_each_gets_its_solo_answer():
    # the compiled kernel's two variants may round a row loss differently (multiply-adds fused or not)
    with_grad, without = _features(1, 4, reduction="sum"), _features(1, 4, reduction="sum", compute_grad=False)
    assert with_grad.key == without.key and with_grad.group_key != without.group_key
    work = [with_grad, without, _features(2, 3, reduction="sum"), _features(3, 5, reduction="sum", compute_grad=False)]
    for grouped, item in zip(run_grouped(work), work, strict=True):
        assert grouped.loss_sum == run(item).loss_sum
    with pytest.raises(ValueError):
        run_group([with_grad, without])


def test_element_wise_output_is_grouped_apart():
    assert _features(1, 4, reduction="none").group_key != _features(1, 4, reduction="sum").group_key
    per_row = [
        prepare_cross_entropy(inputs.logits((3, 9), torch.float32, i), labels=torch.arange(3), reduction=r)
        for i, r in enumerate(("none", "sum"))
    ]
    assert per_row[0].group_key == per_row[1].group_key  # a per-row loss writes its "none" output from the row losses


def test_one_overflowing_request_leaves_the_others_their_solo_answers():
    overflowing = prepare_mse_loss(torch.full((1, 300), 1e30), teacher=torch.zeros(1, 300), reduction="sum")
    work = [_features(1, 4, reduction="sum"), overflowing, _features(2, 3, reduction="mean")]
    results = run_group(work)
    assert results[1].loss_sum == math.inf
    for grouped, item in zip(results, work, strict=True):
        assert grouped.loss_sum == run(item).loss_sum
        torch.testing.assert_close(grouped.grad, run(item).grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weighted_smoothed_cross_entropy_rows_do_not_depend_on_the_row_count(dtype):
    # a matrix-vector product rounded a row differently with the rows around it (BLAS blocking)
    generator = torch.Generator().manual_seed(7)
    options = {"weight": torch.rand(11, generator=generator) + 0.1, "label_smoothing": 0.05}
    for seed in range(10):
        small = prepare_cross_entropy(
            inputs.logits((3, 11), dtype, seed) * 4, labels=torch.randint(0, 11, (3,), generator=generator), **options
        )
        large = prepare_cross_entropy(
            inputs.logits((200, 11), dtype, 100 + seed) * 4, labels=torch.randint(0, 11, (200,), generator=generator), **options
        )
        assert run_group([small, large])[0].loss_sum == run(small).loss_sum
