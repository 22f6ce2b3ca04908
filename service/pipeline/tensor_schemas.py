"""The published tensor schemas: what the OpenAPI spec says a tensor is, for client generators.

A tensor is one plain object: its ``shape`` and either its ``values`` (row-major, flat, as the Open
Inference Protocol and TF Serving send them) or its ``dtype`` and base64 ``data``. Three such objects,
one per kind of field (float, integer, boolean ``values``), share one ``Dtype`` enum. No ``oneOf``,
no recursion: openapi-generator's TypeScript, Java and Go clients and openapi-python-client all
generate working code for it (tests/openapi builds and calls each), where the nested-list ``oneOf`` of
earlier specs broke them (issue #19: typescript-fetch sent lists as ``{}``, the Java client did not compile).

The service still reads nested number lists for every tensor (and bare numbers and booleans where
a 0-d tensor makes sense) and answers them in kind; they are accepted, not published.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, RootModel, WithJsonSchema
from typing_extensions import TypeAliasType

from distill.wire import Kind
from service.codec.tensors import MAX_DIMS

#: A tensor's element type (the names of :data:`distill.wire.DTYPES`; a test keeps the two equal).
Dtype = TypeAliasType("Dtype", Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "bool", "uint8"])
#: The request's ``dtype`` (what JSON floats compute in) and ``response_encoding``, as named enums.
FloatDtype = TypeAliasType("FloatDtype", Literal["float32", "float64", "float16", "bfloat16"])
#: ``json`` (nested lists) is taken but not published: the response schemas describe tensor objects.
ResponseEncoding = TypeAliasType(
    "ResponseEncoding",
    Annotated[Literal["values", "base64", "json"], WithJsonSchema({"type": "string", "enum": ["values", "base64"]})],
)

DOUBLE = {"type": "number", "format": "double"}


def _tensor(kind: str, item: dict[str, Any], dtypes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": f"{kind.title()}Tensor",
        "description": (
            f"A tensor of {kind} values: its shape and either its values, row-major in one flat list, or its dtype "
            f"({', '.join(dtypes)}) and base64 data. With values, dtype is optional: without it the values take the "
            "request's dtype (floats) or their field's (int64 labels, bool masks); with it they are converted to it."
        ),
        "properties": {
            "shape": {
                "type": "array",
                "items": {"type": "integer", "format": "int64", "minimum": 0},
                "maxItems": MAX_DIMS,
                "description": "Dimensions, row-major, the class dimension last; [] for a scalar.",
            },
            "values": {"type": "array", "items": item, "description": "prod(shape) values, row-major (with shape; not with data)."},
            "dtype": {},  # pydantic's reference to Dtype, see _published
            "data": {
                "type": "string",
                "format": "byte",
                "description": "base64 of prod(shape) × itemsize bytes, little-endian, row-major (with dtype and shape; not with values).",
            },
        },
        "required": ["shape"],
        "additionalProperties": False,
    }


def _published(schema: dict[str, Any]) -> ConfigDict:
    """A schema-only model's config: its JSON schema is ``schema`` (the model never validates), with
    the ``dtype`` property pydantic generated (a reference only pydantic can spell while generating)."""

    def replace(generated: dict[str, Any]) -> None:
        dtype = generated["properties"]["dtype"]
        generated.clear()
        generated.update(deepcopy(schema))
        generated["properties"]["dtype"] = dtype

    return ConfigDict(json_schema_extra=replace)


class FloatTensor(BaseModel):
    """Schema only: a float tensor field (``values`` are JSON numbers)."""

    model_config = _published(_tensor("float", DOUBLE, Kind.FLOAT.value))
    dtype: Dtype  # makes Dtype a component of every spec that has a tensor


class IntegerTensor(BaseModel):
    """Schema only: a label or index tensor field (``values`` are JSON integers)."""

    model_config = _published(_tensor("integer", {"type": "integer", "format": "int64"}, Kind.INDEX.value))
    dtype: Dtype


class BooleanTensor(BaseModel):
    """Schema only: a mask field (``values`` are JSON booleans)."""

    model_config = _published(_tensor("boolean", {"type": "boolean"}, Kind.MASK.value))
    dtype: Dtype


def _number_or_tensor(generated: dict[str, Any]) -> None:
    """``oneOf`` (a number is never an object: exactly one applies), the number a float64. Not ``anyOf``:
    typescript-fetch decodes an ``anyOf`` of a number and an object as ``{}``."""
    generated["oneOf"] = [DOUBLE, generated.pop("anyOf")[1]]
    generated["description"] = "The loss: a number, or for reduction 'none' the unreduced tensor."


class Loss(RootModel[float | FloatTensor]):
    """Schema only: a response's ``loss``."""

    model_config = ConfigDict(json_schema_extra=_number_or_tensor)


#: The published schema (a schema-only model) of a tensor field of each kind; NUMBER fields (floats, or
#: class indices as PyTorch's cross_entropy tells them apart) are float tensors, dtype int64 for indices.
BY_KIND: dict[Kind, type[BaseModel]] = {
    Kind.FLOAT: FloatTensor,
    Kind.NUMBER: FloatTensor,
    Kind.INDEX: IntegerTensor,
    Kind.MASK: BooleanTensor,
}
