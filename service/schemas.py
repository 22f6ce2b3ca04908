"""Request and response models: the published contract, with tensors decoded by :mod:`service.tensors`.

Tensor fields validate through :func:`service.tensors.decode` (a plain validator), so pydantic checks
the envelope (unknown fields, enums, ranges) while numbers never pass through it one by one; the
OpenAPI spec still shows each tensor field's exact schema (nested lists or a binary object). Unknown
fields are rejected everywhere: a misspelt option must not be silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo
from typing_extensions import TypeAliasType

from service.tensors import BinaryTensor, Kind, WireTensor, decode

DEFAULT_MAX_ELEMENTS = 1 << 25

# Nested lists are published one level deep (list of number-or-list): client generators such as
# openapi-python-client reject recursive array schemas. The server reads any depth ≥ 1.
NestedNumbers = TypeAliasType("NestedNumbers", list[float | list[Any]])
NestedIntegers = TypeAliasType("NestedIntegers", list[int | list[Any]])
NestedBooleans = TypeAliasType("NestedBooleans", list[bool | list[Any]])


def _validator(kind: Kind) -> PlainValidator:
    def validate(value: Any, info: ValidationInfo) -> WireTensor:
        if isinstance(value, WireTensor):
            return value
        context = info.context or {}
        limit = context.get("max_elements", DEFAULT_MAX_ELEMENTS)
        return decode(value, kind, info.field_name or "tensor", limit, single=context.get("json_dtype") == "float32")

    schema_type = {Kind.FLOAT: NestedNumbers, Kind.INDEX: NestedIntegers | int, Kind.MASK: NestedBooleans | bool}[kind]
    return PlainValidator(validate, json_schema_input_type=schema_type | BinaryTensor)


FloatTensor: TypeAlias = Annotated[WireTensor, _validator(Kind.FLOAT)]
LabelTensor: TypeAlias = Annotated[WireTensor, _validator(Kind.INDEX)]
MaskTensor: TypeAlias = Annotated[WireTensor, _validator(Kind.MASK)]

FloatDtype = Literal["float32", "float64", "float16", "bfloat16"]
Temperature = Annotated[float, Field(gt=0, allow_inf_nan=False, description="T > 0; divides student and teacher logits.")]
OptionalTemperature = Annotated[
    float | None,
    Field(gt=0, allow_inf_nan=False, description="T > 0 (default 1) for soft targets; an error with hard labels or student_probs."),
]
ScaleT2 = Annotated[bool, Field(description="Multiply soft-target terms by T² (Hinton et al. 2015).")]


class Strict(BaseModel):
    """Base for every request model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class RequestOptions(Strict):
    """Fields every loss request shares."""

    mask: MaskTensor | None = Field(None, description="Boolean over the leading dimensions; false rows are dropped.")
    compute_grad: bool = Field(True, description="Return d(loss)/d(student input); false skips the gradient.")
    dtype: FloatDtype = Field("float32", description="dtype of float tensors sent as JSON lists.")
    response_encoding: Literal["json", "base64"] | None = Field(
        None, description="Tensor encoding of the response; default mirrors the student's."
    )


class StudentLogits(Strict):
    """Listed last among a request's bases so that the student is the first field (and error)."""

    student_logits: FloatTensor = Field(description="Student logits (..., C); -inf marks a masked class.")


class KLTeacher(Strict):
    teacher_logits: FloatTensor | None = Field(None, description="Teacher logits; softmax(t / T).")
    teacher_probs: FloatTensor | None = Field(None, description="Teacher probabilities in [0, 1], taken as given.")
    teacher_log_probs: FloatTensor | None = Field(None, description="Teacher log-probabilities (≤ 0), taken as given.")


class KLDivRequest(RequestOptions, KLTeacher, StudentLogits):
    """T² · KL(teacher ‖ softmax(student / T)), rows flattened, ``batchmean`` = Σ / rows."""

    temperature: Temperature = 1.0
    scale_t2: ScaleT2 = True
    reduction: Literal["batchmean", "sum", "mean", "none"] = "batchmean"


class BCERequest(RequestOptions):
    """Soft-label binary cross-entropy, element-wise over every class."""

    student_logits: FloatTensor | None = Field(None, description="Student logits (BCE with logits, T and T² apply).")
    student_probs: FloatTensor | None = Field(None, description="Student probabilities (F.binary_cross_entropy; no temperature).")
    teacher_logits: FloatTensor | None = Field(None, description="Teacher logits; targets sigmoid(t / T).")
    teacher_probs: FloatTensor | None = Field(None, description="Targets in [0, 1], taken as given.")
    temperature: OptionalTemperature = None
    scale_t2: ScaleT2 = True
    weight: FloatTensor | None = Field(None, description="Element weights, broadcastable to the student's shape.")
    pos_weight: FloatTensor | None = Field(None, description="Weight of positive targets, broadcastable to the student's shape.")
    reduction: Literal["mean", "sum", "none"] = "mean"


class CrossEntropyRequest(RequestOptions, KLTeacher, StudentLogits):
    """Cross-entropy against hard ``labels`` or one soft teacher form."""

    labels: LabelTensor | None = Field(None, description="Integer class per row (the student's leading shape).")
    temperature: OptionalTemperature = None
    scale_t2: ScaleT2 = True
    weight: FloatTensor | None = Field(None, description="Class weights, shape (C,).")
    ignore_index: int = Field(-100, description="Label value whose rows are skipped (hard labels).")
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0)
    reduction: Literal["mean", "sum", "none"] = "mean"


class Coefficient(Strict):
    coefficient: float = Field(1.0, allow_inf_nan=False, description="Multiplier a_k of this term in Σ a_k · L_k.")


class KLTerm(Coefficient, KLTeacher):
    loss: Literal["kl_div"]
    temperature: Temperature = 1.0
    scale_t2: ScaleT2 = True
    reduction: Literal["batchmean", "sum", "mean"] = "batchmean"


class BCETerm(Coefficient):
    loss: Literal["bce"]
    teacher_logits: FloatTensor | None = None
    teacher_probs: FloatTensor | None = None
    temperature: OptionalTemperature = None
    scale_t2: ScaleT2 = True
    weight: FloatTensor | None = None
    pos_weight: FloatTensor | None = None
    reduction: Literal["mean", "sum"] = "mean"


class CrossEntropyTerm(Coefficient, KLTeacher):
    loss: Literal["cross_entropy"]
    labels: LabelTensor | None = None
    temperature: OptionalTemperature = None
    scale_t2: ScaleT2 = True
    weight: FloatTensor | None = None
    ignore_index: int = -100
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0)
    reduction: Literal["mean", "sum"] = "mean"


Term = Annotated[KLTerm | BCETerm | CrossEntropyTerm, Field(discriminator="loss")]


class DistillRequest(RequestOptions, StudentLogits):
    """Σ_k a_k · L_k(student): each term any loss with its own targets and options."""

    terms: list[Term] = Field(min_length=1, max_length=16)
    term_grads: bool = Field(False, description="Also return each term's own gradient.")


TensorOutput = NestedNumbers | BinaryTensor


class LossResponse(BaseModel):
    """A loss, its gradient with respect to the student input, and its normalisation."""

    loss: float | TensorOutput = Field(description="A number, or the unreduced tensor for reduction 'none'.")
    grad: TensorOutput | None = Field(description="d(loss)/d(student input), shaped and encoded like the student input.")
    loss_sum: float = Field(description="Unreduced sum of the loss elements; loss = loss_sum / normalizer.")
    normalizer: float = Field(description="What loss_sum was divided by (rows, elements or summed weights; 1 for sum/none).")
    reduction: str


class TermResponse(LossResponse):
    """One term of the combined objective (its own loss, before the coefficient)."""

    name: Literal["kl_div", "bce", "cross_entropy"]
    coefficient: float


class DistillResponse(BaseModel):
    """The combined objective, its gradient, and every term."""

    loss: float
    grad: TensorOutput | None
    terms: list[TermResponse]


REQUESTS: dict[str, type[Strict]] = {
    "kl_div": KLDivRequest,
    "bce": BCERequest,
    "cross_entropy": CrossEntropyRequest,
    "distill": DistillRequest,
}
