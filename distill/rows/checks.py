"""Value checks on kept rows: read-only reduction passes, detail only on failure.

Each check reduces a (rows, C) tensor to per-row max (and min where needed; NaN propagates through
both), decides from
those few numbers whether any kept row is bad, and only then scans for the first offending element
so the error can name it. Rows dropped by the mask are never inspected: padding may hold anything.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from distill.errors import InputError
from distill.native import kernels as native
from distill.rows.layout import Rows, compute_dtype, unravel


def _extrema(flat: Tensor, *, minima: bool = True) -> tuple[Tensor, Tensor | None, bool]:
    """Row maxima and (with ``minima``) minima, NaN for rows holding a NaN (one native pass where
    supported), and True when every value is known to be finite (False: unknown, or some are not)."""
    if native.supports(flat):
        return native.row_extrema(flat, minima=minima)
    return flat.amax(dim=-1), flat.amin(dim=-1) if minima else None, False


def _all_finite(per_row: Tensor) -> bool:
    """Whether a few per-row values are all finite, read from their float64 sum (one small reduction:
    NaN and ±inf propagate into it, and float64 cannot overflow on float32 values). A float64 sum
    that overflows reads as "not all finite" and sends the caller to its exact checks."""
    return math.isfinite(float(per_row.sum(dtype=torch.float64)))


def _kept(rows: Rows, per_row: Tensor) -> Tensor:
    return per_row if rows.kept is None else per_row.index_select(0, rows.kept)


def _raise_first(name: str, reason: str, rows: Rows, bad: Tensor) -> None:
    """Raise at the first True element of a (n_rows, C) mask, restricted to kept rows."""
    if rows.kept is not None:
        keep = torch.zeros(rows.n_rows, dtype=torch.bool, device=bad.device)
        keep[rows.kept] = True
        bad = bad & keep[:, None]
    flat = int(bad.reshape(-1).nonzero()[0, 0])
    raise InputError(name, reason, unravel(flat, tuple(rows.shape)))


def check_logits(flat: Tensor, name: str, rows: Rows, *, allow_neg_inf: bool) -> Tensor:
    """Logits must not be NaN or +inf, and each kept row needs a finite value.

    With ``allow_neg_inf`` a -inf logit marks a masked class (where it meets teacher mass is the
    kernels' concern: it shows up there as an infinite row loss). Returns the row maxima of all
    rows, shape (n_rows,), which softmax kernels reuse.
    """
    row_max, _, finite = _extrema(flat, minima=False)
    if finite:
        return row_max
    high = _kept(rows, row_max)
    if _all_finite(high) and (allow_neg_inf or _all_finite(_kept(rows, flat.amin(dim=-1)))):
        return row_max
    if bool(torch.isnan(high).any()):
        _raise_first(name, "must not be NaN", rows, torch.isnan(flat))
    if bool((high == math.inf).any()):
        _raise_first(name, "must not be +inf", rows, flat == math.inf)
    if bool((high == -math.inf).any()):
        if not allow_neg_inf:
            _raise_first(name, "must be finite, got -inf", rows, flat == -math.inf)
        row = int((high == -math.inf).nonzero()[0, 0])
        flat_row = row if rows.kept is None else int(rows.kept[row])
        raise InputError(name, "row has no finite value (every class is -inf)", unravel(flat_row, rows.lead_shape))
    if not allow_neg_inf and bool((_kept(rows, flat.amin(dim=-1)) == -math.inf).any()):
        _raise_first(name, "must be finite, got -inf", rows, flat == -math.inf)
    return row_max


def check_probs(flat: Tensor, name: str, rows: Rows) -> None:
    """Probabilities must lie in [0, 1] (NaN fails the comparison and is reported too)."""
    row_max, row_min, _ = _extrema(flat)
    assert row_min is not None
    high, low = _kept(rows, row_max), _kept(rows, row_min)
    if not bool(((low >= 0) & (high <= 1)).all()):
        _raise_first(name, "must be a probability in [0, 1]", rows, ~((flat >= 0) & (flat <= 1)))


def check_log_probs(flat: Tensor, name: str, rows: Rows) -> None:
    """Log-probabilities must be <= 0 and not NaN (-inf is probability 0 and allowed)."""
    high = _kept(rows, _extrema(flat, minima=False)[0])
    if not bool((high <= 0).all()):
        _raise_first(name, "must be a log-probability <= 0 and not NaN", rows, ~(flat <= 0))


def check_scaled(row_max: Tensor, dtype: torch.dtype, name: str, rows: Rows, temperature: float) -> None:
    """Row maxima of logits divided by T < 1 must stay finite in the compute dtype of ``dtype``.

    Otherwise max s / T overflows to +inf and the softmax is NaN: the request is refused, naming
    ``temperature``. Read from the row maxima the value checks already took (no pass over the
    logits); a very negative logit that T < 1 pushes to −inf is what a masked class is, probability 0.
    Logits held wider than that compute dtype (a float64 teacher of a float32 student) must also fit
    it at all: the request is refused naming ``name``.
    """
    compute = compute_dtype(dtype)
    wider = row_max.dtype == torch.float64 and compute != torch.float64
    if (temperature >= 1.0 and not wider) or rows.n_kept == 0:
        return
    largest = float(_kept(rows, row_max).amax())
    if wider and largest > torch.finfo(compute).max:
        kind = str(compute).removeprefix("torch.")
        raise InputError(name, f"holds logits up to {largest:.3g}, beyond {kind}'s range (the student's compute dtype)")
    if temperature < 1.0 and largest / temperature > torch.finfo(compute).max:
        raise InputError(
            "temperature",
            f"{name} / temperature overflows {str(compute).removeprefix('torch.')} (logits up to {largest:.3g}, T = {temperature:g})",
        )


def check_fits(flat: Tensor, dtype: torch.dtype, name: str, rows: Rows) -> None:
    """Finite values held wider than the compute dtype of ``dtype`` (a float64 teacher of a float32
    student) must fit it: cast there, they would turn into ±inf and the loss with them. One pass over
    the kept rows' magnitudes, only in that mixed case.

    Raises:
        InputError: a kept value beyond the compute dtype's range, naming ``name`` and the first such
            element.
    """
    compute = compute_dtype(dtype)
    if flat.dtype != torch.float64 or compute == torch.float64 or rows.n_kept == 0:
        return
    limit = torch.finfo(compute).max
    largest = float(_kept(rows, flat.abs().amax(dim=-1)).amax())
    if largest > limit:
        kind = str(compute).removeprefix("torch.")
        reason = f"holds values beyond {kind}'s range (the student's compute dtype), up to {largest:.3g} in magnitude"
        _raise_first(name, reason, rows, flat.abs() > limit)
