"""distill.functional against torch.nn.functional + autograd in float64, for every function, reduction and option."""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from distill import InputError
from distill import functional as DF

Case = tuple[dict[str, Any], dict[str, Any]]  # tensor arguments, options


def _cases(generator: torch.Generator, n: int, c: int, dtype: torch.dtype) -> dict[str, list[Case]]:
    """Valid calls of every function on (n, c) inputs, with the options that change its math."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, dtype=dtype)

    def classes(*shape: int, high: int = c) -> torch.Tensor:
        return torch.randint(0, high, shape, generator=generator)

    signs = torch.where(rand(n) > 0.5, 1.0, -1.0).to(dtype)
    multilabel = torch.full((n, c), -1, dtype=torch.int64)
    multilabel[:, 0], multilabel[:, 1] = classes(n), classes(n)
    pair = {"input": randn(n, c), "target": randn(n, c)}
    return {
        "l1_loss": [(pair, {}), ({**pair, "weight": rand(n, c)}, {})],
        "mse_loss": [(pair, {}), ({**pair, "weight": rand(n, c)}, {})],
        "smooth_l1_loss": [(pair, {}), (pair, {"beta": 0.5}), (pair, {"beta": 0.0})],
        "huber_loss": [(pair, {"delta": 0.7}), ({**pair, "weight": rand(n, c)}, {})],
        "nll_loss": [
            ({"input": F.log_softmax(randn(n, c), -1), "target": classes(n)}, {}),
            ({"input": F.log_softmax(randn(n, c), -1), "target": classes(n), "weight": rand(c)}, {"ignore_index": 0}),
        ],
        "margin_ranking_loss": [({"input1": randn(n), "input2": randn(n), "target": signs}, {"margin": 0.3})],
        "hinge_embedding_loss": [({"input": randn(n, c), "target": torch.where(rand(n, c) > 0.5, 1.0, -1.0).to(dtype)}, {"margin": 0.5})],
        "soft_margin_loss": [({"input": randn(n, c), "target": torch.where(rand(n, c) > 0.5, 1.0, -1.0).to(dtype)}, {})],
        "multilabel_soft_margin_loss": [
            ({"input": randn(n, c), "target": (rand(n, c) > 0.5).to(dtype)}, {}),
            ({"input": randn(n, c), "target": (rand(n, c) > 0.5).to(dtype), "weight": rand(c)}, {}),
        ],
        "multilabel_margin_loss": [({"input": randn(n, c), "target": multilabel}, {})],
        "cosine_embedding_loss": [({"input1": randn(n, c), "input2": randn(n, c), "target": signs}, {"margin": 0.2})],
        "multi_margin_loss": [
            ({"input": randn(n, c), "target": classes(n)}, {}),
            ({"input": randn(n, c), "target": classes(n), "weight": rand(c)}, {"p": 2, "margin": 0.5}),
        ],
        "triplet_margin_loss": [
            ({"anchor": randn(n, c), "positive": randn(n, c), "negative": randn(n, c)}, {}),
            ({"anchor": randn(n, c), "positive": randn(n, c), "negative": randn(n, c)}, {"margin": 0.5, "p": 1.0, "swap": True}),
        ],
        "binary_cross_entropy": [({"input": rand(n, c) * 0.98 + 0.01, "target": rand(n, c), "weight": rand(n, c)}, {})],
        "binary_cross_entropy_with_logits": [
            ({"input": randn(n, c), "target": rand(n, c)}, {}),
            ({"input": randn(n, c), "target": rand(n, c), "weight": rand(n, c), "pos_weight": rand(c) + 0.5}, {}),
        ],
        "cross_entropy": [
            ({"input": randn(n, c), "target": classes(n)}, {}),
            ({"input": randn(n, c), "target": classes(n), "weight": rand(c)}, {"label_smoothing": 0.1, "ignore_index": 1}),
            ({"input": randn(n, c), "target": F.softmax(randn(n, c), -1)}, {"label_smoothing": 0.2}),
            ({"input": randn(n, c, 3), "target": classes(n, 3)}, {}),
        ],
        "kl_div": [
            ({"input": F.log_softmax(randn(n, c), -1), "target": F.softmax(randn(n, c), -1)}, {}),
            ({"input": F.log_softmax(randn(n, c), -1), "target": F.log_softmax(randn(n, c), -1)}, {"log_target": True}),
        ],
        "poisson_nll_loss": [
            ({"input": randn(n, c), "target": rand(n, c) * 4}, {}),
            ({"input": rand(n, c) + 0.1, "target": rand(n, c) * 4}, {"log_input": False, "full": True}),
        ],
        "gaussian_nll_loss": [
            ({"input": randn(n, c), "target": randn(n, c), "var": rand(n, c) + 0.1}, {}),
            ({"input": randn(n, c), "target": randn(n, c), "var": rand(n, 1) + 0.1}, {"full": True}),
        ],
        "sigmoid_focal_loss": [
            ({"inputs": randn(n, c), "targets": (rand(n, c) > 0.5).to(dtype)}, {}),
            ({"inputs": randn(n, c), "targets": (rand(n, c) > 0.5).to(dtype)}, {"alpha": -1.0, "gamma": 0.0}),
        ],
    }


def _focal(inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none") -> torch.Tensor:
    """torchvision.ops.sigmoid_focal_loss, written out independently of the engine."""
    p = torch.sigmoid(inputs)
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none") * (1 - (p * targets + (1 - p) * (1 - targets))) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def reference(name: str) -> Callable[..., torch.Tensor]:
    return _focal if name == "sigmoid_focal_loss" else getattr(F, name)


def expected(
    name: str, tensors: dict[str, Any], options: dict[str, Any], reduction: str, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PyTorch's own value and autograd gradients, computed in ``dtype``."""
    spec = DF.FUNCTIONS[name]
    leaves = {
        key: value.detach().to(dtype).requires_grad_(key in spec.differentiable) if value.is_floating_point() else value
        for key, value in tensors.items()
    }
    value = reference(name)(**leaves, **options, reduction=reduction)
    (value.sum() if reduction == "none" else value).backward()
    return value.detach(), {key: leaf.grad for key, leaf in leaves.items() if key in spec.differentiable and leaf.grad is not None}


def test_every_function_is_covered() -> None:
    assert set(_cases(torch.Generator(), 2, 3, torch.float64)) == set(DF.FUNCTIONS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 2), (5, 7), (16, 33)])
@pytest.mark.parametrize("name", list(DF.FUNCTIONS))
def test_parity_with_torch(name: str, shape: tuple[int, int], dtype: torch.dtype) -> None:
    """float64 against PyTorch in float64; float32 against PyTorch's own float32 answer (the same
    function and autograd: their difference from float64 is PyTorch's, cancellation included)."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{name}{shape}".encode()))
    tolerance = {"rtol": 1.3e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for tensors, options in _cases(generator, *shape, dtype)[name]:
        for reduction in DF.FUNCTIONS[name].reductions:
            result = getattr(DF, name)(**tensors, **options, reduction=reduction)
            value, grads = expected(name, tensors, options, reduction, dtype)
            assert result.reduction == reduction
            if value.isnan().all():  # every class-index target ignored: PyTorch's NaN is answered as 0 / 0
                assert float(result.loss) == 0.0 and result.normalizer == 0.0
                continue
            torch.testing.assert_close(result.loss, value, **tolerance)
            assert set(result.grads) == set(grads)
            for key, gradient in grads.items():
                assert result.grads[key].dtype == tensors[key].dtype and result.grads[key].shape == tensors[key].shape
                torch.testing.assert_close(result.grads[key], gradient, **tolerance)
            if reduction in ("mean", "batchmean"):
                assert result.loss_sum / result.normalizer == pytest.approx(float(value), rel=1e-5, abs=1e-7)
            elif reduction == "sum":
                assert result.normalizer == 1.0 and result.loss_sum == pytest.approx(float(value), rel=1e-5, abs=1e-7)


def test_the_seed_documents_multilabel_margin_example() -> None:
    result = DF.multilabel_margin_loss(torch.tensor([[0.1, 0.2, 0.4, 0.8]]), torch.tensor([[3, 0, -1, 1]]))
    assert float(result.loss) == pytest.approx(0.85)


@pytest.mark.parametrize(
    ("size_average", "reduce", "reduction"),
    [
        (None, None, "mean"),
        (True, None, "mean"),
        (False, None, "sum"),
        (None, True, "mean"),
        (None, False, "none"),
        (False, False, "none"),
        (True, True, "mean"),
        (False, True, "sum"),
    ],
)
def test_legacy_flags_map_as_pytorch_maps_them(size_average: bool | None, reduce: bool | None, reduction: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    # The flags, when either is given, override `reduction` (given here as something else).
    given = reduction if size_average is None and reduce is None else ("sum" if reduction == "mean" else "mean")
    result = DF.mse_loss(x, y, size_average=size_average, reduce=reduce, reduction=given)
    assert result.reduction == reduction
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(result.loss, F.mse_loss(x, y, size_average=size_average, reduce=reduce, reduction=given))


def test_every_target_ignored_is_loss_zero_with_normalizer_zero() -> None:
    result = DF.cross_entropy(torch.randn(2, 3), torch.tensor([-100, -100]))
    assert float(result.loss) == 0.0 and result.normalizer == 0.0 and not result.grads["input"].any()


def test_grad_wrt_narrows_the_gradients() -> None:
    a, b, y = torch.randn(4, 3), torch.randn(4, 3), torch.ones(4)
    assert set(DF.cosine_embedding_loss(a, b, y).grads) == {"input1", "input2"}
    assert set(DF.cosine_embedding_loss(a, b, y, grad_wrt=["input2"]).grads) == {"input2"}
    with pytest.raises(InputError) as raised:
        DF.cosine_embedding_loss(a, b, y, grad_wrt=["target"])
    assert raised.value.argument == "grad_wrt"


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: DF.nll_loss(torch.randn(3, 5), torch.tensor([1, 7, 2])), "target"),
        (lambda: DF.mse_loss(torch.randn(3, 5), torch.randn(4, 5)), "input"),
        (lambda: DF.cross_entropy(torch.randn(3, 5), torch.tensor([1, 2])), "input"),
        (lambda: DF.binary_cross_entropy(torch.rand(3) + 1.5, torch.rand(3)), "input"),
        (lambda: DF.kl_div(torch.randn(3), [0.1, 0.2]), "target"),
        (lambda: DF.mse_loss(torch.randn(3), torch.randn(3), reduction="average"), "reduction"),
    ],
)
def test_what_pytorch_rejects_is_an_input_error_naming_the_argument(call: Callable[[], object], argument: str) -> None:
    with pytest.raises(InputError) as raised:
        call()
    assert raised.value.argument == argument


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    columns=st.integers(1, 9),
    offset=st.sampled_from([0.0, 1e3, 1e6]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_cross_entropy_is_shift_invariant_as_pytorch_is(rows: int, columns: int, offset: float, reduction: str) -> None:
    generator = torch.Generator().manual_seed(rows * 31 + columns)
    logits = torch.randn(rows, columns, generator=generator) + offset
    target = torch.randint(0, columns, (rows,), generator=generator)
    result = DF.cross_entropy(logits, target, reduction=reduction)
    value, grads = expected("cross_entropy", {"input": logits, "target": target}, {}, reduction)
    ours = result.loss.double()
    own_error = (F.cross_entropy(logits, target, reduction=reduction).double() - value).abs().max()
    assert float((ours - value).abs().max()) <= 4 * float(own_error) + 8 * torch.finfo(torch.float32).eps * max(
        1.0, float(value.abs().max())
    )
    assert math.isfinite(result.loss_sum)
    torch.testing.assert_close(result.grads["input"].double(), grads["input"], rtol=1e-4, atol=1e-6)


def test_weighted_means_divide_as_pytorch_divides_and_a_zero_weight_sum_is_refused() -> None:
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    negative = -torch.ones(4, 3)
    torch.testing.assert_close(DF.l1_loss(x, y, weight=negative).loss, F.l1_loss(x, y, weight=negative))
    scores, labels = F.log_softmax(torch.randn(3, 3, generator=generator), -1), torch.tensor([0, 1, 2])
    weights = torch.tensor([-1.0, -2.0, -3.0])
    torch.testing.assert_close(DF.nll_loss(scores, labels, weight=weights).loss, F.nll_loss(scores, labels, weight=weights))
    with pytest.raises(InputError) as raised:
        DF.nll_loss(scores, labels, weight=torch.tensor([1.0, 0.0, -1.0]))
    assert raised.value.argument == "weight"


def test_half_precision_sums_accumulate_in_float32() -> None:
    x = torch.full((70_000,), 2.0, dtype=torch.float16)
    result = DF.mse_loss(x, torch.zeros_like(x))
    assert result.loss.dtype == torch.float16 and float(result.loss) == 4.0 and result.loss_sum == 280_000.0
    small = torch.randn(27, generator=torch.Generator().manual_seed(1)).bfloat16()
    assert torch.equal(DF.l1_loss(small, torch.zeros_like(small)).loss, F.l1_loss(small, torch.zeros_like(small)))


def test_an_empty_input_is_zero_over_zero_and_a_constant_variance_has_no_gradient() -> None:
    result = DF.mse_loss(torch.zeros(0), torch.zeros(0))
    assert float(result.loss) == 0.0 and result.normalizer == 0.0
    assert set(DF.gaussian_nll_loss(torch.randn(2), torch.randn(2), 0.5).grads) == {"input"}
    with pytest.raises(InputError) as raised:
        DF.gaussian_nll_loss(torch.randn(2), torch.randn(2), 0.5, grad_wrt=["var"])
    assert raised.value.argument == "grad_wrt"
