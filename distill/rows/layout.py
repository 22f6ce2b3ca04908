"""Row layout shared by every loss: flattening, row masks, compute dtype and chunking.

Convention: the class dimension is the last one; all leading dimensions are flattened into rows, so a
(B, S, V) input is B·S rows of V classes and a 1-D input of C classes is one row. An optional boolean
``mask`` over the leading dimensions drops rows (padding tokens): dropped rows contribute nothing to
the loss or the normaliser and receive a zero gradient.

Work is done in chunks of whole rows so that peak temporary memory stays bounded (about
``chunk_elements`` elements per temporary) whatever the row count, and so that the several passes
over a chunk hit cache rather than main memory.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from distill.errors import InputError
from distill.wire import Kind

#: Elements per chunk of rows (at least one row is always taken). 256 Ki values (1 MiB of float32) per
#: temporary: measured on a 2-core CPU at (64, 32000), smaller chunks pay per-op overhead and lose
#: intra-op parallelism, whole-tensor passes fall out of cache (benchmarks/engine.py).
CHUNK_ELEMENTS = 1 << 18

FLOAT_DTYPES = tuple(Kind.FLOAT.dtypes.values())


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float type is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Turn a flat row-major index into a coordinate tuple of ``shape``."""
    coords: list[int] = []
    for size in reversed(shape):
        coords.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(coords))


RowSelection = slice | Tensor


class Rows(NamedTuple):
    """How a student-shaped tensor maps onto (rows, classes), and which rows are kept.

    Attributes:
        shape: the original student shape (..., C).
        n_rows: total rows, i.e. the product of the leading dimensions (1 for a 1-D input).
        n_classes: C.
        kept: flat indices of the kept rows, or ``None`` when every row is kept.
        n_kept: number of kept rows.
    """

    shape: torch.Size
    n_rows: int
    n_classes: int
    kept: Tensor | None
    n_kept: int

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """The leading (row) dimensions of the original shape."""
        return tuple(self.shape[:-1])

    def flat(self, tensor: Tensor) -> Tensor:
        """View a student-shaped tensor as (n_rows, n_classes), detached: gradients are closed-form, not autograd's."""
        flat = tensor.detach() if tensor.requires_grad else tensor
        return flat if flat.dim() == 2 else flat.reshape(self.n_rows, self.n_classes)

    def chunks(self, chunk_elements: int | None = None) -> Iterator[RowSelection]:
        """Yield row selections (slices, or index tensors when masked) covering the kept rows."""
        per_chunk = max(1, (chunk_elements or CHUNK_ELEMENTS) // self.n_classes)
        for start in range(0, self.n_kept, per_chunk):
            stop = min(start + per_chunk, self.n_kept)
            yield slice(start, stop) if self.kept is None else self.kept[start:stop]

    def row_coords(self, selection: RowSelection, position: int) -> tuple[int, ...]:
        """Original leading-dim coordinates of the ``position``-th row of a chunk."""
        flat_row = selection.start + position if isinstance(selection, slice) else int(selection[position])
        return unravel(flat_row, self.lead_shape) if self.lead_shape else ()


def on_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``: itself when it is there already (``Tensor.to`` costs a dispatch even then)."""
    return tensor if tensor.device == device else tensor.to(device)


def take(flat: Tensor, selection: RowSelection) -> Tensor:
    """The selected rows of a flattened tensor (a view for slices, a gather for index tensors)."""
    return flat[selection] if isinstance(selection, slice) else flat.index_select(0, selection)


def put(out: Tensor, selection: RowSelection, values: Tensor) -> None:
    """Write ``values`` into the selected rows of ``out`` (casting to ``out``'s dtype)."""
    if isinstance(selection, slice):
        out[selection].copy_(values)
    else:
        out.index_copy_(0, selection, values.to(out.dtype))


def check_student(student: Tensor, name: str) -> None:
    """The student must be a non-empty floating tensor with at least one dimension."""
    if not isinstance(student, Tensor):
        raise InputError(name, "must be a tensor")
    if student.dtype not in FLOAT_DTYPES:
        raise InputError(name, f"must be a floating tensor (float16/bfloat16/float32/float64), got {student.dtype}")
    if student.dim() == 0:
        raise InputError(name, "must have at least one dimension (the class dimension is last)")
    if student.numel() == 0:
        raise InputError(name, f"must not be empty, got shape {tuple(student.shape)}")


def make_rows(student: Tensor, mask: Tensor | None, name: str = "student_logits") -> Rows:
    """Validate the student tensor and the optional row mask, and describe the row layout."""
    check_student(student, name)
    shape = student.shape
    n_classes = shape[-1]
    n_rows = student.numel() // n_classes
    if mask is None:
        return Rows(shape, n_rows, n_classes, None, n_rows)
    if mask.dtype != torch.bool:
        raise InputError("mask", f"must be boolean, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape[:-1]):
        raise InputError("mask", f"shape {tuple(mask.shape)} must equal the student's leading shape {tuple(shape[:-1])}")
    kept = mask.to(student.device).reshape(n_rows).nonzero().squeeze(1)
    return Rows(shape, n_rows, n_classes, kept, int(kept.numel()))


def check_same_shape(tensor: Tensor, name: str, rows: Rows) -> None:
    """A teacher-side tensor must match the student's shape exactly and be floating."""
    if not isinstance(tensor, Tensor):
        raise InputError(name, "must be a tensor")
    if tensor.dtype not in FLOAT_DTYPES:
        raise InputError(name, f"must be a floating tensor, got {tensor.dtype}")
    if tuple(tensor.shape) != tuple(rows.shape):
        raise InputError(name, f"shape {tuple(tensor.shape)} must equal the student's shape {tuple(rows.shape)}")


#: The accepted temperatures: T² and 1/T stay far from float32's overflow and underflow. The bounds are
#: a policy, not a measured accuracy limit: float32 accuracy at extreme T is as PyTorch's (both lose it).
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-6, 1e6


def real_number(name: str, value: object) -> float:
    """An option that must be a real number: a string or a boolean is refused, as the service refuses
    them (``"2"`` is not 2, ``True`` is not 1.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(name, f"must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int or Fraction beyond float64
        raise InputError(name, "must be within float64's range") from None


def check_temperature(temperature: float) -> float:
    """T must be a number in [MIN_TEMPERATURE, MAX_TEMPERATURE]."""
    value = real_number("temperature", temperature)
    if not MIN_TEMPERATURE <= value <= MAX_TEMPERATURE:
        raise InputError("temperature", f"must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}], got {temperature}")
    return value


def check_fraction(name: str, value: float) -> float:
    """A weight between two things (label smoothing ε, JSD's β, skew α) must be a number in [0, 1]."""
    number = real_number(name, value)
    if not 0.0 <= number <= 1.0:
        raise InputError(name, f"must be in [0, 1], got {value}")
    return number


def first_bad(bad: Tensor) -> int:
    """Flat index of the first True element of a boolean tensor (caller guarantees one exists)."""
    return int(bad.reshape(-1).nonzero()[0, 0])


def raise_at(name: str, reason: str, rows: Rows, selection: RowSelection, bad: Tensor) -> None:
    """Raise an :class:`InputError` at the first True element of a chunk-shaped ``bad`` mask, if any."""
    if not bool(bad.any()):
        return
    flat = first_bad(bad)
    if bad.dim() == 2:
        position, cls = divmod(flat, bad.shape[1])
        raise InputError(name, reason, (*rows.row_coords(selection, position), cls))
    raise InputError(name, reason, rows.row_coords(selection, flat))
