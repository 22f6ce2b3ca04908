"""Request and response models: the published contract, derived from the loss registry.

Each registered loss (:data:`distill.LOSSES`) gets a request model ``<Title>Request`` whose fields are
exactly its engine function's parameters (names, defaults, types and ranges from the registry),
plus ``dtype`` and ``response_encoding``; and a term model ``<Title>Term`` for the combined
objective, derived from the same declaration: the loss's targets, weights and options, with
``loss`` and ``coefficient`` instead of the student and the shared fields, and without
``reduction="none"``.

Tensor fields validate through :func:`service.codec.tensors.decode` (a plain validator), so pydantic
checks the envelope (unknown fields, enums, ranges) while numbers never pass through it one by one;
the OpenAPI spec shows each tensor field as the generator-safe tensor object of its kind
(:mod:`service.pipeline.tensor_schemas`); nested lists are read too, unpublished.
Unknown fields are rejected everywhere: a misspelt option must not be silently ignored.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import replace
from typing import Annotated, Any, Literal, TypeAlias, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from distill import FEATURE_NAME, LOGITS, LOSSES, MAX_COEFFICIENT, STUDENT_LOGITS, LossSpec, Option, TensorInput, distill
from distill.functional import FUNCTIONS, LEGACY_FLAGS, FunctionalSpec
from distill.wire import Kind
from service.codec.tensors import WireTensor, decode
from service.errors import TOO_LARGE, TensorTooLarge
from service.pipeline.tensor_schemas import BY_KIND, DOUBLE, FloatDtype, Loss, ResponseEncoding
from service.pipeline.tensor_schemas import FloatTensor as FloatTensorSchema

DEFAULT_MAX_ELEMENTS = 1 << 25
#: Most terms one combined objective takes, and most named student tensors (each is there for a term).
MAX_TERMS = 16


def _student_name(name: str) -> str:
    if not FEATURE_NAME.fullmatch(name):
        raise PydanticCustomError(
            "student_name", "must be a letter or _, then letters, digits, _ or -: at most 64 characters; got '{name}'", {"name": name[:80]}
        )
    return name


#: A name in ``student_features`` (and what a term's ``student`` may say).
StudentName = Annotated[
    str, AfterValidator(_student_name), WithJsonSchema({"type": "string", "pattern": f"^{FEATURE_NAME.pattern}$", "maxLength": 64})
]


def _tensor(kind: Kind, scalar: bool = False) -> Any:
    """The type of a tensor field: decoded by :func:`decode`, published as its kind's tensor object;
    with ``scalar``, a bare JSON number is a 0-d tensor."""

    def validate(value: Any, info: ValidationInfo) -> WireTensor:
        if isinstance(value, WireTensor):
            return value
        context = info.context or {}
        limit = context.get("max_elements", DEFAULT_MAX_ELEMENTS)
        field = info.field_name or "tensor"
        try:
            return decode(value, kind, field, limit, single=context.get("json_dtype") == "float32", scalar=scalar)
        except TensorTooLarge as error:  # pydantic then names the tensor by its whole path (terms.0.teacher_logits)
            raise PydanticCustomError(TOO_LARGE, "{reason}", {"reason": str(error).removeprefix(f"{field}: ")}) from None

    return Annotated[WireTensor, PlainValidator(validate, json_schema_input_type=BY_KIND[kind])]


FloatTensor: TypeAlias = _tensor(Kind.FLOAT)  # type: ignore[valid-type]
LabelTensor: TypeAlias = _tensor(Kind.INDEX)  # type: ignore[valid-type]
MaskTensor: TypeAlias = _tensor(Kind.MASK)  # type: ignore[valid-type]
TENSOR_TYPES: dict[Kind, Any] = {Kind.FLOAT: FloatTensor, Kind.INDEX: LabelTensor, Kind.MASK: MaskTensor}

#: The type and description of each parameter every loss shares (:data:`distill.COMMON`).
COMMON_FIELDS: dict[str, tuple[Any, str]] = {
    "mask": (MaskTensor | None, "Boolean over the leading dimensions; false rows are dropped."),
    "compute_grad": (bool, "Return d(loss)/d(student input); false skips the gradient."),
}


class Strict(BaseModel):
    """Base for every request model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class Encodings(Strict):
    """The fields of every request that are about the wire, not the loss."""

    dtype: FloatDtype = Field("float32", description="dtype of float tensors sent without one (values or nested lists).")
    response_encoding: ResponseEncoding | None = Field(
        None, description="Tensor encoding of the response (values, base64, or json: nested lists); default mirrors the student's."
    )


def tensor_field(tensor: TensorInput) -> tuple[Any, Any]:
    """A tensor argument as a field: required, or optional with default None."""
    annotation = TENSOR_TYPES[tensor.kind]
    if tensor.required:
        return annotation, Field(description=tensor.description)
    return annotation | None, Field(None, description=tensor.description)


def option_field(option: Option, choices: tuple[str, ...] | None = None) -> tuple[Any, Any]:
    """A scalar option as a field, with its default, range and description; floats must be finite.

    Strict: a string is not a number or a boolean, a number is not a boolean (``"2"``, ``"false"``,
    ``1`` for a flag are 422s); an integer is accepted for a float.
    """
    choices = choices or option.choices
    annotation = Literal[choices] if choices else option.annotation
    if choices and option.default is None:
        annotation = annotation | None
    floating = float in (typing.get_args(annotation) or (annotation,))
    bounds = {name: value for name in ("gt", "ge", "le") if (value := getattr(option, name)) is not None}
    extra: dict[str, Any] = {"allow_inf_nan": False} if floating else {}
    strict = None if choices else True  # a Literal is exact already
    return annotation, Field(option.default, description=option.description, strict=strict, **bounds, **extra)


def common_field(name: str, signature: inspect.Signature) -> tuple[Any, Any]:
    """A parameter every loss shares (``mask``, ``compute_grad``) as a field, with ``signature``'s default."""
    annotation, description = COMMON_FIELDS[name]
    default = signature.parameters[name].default
    return annotation, Field(default, description=description, strict=True if annotation is bool else None)


def _fields(spec: LossSpec, names: tuple[str, ...], reductions: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fields of the named parameters of ``spec``, in signature order."""
    tensors = {tensor.name: tensor for tensor in spec.inputs}
    options = {option.name: option for option in spec.options}
    fields: dict[str, Any] = {}
    for name in names:
        if name in tensors:
            fields[name] = tensor_field(tensors[name])
        elif name in options:
            fields[name] = option_field(options[name], reductions if name == "reduction" else None)
        else:
            fields[name] = common_field(name, spec.signature)
    return fields


def request_model(spec: LossSpec) -> type[Strict]:
    """``<Title>Request``: the loss's parameters (the engine's, one for one) and the wire fields."""
    fields = _fields(spec, spec.parameters)
    return create_model(f"{spec.title}Request", __base__=Encodings, __doc__=spec.description, **fields)


def term_model(spec: LossSpec) -> type[Strict]:
    """``<Title>Term``: a term of the combined objective, derived from the same declaration."""
    reductions = tuple(reduction for reduction in spec.reductions if reduction != "none")
    fields: dict[str, Any] = {
        "loss": (Literal[spec.name], Field(description="Which loss this term is.")),
        "coefficient": (
            float,
            Field(1.0, ge=-MAX_COEFFICIENT, le=MAX_COEFFICIENT, strict=True, description="Multiplier a_k of this term in Σ a_k · L_k."),
        ),
        "student": (
            StudentName,
            Field(LOGITS, description=f"The student this term applies to: {LOGITS} (default) or a name in student_features."),
        ),
        **_fields(spec, spec.term_parameters, reductions),
    }
    return create_model(f"{spec.title}Term", __base__=Strict, __doc__=f"A term of the combined objective: {spec.description}", **fields)


def _named_map(schema: dict[str, Any]) -> None:
    """``student_features`` as a map (what generators make of ``additionalProperties``) whose names follow
    the pattern (``propertyNames``: the same set as ``patternProperties``, which generators ignore)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "object":
            (tensor,) = option.pop("patternProperties").values()
            option["additionalProperties"] = tensor
            option["propertyNames"] = {"pattern": f"^{FEATURE_NAME.pattern}$", "maxLength": 64}


StudentFeatures = TypeAliasType(
    "StudentFeatures", Annotated[dict[StudentName, FloatTensor], Field(max_length=MAX_TERMS, json_schema_extra=_named_map)]
)


def distill_request(terms: list[type[Strict]]) -> type[Strict]:
    """``DistillRequest``: the student, a list of terms (tagged by ``loss``), and the shared fields."""
    term: Any = TypeAliasType("Term", Annotated[Union[tuple(terms)], Field(discriminator="loss")])  # noqa: UP007  # a union built from a list
    objective = inspect.signature(distill)
    term_grads = objective.parameters["term_grads"].default
    fields: dict[str, Any] = {
        "student_logits": tensor_field(replace(STUDENT_LOGITS, required=True)),
        "student_features": (
            StudentFeatures | None,
            Field(None, description="Further student tensors by name (hidden states, attention maps) for terms whose student names them."),
        ),
        "terms": (list[term], Field(min_length=1, max_length=MAX_TERMS)),
        "term_grads": (bool, Field(term_grads, strict=True, description="Also return each term's own gradient.")),
        "mask": common_field("mask", objective),
        "compute_grad": common_field("compute_grad", objective),
    }
    doc = "Σ_k a_k · L_k(student): each term any loss with its own targets and options."
    return create_model("DistillRequest", __base__=Encodings, __doc__=doc, **fields)


#: The route of each function of torch.nn.functional's loss family: ``functional.<name>``.
FUNCTIONAL = "functional."
_OPTION_TYPES = {"float": float, "int": int, "bool": bool, float: float, int: int, bool: bool}


#: What a field of :attr:`Kind.NUMBER` takes, as PyTorch tells its two meanings apart by dtype.
_NUMBER_FIELD = ": floats, or class indices as integers (JSON integers, or dtype int64 with values)"


def functional_model(spec: FunctionalSpec) -> type[Strict]:
    """``Functional<Name>Request``: the function's own arguments (names and defaults), the legacy flags
    where it takes them, ``grad_wrt``, and the wire fields. Tensors may be 0-d (a bare JSON number)."""
    fields: dict[str, Any] = {}
    for name, parameter in spec.signature.parameters.items():
        required = parameter.default is inspect.Parameter.empty
        if name in spec.tensors:
            annotation: Any = _tensor(spec.kind(name), scalar=True)
            description = f"{name} of {spec.name}" + (_NUMBER_FIELD if spec.kind(name) is Kind.NUMBER else "")
            fields[name] = (
                (annotation, Field(description=description)) if required else (annotation | None, Field(None, description=description))
            )
        elif name == "reduction":
            fields[name] = (Literal[spec.reductions], Field(parameter.default, description="none, or how the loss elements are reduced"))
        elif name in LEGACY_FLAGS:
            fields[name] = (bool | None, Field(None, strict=True, description="Legacy flag, mapped to a reduction as PyTorch maps it."))
        else:
            kind = _OPTION_TYPES[parameter.annotation]
            finite: dict[str, Any] = {"allow_inf_nan": False} if kind is float else {}
            fields[name] = (kind, Field(parameter.default, strict=True, **finite))
    differentiable: Any = Literal.__getitem__(spec.differentiable)
    fields["grad_wrt"] = (
        list[differentiable] | None,
        Field(None, description=f"The arguments to return gradients for (default: all of {', '.join(spec.differentiable)})."),
    )
    title = "".join(part.title() for part in spec.name.split("_"))
    doc = f"torch.nn.functional.{spec.name}, with the gradients of the loss; arguments as PyTorch names them."
    return create_model(f"Functional{title}Request", __base__=Encodings, __doc__=doc, **fields)


TERMS: dict[str, type[Strict]] = {spec.name: term_model(spec) for spec in LOSSES.values()}
DistillRequest = distill_request(list(TERMS.values()))

#: The request model of every route: each registered loss, ``distill`` (the combined objective), and
#: ``functional.<name>`` for each function of the family.
REQUESTS: dict[str, type[Strict]] = {
    **{spec.name: request_model(spec) for spec in LOSSES.values()},
    "distill": DistillRequest,
    **{FUNCTIONAL + spec.name: functional_model(spec) for spec in FUNCTIONS.values()},
}


def validate(route: str, document: dict[str, Any], max_elements: int) -> Strict:
    """The request of ``route`` from a parsed body; tensors decoded with ``max_elements`` as the limit.

    Raises:
        pydantic.ValidationError: a field is missing, unknown, or invalid (including bad tensors, and
            tensors of more than ``max_elements`` elements: errors of type :data:`TOO_LARGE`).
    """
    model = REQUESTS[route]
    json_dtype = document.get("dtype", model.model_fields["dtype"].default)
    return model.model_validate(document, context={"max_elements": max_elements, "json_dtype": json_dtype})


#: The published types of response fields (responses are rendered by :mod:`service.pipeline.render`;
#: these models document them): a tensor in the request's encoding, and a loss that is a number or,
#: for reduction ``none``, a tensor.
TensorOutput: TypeAlias = FloatTensorSchema
LossOutput: TypeAlias = Loss
Number = Annotated[float, WithJsonSchema(DOUBLE)]
Gradients = TypeAliasType("Gradients", dict[str, FloatTensorSchema])
LossName = TypeAliasType("LossName", Literal[tuple(LOSSES)])  # type: ignore[valid-type]


class LossResponse(BaseModel):
    """A loss, its gradient with respect to the student input, and its normalisation.

    Tensors come in the student's encoding (or ``response_encoding``): tensor objects, or nested lists
    for a student sent as nested lists."""

    loss: LossOutput = Field(description="A number, or the unreduced tensor for reduction 'none'.")
    grad: TensorOutput | None = Field(description="d(loss)/d(student input), shaped and encoded like the student input.")
    loss_sum: Number = Field(description="Unreduced sum of the loss elements; loss = loss_sum / normalizer.")
    normalizer: Number = Field(description="What loss_sum was divided by (rows, elements or summed weights; 1 for sum/none).")
    reduction: str


class FunctionalResponse(BaseModel):
    """A function of torch.nn.functional's loss family, its gradients, and its normalisation."""

    loss: LossOutput = Field(description="A number, or the unreduced tensor for reduction 'none'.")
    reduction: str = Field(description="The reduction applied (after mapping the legacy flags).")
    loss_sum: Number = Field(description="Sum of the unreduced loss elements; loss = loss_sum / normalizer.")
    normalizer: Number = Field(description="What loss_sum was divided by (elements, batch size or summed weights; 1 for sum/none).")
    grads: Gradients = Field(
        description="Argument name → d(loss)/d(argument), shaped and encoded like it (a 0-d one sent as a number: a number)."
    )


_term_fields: dict[str, Any] = {
    "name": (LossName, ...),
    "coefficient": (Number, ...),
    "student": (str, Field(description="The student it applies to: student_logits or a name in student_features.")),
}
TermResponse = create_model(
    "TermResponse",
    __base__=LossResponse,
    __doc__="One term of the combined objective (its own loss, before the coefficient).",
    **_term_fields,
)
_distill_fields: dict[str, Any] = {
    "loss": (Number, ...),
    "grad": (TensorOutput | None, Field(description="d(loss)/d(student_logits) (zeros where no term applies to the logits).")),
    "grads": (
        Gradients,
        Field(description="Name in student_features → d(loss)/d(that tensor); empty without them or with compute_grad false."),
    ),
    "terms": (list[TermResponse], ...),
}
DistillResponse = create_model("DistillResponse", __doc__="The combined objective, its gradient, and every term.", **_distill_fields)
