"""The fused CPU kernels (``csrc/``): ctypes declarations, calls, and the adapters the losses use.

Why a compiled kernel: with eager torch ops a loss is a chain of whole-tensor passes (softmax, max,
products, sums…), and on CPU the transcendental passes dominate. The fused kernels do a softmax loss
row by row in a single exponential pass, with the row still in cache for the gradient pass, and
write the gradient straight into the output. They cover float32 and float64 CPU tensors for
hard- and soft-target cross-entropy, KL divergence, the LLM divergences, BCE with logits and the
feature-matching losses (one pass reading both tensors and writing the gradient); everything else (CUDA,
float16/bfloat16 storage, BCE on probabilities, element-wise ``none`` output) runs on torch ops.

A loss hands the chunked driver (:mod:`distill.rows.kernel`) a *fused kernel*: a function of one
:class:`FusedCall` (every kept row at once) that returns whether it computed it. The builders at the
end of this module (:func:`soft_fused`, :func:`bce_fused`, :func:`ce_hard_fused`) close over a
request's options and per-row data and make one. Loading and the on/off switch are
:mod:`distill.native.loader`'s; row work is split over ``torch.get_num_threads()`` OpenMP threads.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from distill.native import loader

TEACHER_KINDS = {"logits": 0, "probs": 1, "log_probs": 2}
LOSS_KL, LOSS_CE = 0, 1
#: The divergences of :mod:`distill.losses.divergences`, as the kernel numbers them.
DIV_FORWARD_KL, DIV_REVERSE_KL, DIV_JSD, DIV_SKEW_KL, DIV_SKEW_REVERSE_KL, DIV_TVD = range(6)
#: The feature losses of :mod:`distill.losses.features`, as the kernel numbers them.
FEATURE_MSE, FEATURE_L1, FEATURE_SMOOTH_L1, FEATURE_COSINE = range(4)
_DTYPES = {torch.float32: 0, torch.float64: 1}


class GradScale(ctypes.Structure):
    _fields_ = (("per_row", ctypes.c_void_p), ("all", ctypes.c_double))


class ExtremaArgs(ctypes.Structure):
    _fields_ = (
        ("dtype", ctypes.c_int),
        ("rows", ctypes.c_int64),
        ("classes", ctypes.c_int64),
        ("values", ctypes.c_void_p),
        ("max", ctypes.c_void_p),
        ("min", ctypes.c_void_p),
    )


#: The leading fields of every loss's argument struct (the rows to compute) and its outputs, as in
#: csrc/kernels.cpp; :func:`_row_fields` fills both.
_ROWS = (
    ("dtype", ctypes.c_int),
    ("rows", ctypes.c_int64),
    ("classes", ctypes.c_int64),
    ("kept", ctypes.c_void_p),
    ("student", ctypes.c_void_p),
)
_OUTPUTS = (("scale", GradScale), ("grad", ctypes.c_void_p), ("row_loss", ctypes.c_void_p))


class HardArgs(ctypes.Structure):
    _fields_ = (
        *_ROWS,
        ("row_max", ctypes.c_void_p),
        ("labels", ctypes.c_void_p),
        ("ignore_index", ctypes.c_int64),
        ("weight", ctypes.c_void_p),
        ("weight_sum", ctypes.c_double),
        ("epsilon", ctypes.c_double),
        *_OUTPUTS,
    )


class SoftArgs(ctypes.Structure):
    _fields_ = (
        *_ROWS,
        ("teacher", ctypes.c_void_p),
        ("row_max", ctypes.c_void_p),
        ("teacher_kind", ctypes.c_int),
        ("loss", ctypes.c_int),
        ("inv_t", ctypes.c_double),
        ("factor", ctypes.c_double),
        ("weight", ctypes.c_void_p),
        ("weight_sum", ctypes.c_double),
        ("epsilon", ctypes.c_double),
        *_OUTPUTS,
        ("scratch", ctypes.c_void_p),
    )


class BceArgs(ctypes.Structure):
    _fields_ = (
        *_ROWS,
        ("teacher", ctypes.c_void_p),
        ("teacher_kind", ctypes.c_int),
        ("inv_t", ctypes.c_double),
        ("factor", ctypes.c_double),
        ("weight", ctypes.c_void_p),
        ("weight_row_stride", ctypes.c_int64),
        ("pos_weight", ctypes.c_void_p),
        ("pos_weight_row_stride", ctypes.c_int64),
        *_OUTPUTS,
    )


class DivergenceArgs(ctypes.Structure):
    _fields_ = (
        *_ROWS,
        ("teacher", ctypes.c_void_p),
        ("row_max", ctypes.c_void_p),
        ("teacher_kind", ctypes.c_int),
        ("divergence", ctypes.c_int),
        ("parameter", ctypes.c_double),
        ("inv_t", ctypes.c_double),
        ("factor", ctypes.c_double),
        *_OUTPUTS,
        ("scratch", ctypes.c_void_p),
    )


class FeatureArgs(ctypes.Structure):
    _fields_ = (
        *_ROWS,
        ("teacher", ctypes.c_void_p),
        ("loss", ctypes.c_int),
        ("parameter", ctypes.c_double),
        *_OUTPUTS,
    )


class FusedCall(NamedTuple):
    """What a fused kernel computes in one call: every kept row.

    Attributes:
        student: the student as (n_rows, C), contiguous, in the compute dtype.
        kept: int64 indices of the kept rows, or ``None`` when every row is kept.
        grad_scale: a float, or a contiguous (n_kept,) tensor of per-row scales.
        grad: the (n_rows, C) gradient to write (kept rows only), or ``None``.
        row_loss: the (n_kept,) per-row losses to write.
    """

    student: Tensor
    kept: Tensor | None
    grad_scale: float | Tensor
    grad: Tensor | None
    row_loss: Tensor


#: Returns whether it computed the call (False: use the chunked torch kernel).
Fused = Callable[[FusedCall], bool]

_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "GradScale": GradScale,
    "ExtremaArgs": ExtremaArgs,
    "HardArgs": HardArgs,
    "SoftArgs": SoftArgs,
    "BceArgs": BceArgs,
    "DivergenceArgs": DivergenceArgs,
    "FeatureArgs": FeatureArgs,
}


def _load() -> ctypes.CDLL | None:
    library = loader.load_library("distill.native._kernels", _STRUCTS)
    if library is None:
        return None
    entry_points = (
        ("distill_extrema", ExtremaArgs),
        ("distill_ce_hard", HardArgs),
        ("distill_soft", SoftArgs),
        ("distill_bce", BceArgs),
        ("distill_divergence", DivergenceArgs),
        ("distill_features", FeatureArgs),
    )
    for name, args in entry_points:
        function = getattr(library, name)
        function.argtypes = (ctypes.POINTER(args), ctypes.c_int)
        function.restype = ctypes.c_int
    library.distill_check_labels.argtypes = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    library.distill_check_labels.restype = ctypes.c_int
    library.distill_isa.restype = ctypes.c_int
    library.distill_probe.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int)
    library.distill_probe.restype = ctypes.c_int
    return library


_LIBRARY = _load()


def available() -> bool:
    """Whether the compiled kernels were built and load."""
    return _LIBRARY is not None


def enabled() -> bool:
    """Whether losses use the compiled kernels: built, loaded, and not switched off."""
    return _LIBRARY is not None and loader.enabled()


def instruction_set() -> str:
    """Which build of the kernels runs on this CPU: ``avx512``, ``avx2`` or ``baseline`` (``none`` if
    not built). The environment variable ``DISTILL_ISA`` (``avx2`` or ``baseline``), read when the
    library loads, caps it."""
    if _LIBRARY is None:
        return "none"
    return {3: "avx512", 2: "avx2"}.get(_LIBRARY.distill_isa(), "baseline")


def supports(student: Tensor) -> bool:
    """Whether a (rows, C) student can be computed natively: CPU, float32/float64, contiguous."""
    return enabled() and student.is_cpu and student.dtype in _DTYPES and student.is_contiguous()


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def operand(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A tensor as the kernels read it: the compute dtype, contiguous (the tensor itself when it already is)."""
    if tensor is None or (tensor.dtype == dtype and tensor.is_contiguous()):
        return tensor
    return tensor.to(dtype).contiguous()


def _scale(scale: float | Tensor) -> GradScale:
    if isinstance(scale, Tensor):
        return GradScale(scale.data_ptr(), 0.0)
    return GradScale(None, float(scale))


def _threads() -> int:
    return max(1, torch.get_num_threads())


def transcendental(name: str, values: Tensor, out: Tensor) -> None:
    """``out = exp(values)`` (``name="exp"``, values <= 0) or ``log(values)`` (values > 0) with the losses'
    own vector code, for measuring its throughput (benchmarks/engine.py --floors). Float32, contiguous,
    (rows, C), on CPU; the library must be loaded."""
    assert _LIBRARY is not None and values.dtype == out.dtype == torch.float32 and values.is_contiguous() and out.is_contiguous()
    rows, classes = values.shape
    _LIBRARY.distill_probe(0 if name == "exp" else 1, values.data_ptr(), out.data_ptr(), rows, classes, _threads())


def row_extrema(values: Tensor, *, minima: bool) -> tuple[Tensor, Tensor | None, bool]:
    """Per-row maximum (and, with ``minima``, minimum) of a supported (rows, C) tensor, NaN where a row
    holds a NaN, and whether every value is finite.

    The same values as ``amax``/``amin`` over the last dimension, in one pass on this library's
    threads (see :func:`supports`); the finiteness answer saves the caller inspecting them, and a
    caller that needs the minima only when some value is not finite can skip allocating them.
    """
    rows, classes = values.shape
    high = torch.empty(rows, dtype=values.dtype)
    low = torch.empty(rows, dtype=values.dtype) if minima else None
    args = ExtremaArgs(_DTYPES[values.dtype], rows, classes, values.data_ptr(), high.data_ptr(), _pointer(low))
    assert _LIBRARY is not None
    return high, low, _LIBRARY.distill_extrema(ctypes.byref(args), _threads()) == 0


#: :func:`label_range`'s answers.
LABELS_IN_RANGE, LABELS_SOME_IGNORED, LABELS_OUT_OF_RANGE = 0, 1, 2


def label_range(labels: Tensor, classes: int, ignore_index: int) -> int:
    """Whether contiguous int64 CPU ``labels`` are class indices in [0, classes): :data:`LABELS_IN_RANGE`
    (all are, none equals ``ignore_index``), :data:`LABELS_SOME_IGNORED` (the others equal
    ``ignore_index``) or :data:`LABELS_OUT_OF_RANGE` (some label is neither). One pass, no allocation."""
    assert _LIBRARY is not None
    return int(_LIBRARY.distill_check_labels(labels.data_ptr(), labels.numel(), classes, ignore_index))


def _row_fields(student: Tensor, kept: Tensor | None, scale: float | Tensor, grad: Tensor | None, row_loss: Tensor) -> dict[str, Any]:
    """The fields every loss's argument struct shares: dtype, layout, student, scale and outputs."""
    return {
        "dtype": _DTYPES[student.dtype],
        "rows": row_loss.numel(),
        "classes": student.shape[1],
        "kept": _pointer(kept),
        "student": student.data_ptr(),
        "scale": _scale(scale),
        "grad": _pointer(grad),
        "row_loss": row_loss.data_ptr(),
    }


def ce_hard(
    student: Tensor,
    kept: Tensor | None,
    row_max: Tensor | None,
    labels: Tensor,
    ignore_index: int,
    weight: Tensor | None,
    epsilon: float,
    scale: float | Tensor,
    grad: Tensor | None,
    row_loss: Tensor,
) -> bool:
    """Hard-label cross-entropy of the kept rows into ``row_loss`` (and ``grad``); False on failure.

    ``labels`` (int64), ``row_max`` and ``weight`` must already be contiguous in the right dtypes,
    ``scale`` a float or a contiguous per-kept-row tensor of the compute dtype. The struct is filled
    positionally: this is the call small requests make, and keywords cost a microsecond here.
    """
    n_classes = student.shape[1]
    args = HardArgs(
        _DTYPES[student.dtype],
        row_loss.numel(),
        n_classes,
        _pointer(kept),
        student.data_ptr(),
        _pointer(row_max),
        labels.data_ptr(),
        ignore_index,
        _pointer(weight),
        float(n_classes) if weight is None else float(weight.sum()),
        epsilon,
        _scale(scale),
        _pointer(grad),
        row_loss.data_ptr(),
    )
    assert _LIBRARY is not None
    return _LIBRARY.distill_ce_hard(ctypes.byref(args), _threads()) == 0


def soft(
    student: Tensor,
    teacher: Tensor,
    kind: str,
    loss: int,
    kept: Tensor | None,
    row_max: Tensor | None,
    temperature: float,
    factor: float,
    weight: Tensor | None,
    epsilon: float,
    scale: float | Tensor,
    grad: Tensor | None,
    row_loss: Tensor,
) -> bool:
    """KL divergence (``LOSS_KL``) or soft-target cross-entropy (``LOSS_CE``) of the kept rows."""
    threads = _threads()
    n_classes = student.shape[1]
    scratch = torch.empty(threads * n_classes if grad is not None else 0, dtype=student.dtype)
    args = SoftArgs(
        **_row_fields(student, kept, scale, grad, row_loss),
        teacher=teacher.data_ptr(),
        row_max=_pointer(row_max),
        teacher_kind=TEACHER_KINDS[kind],
        loss=loss,
        inv_t=1.0 / temperature,
        factor=factor,
        weight=_pointer(weight),
        weight_sum=float(n_classes) if weight is None else float(weight.sum()),
        epsilon=epsilon,
        scratch=scratch.data_ptr(),
    )
    assert _LIBRARY is not None
    return _LIBRARY.distill_soft(ctypes.byref(args), threads) == 0


def bce(
    student: Tensor,
    teacher: Tensor,
    kind: str,
    kept: Tensor | None,
    temperature: float,
    factor: float,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    scale: float | Tensor,
    grad: Tensor | None,
    row_loss: Tensor,
) -> bool:
    """BCE with logits of the kept rows. ``weight``/``pos_weight`` are (rows, C) with row stride 0 or C."""
    args = BceArgs(
        **_row_fields(student, kept, scale, grad, row_loss),
        teacher=teacher.data_ptr(),
        teacher_kind=TEACHER_KINDS[kind],
        inv_t=1.0 / temperature,
        factor=factor,
        weight=_pointer(weight),
        weight_row_stride=0 if weight is None else weight.stride(0),
        pos_weight=_pointer(pos_weight),
        pos_weight_row_stride=0 if pos_weight is None else pos_weight.stride(0),
    )
    assert _LIBRARY is not None
    return _LIBRARY.distill_bce(ctypes.byref(args), _threads()) == 0


def divergence(
    student: Tensor,
    teacher: Tensor,
    kind: str,
    code: int,
    parameter: float,
    kept: Tensor | None,
    row_max: Tensor | None,
    temperature: float,
    factor: float,
    scale: float | Tensor,
    grad: Tensor | None,
    row_loss: Tensor,
) -> bool:
    """One of the ``DIV_*`` divergences of the kept rows into ``row_loss`` (and ``grad``); False on failure."""
    threads = _threads()
    n_classes = student.shape[1]
    scratch = torch.empty(2 * threads * n_classes, dtype=student.dtype)
    args = DivergenceArgs(
        **_row_fields(student, kept, scale, grad, row_loss),
        teacher=teacher.data_ptr(),
        row_max=_pointer(row_max),
        teacher_kind=TEACHER_KINDS[kind],
        divergence=code,
        parameter=parameter,
        inv_t=1.0 / temperature,
        factor=factor,
        scratch=scratch.data_ptr(),
    )
    assert _LIBRARY is not None
    return _LIBRARY.distill_divergence(ctypes.byref(args), threads) == 0


def divergence_fused(teacher: Tensor, kind: str, row_max: Tensor, code: int, parameter: float, temperature: float, factor: float) -> Fused:
    """The divergence kernel (``DIV_*``, with β or α as ``parameter``) for (rows, C) teacher rows of ``kind``."""

    def fused(call: FusedCall) -> bool:
        dtype = call.student.dtype
        teacher_rows = operand(teacher, dtype)
        assert teacher_rows is not None
        return divergence(
            call.student,
            teacher_rows,
            kind,
            code,
            parameter,
            call.kept,
            operand(row_max, dtype),
            temperature,
            factor,
            call.grad_scale,
            call.grad,
            call.row_loss,
        )

    return fused


def soft_fused(
    teacher: Tensor, kind: str, row_max: Tensor, loss: int, temperature: float, factor: float, weight: Tensor | None, epsilon: float
) -> Fused:
    """The soft-target kernel (``LOSS_KL`` or ``LOSS_CE``) for (rows, C) teacher rows of ``kind``:
    student and teacher exponentials in one pass per row."""

    def fused(call: FusedCall) -> bool:
        dtype = call.student.dtype
        teacher_rows = operand(teacher, dtype)
        assert teacher_rows is not None
        return soft(
            call.student,
            teacher_rows,
            kind,
            loss,
            call.kept,
            operand(row_max, dtype),
            temperature,
            factor,
            operand(weight, dtype),
            epsilon,
            call.grad_scale,
            call.grad,
            call.row_loss,
        )

    return fused


def _row_operand(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A (rows, C) weight in the layout the BCE kernel reads: rows contiguous, or one shared row."""
    if tensor is None:
        return None
    converted = tensor.to(dtype)
    if converted.stride(0) == 0:
        return converted[:1].contiguous().expand_as(converted)
    return converted.contiguous()


def bce_fused(teacher: Tensor, kind: str, temperature: float, factor: float, weight: Tensor | None, pos_weight: Tensor | None) -> Fused:
    """The BCE-with-logits kernel: one pass, softplus(−x) = max(−x, 0) + log1p(e^−|x|)."""

    def fused(call: FusedCall) -> bool:
        dtype = call.student.dtype
        teacher_rows = operand(teacher, dtype)
        assert teacher_rows is not None
        return bce(
            call.student,
            teacher_rows,
            kind,
            call.kept,
            temperature,
            factor,
            _row_operand(weight, dtype),
            _row_operand(pos_weight, dtype),
            call.grad_scale,
            call.grad,
            call.row_loss,
        )

    return fused


def ce_hard_fused(labels: Tensor, row_max: Tensor, weight: Tensor | None, ignore_index: int, epsilon: float) -> Fused:
    """The hard-label cross-entropy kernel: one exponential pass per row."""

    def fused(call: FusedCall) -> bool:
        dtype = call.student.dtype
        return ce_hard(
            call.student,
            call.kept,
            operand(row_max, dtype),
            labels.contiguous(),
            ignore_index,
            operand(weight, dtype),
            epsilon,
            call.grad_scale,
            call.grad,
            call.row_loss,
        )

    return fused


def features_fused(teacher: Tensor, loss: int, parameter: float = 0.0) -> Fused:
    """A feature-matching kernel (``FEATURE_*``): one pass per row reading student and teacher and
    writing the gradient (the cosine: two, the row's norms first). ``parameter`` is smooth L1's β (the
    kernel declines one that is 0 or infinite in the compute dtype) or the cosine's ε."""

    def fused(call: FusedCall) -> bool:
        student = call.student
        target = operand(teacher, student.dtype)  # held until the call returns
        assert target is not None
        args = FeatureArgs(
            _DTYPES[student.dtype],
            call.row_loss.numel(),
            student.shape[1],
            _pointer(call.kept),
            student.data_ptr(),
            target.data_ptr(),
            loss,
            parameter,
            _scale(call.grad_scale),
            _pointer(call.grad),
            call.row_loss.data_ptr(),
        )
        assert _LIBRARY is not None
        return _LIBRARY.distill_features(ctypes.byref(args), _threads()) == 0

    return fused
