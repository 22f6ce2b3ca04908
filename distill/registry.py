"""The loss registry: every loss the engine serves, declared once, next to its code.

A loss module defines ``prepare_<name>`` (all validation; see :mod:`distill.rows.prepared`) and calls
:func:`register` with what the signature alone cannot say: which arguments are tensors and of what
kind (float, index, mask) and role (the student, a target, a weight), each option's accepted range
and description, and tiny example inputs. Names, defaults and Python types come from the signature,
so they are written once; :func:`register` refuses a declaration that does not match it.

Everything else is derived from :data:`LOSSES`: the public function (same signature as the prepare
function), the combined objective's term types, the service's routes, request and term schemas,
warm-up, ``/v1/info``, and the Python client's methods and ``Remote*`` modules. Adding a loss is
one module under :mod:`distill.losses` and its tests.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, ParamSpec

from torch import Tensor

from distill.result import LossResult
from distill.rows.prepared import Prepared, run
from distill.wire import Kind

Role = Literal["student", "target", "weight"]
#: Parameters every loss takes, which apply to the whole request (or the whole objective).
COMMON = ("mask", "compute_grad")


@dataclass(frozen=True)
class TensorInput:
    """A tensor argument of a loss.

    Attributes:
        name: the keyword (and request field) name.
        kind: which dtypes it accepts (:class:`~distill.wire.Kind`).
        role: ``student`` (the gradient is taken with respect to it; a request gives one),
            ``target`` (the teacher or the labels: per request, per term in the objective), or
            ``weight`` (a per-class or per-element weight: a setting of the loss).
        description: one line for the API documentation.
        required: whether the signature has no default (filled in by :func:`register`).
    """

    name: str
    kind: Kind
    role: Role
    description: str
    required: bool = False


@dataclass(frozen=True)
class Option:
    """A scalar option of a loss: its constraints and description; type and default from the signature.

    Attributes:
        gt / ge / le: bounds a value must satisfy (floats are also finite).
        choices: the accepted strings, for a string option (``reduction``).
        annotation / default: the signature's type and default (filled in by :func:`register`).
    """

    name: str
    description: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    annotation: Any = None
    default: Any = None


Examples = Callable[[Tensor], Sequence[Mapping[str, Any]]]
P = ParamSpec("P")


@dataclass(frozen=True)
class LossSpec:
    """One registered loss.

    Attributes:
        name: the loss's name: its route (``/v1/<name>``), term tag and client method.
        title: the stem of its schema and class names (``KLDiv`` → ``KLDivRequest``, ``RemoteKLDiv``).
        summary: one line saying what it computes.
        description: a few lines for the API documentation of its request.
        prepare: validates a request into a :class:`~distill.rows.prepared.Prepared`.
        compute: the public loss function (validates and computes), same signature as ``prepare``.
        signature: ``prepare``'s signature (taken once: clients bind every call's arguments to it).
        inputs / options: its tensor arguments and scalar options, in signature order.
        batches: whether concurrent requests may share one engine call (by ``Prepared.key``).
        examples: keyword arguments (besides the student) of small valid calls for a student of any
            shape (..., C), used to warm the engine up and by the registry-wide tests.
    """

    name: str
    title: str
    summary: str
    description: str
    prepare: Callable[..., Prepared]
    compute: Callable[..., LossResult]
    signature: inspect.Signature
    inputs: tuple[TensorInput, ...]
    options: tuple[Option, ...]
    batches: bool
    examples: Examples = field(repr=False)

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every keyword of ``prepare``, in signature order."""
        return tuple(self.signature.parameters)

    @property
    def students(self) -> tuple[TensorInput, ...]:
        """The student inputs (a request gives exactly one); the first is the objective's student."""
        return tuple(tensor for tensor in self.inputs if tensor.role == "student")

    @property
    def term_parameters(self) -> tuple[str, ...]:
        """The keywords a term of the combined objective sets (the student and COMMON are the objective's)."""
        shared = {tensor.name for tensor in self.students} | set(COMMON)
        return tuple(name for name in self.parameters if name not in shared)

    @property
    def reductions(self) -> tuple[str, ...]:
        """The reductions it defines (its ``reduction`` option's choices)."""
        choices = self.option("reduction").choices
        assert choices is not None
        return choices

    def option(self, name: str) -> Option:
        """The option called ``name``."""
        return next(option for option in self.options if option.name == name)


#: The registered losses by name, in registration order.
LOSSES: dict[str, LossSpec] = {}


def register(
    prepare: Callable[P, Prepared],
    *,
    title: str,
    summary: str,
    description: str,
    inputs: Sequence[TensorInput],
    options: Sequence[Option],
    examples: Examples,
    batches: bool = True,
) -> Callable[P, LossResult]:
    """Register the loss of ``prepare_<name>`` and return its public function.

    Raises:
        TypeError: the declared inputs and options (plus :data:`COMMON`) are not exactly the
            signature's parameters, there is no student input, an option has no annotation or default,
            or ``reduction`` lacks choices.
        ValueError: a loss of that name is already registered.
    """
    name = prepare.__name__.removeprefix("prepare_")
    signature = inspect.signature(prepare)
    hints = typing.get_type_hints(prepare)
    declared = [tensor.name for tensor in inputs] + [option.name for option in options] + list(COMMON)
    if sorted(declared) != sorted(signature.parameters):
        raise TypeError(f"{name}: declared {sorted(declared)}, but {prepare.__name__} takes {sorted(signature.parameters)}")
    parameters = signature.parameters
    filled_options = []
    for option in options:
        default = parameters[option.name].default
        if default is inspect.Parameter.empty or option.name not in hints:
            raise TypeError(f"{name}: option {option.name} needs a type annotation and a default in {prepare.__name__}")
        filled_options.append(replace(option, annotation=hints[option.name], default=default))
    if not any(option.name == "reduction" and option.choices for option in options):
        raise TypeError(f"{name}: declare the reduction option with its choices")
    if not any(tensor.role == "student" for tensor in inputs):
        raise TypeError(f"{name}: declare the student input(s)")
    order = list(parameters)
    spec = LossSpec(
        name=name,
        title=title,
        summary=summary,
        description=description,
        prepare=prepare,
        compute=_computing(prepare, summary),
        signature=signature,
        inputs=tuple(
            sorted(
                (replace(tensor, required=parameters[tensor.name].default is inspect.Parameter.empty) for tensor in inputs),
                key=lambda tensor: order.index(tensor.name),
            )
        ),
        options=tuple(sorted(filled_options, key=lambda option: order.index(option.name))),
        batches=batches,
        examples=examples,
    )
    if name in LOSSES:
        raise ValueError(f"a loss named {name!r} is already registered")
    LOSSES[name] = spec
    return spec.compute  # type: ignore[return-value]  # the same parameters as prepare (P)


def _computing(prepare: Callable[..., Prepared], summary: str) -> Callable[..., LossResult]:
    """The public loss for a ``prepare_*`` function: same arguments, validates and computes.

    One signature per loss (the prepare function's), so the two cannot drift apart.
    """

    @functools.wraps(prepare)
    def loss(*args: Any, **kwargs: Any) -> LossResult:
        return run(prepare(*args, **kwargs))

    loss.__name__ = loss.__qualname__ = prepare.__name__.removeprefix("prepare_")
    loss.__doc__ = f"{summary}; formulas in :mod:`{prepare.__module__}`'s docstring, arguments as :func:`{prepare.__name__}`."
    loss.__signature__ = inspect.signature(prepare).replace(return_annotation=LossResult)  # type: ignore[attr-defined]
    del loss.__wrapped__  # type: ignore[attr-defined]
    return loss
