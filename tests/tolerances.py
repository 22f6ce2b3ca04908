"""Shared test helpers: tolerances per dtype and random row masks."""

from __future__ import annotations

import torch
from torch import Tensor

#: (rtol, atol relative to the reference's magnitude) for comparing against PyTorch.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype, inputs: Tensor | None = None) -> None:
    """Relative closeness at the dtype's tolerance, with an absolute floor scaled to the reference.

    Values near 0 are differences of larger terms, so PyTorch and the engine alike are accurate there
    only in absolute terms: gradients (differences of probabilities) to a few ulps of the compute
    dtype, losses (−log q_y = lse − s_y) to a few ulps of max |logit|, given as ``inputs``.
    """
    tol = TOLERANCE[dtype]
    ulp = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    expected = expected.to(torch.float64)
    actual = actual.detach().to(torch.float64)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    floor = max(tol * scale if scale > 0 else tol, 64 * ulp)
    if inputs is not None and inputs.numel():
        finite = inputs[torch.isfinite(inputs)].to(torch.float64)
        magnitude = float(finite.abs().max()) if finite.numel() else 1.0
        floor = max(floor, 64 * ulp * magnitude)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=floor)


def random_mask(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """A row mask over the leading shape that keeps at least one row."""
    lead = shape[:-1]
    mask = torch.rand(lead, generator=generator) > 0.3
    mask.view(-1)[0] = True
    return mask


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """Largest absolute difference, relative to the largest reference magnitude."""
    scale = float(expected.abs().max()) or 1.0
    return float((actual.double() - expected).abs().max()) / scale


def assert_as_accurate_as_torch(ours: Tensor, torch32: Tensor, exact: Tensor, stored: float = 0.0) -> None:
    """Our float32 error is at most 4× PyTorch's own float32 error on the same numbers, plus 8 float32
    ulps (and ``stored``, the rounding of a half-precision result)."""
    ours_error, theirs = relative_error(ours, exact), relative_error(torch32, exact)
    assert ours_error <= 4 * theirs + 8 * torch.finfo(torch.float32).eps + stored, (ours_error, theirs)
