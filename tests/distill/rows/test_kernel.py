"""Summing per-row losses: exactly rounded for few rows, float64 beyond, never raising."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from distill.rows.kernel import EXACT_SUM_ROWS, row_loss_sum


@given(st.lists(st.floats(-(2.0**100), 2.0**100, width=32), min_size=0, max_size=EXACT_SUM_ROWS))
def test_few_rows_sum_exactly_rounded_in_any_order(values):
    row_loss = torch.tensor(values, dtype=torch.float32)
    exact = float(sum((Fraction(v) for v in row_loss.tolist()), Fraction(0)))
    assert row_loss_sum(row_loss) == exact
    assert row_loss_sum(row_loss.flip(0)) == exact


def test_many_rows_sum_in_float64():
    row_loss = torch.rand(EXACT_SUM_ROWS * 8, generator=torch.Generator().manual_seed(0))
    assert row_loss_sum(row_loss) == pytest.approx(math.fsum(row_loss.tolist()), rel=1e-12)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([1e308, 1e308], math.inf), ([-1e308, -1e308], -math.inf), ([math.inf, 1.0], math.inf), ([math.inf, -math.inf], math.nan)],
)
def test_sums_beyond_float64_or_of_both_infinities_do_not_raise(values, expected):
    total = row_loss_sum(torch.tensor(values, dtype=torch.float64))
    assert math.isnan(total) if math.isnan(expected) else total == expected
