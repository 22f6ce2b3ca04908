"""The Open Inference Protocol v2 wire format: infer requests and responses, with the binary tensor extension.

An infer request is a JSON header, optionally followed by raw tensor bytes (the binary tensor data
extension): the header's length is in the ``Inference-Header-Content-Length`` HTTP header, and each
input sent that way names its byte count in ``parameters.binary_data_size``; the sections follow the
header in input order, little-endian and row-major. Other inputs carry their elements in ``data``
(row-major; flat or nested, as KServe and Triton accept). Responses mirror it: an output asked for
with ``binary_data`` (or all, with the request parameter ``binary_data_output``) is sent as raw bytes
after the JSON header, with its ``binary_data_size``.

Every input carries its datatype, so its tensor is made in that dtype whether it came as bytes or as
``data``, like a ``/v1`` binary tensor (and marked as one: the ``/v1`` request's JSON ``dtype`` never
applies). Datatypes are the protocol's names (``FP32``, ``BF16``, ``INT64``, ``BOOL``, …); :data:`DATATYPES`
maps them to the wire dtypes of :mod:`distill.wire`. Source: the KServe "Open Inference Protocol"
REST specification and its binary tensor data extension (Triton's ``binary_data`` parameters).
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson
import torch

from distill import wire
from service.codec.body import parse_json_object
from service.codec.json_reader import InexactInteger, NumberArray
from service.codec.parts import dump_parts
from service.codec.tensors import WireTensor, read_shape
from service.errors import InvalidRequest, MalformedBody, NotRepresentable

#: Protocol datatype → wire dtype name (:data:`distill.wire.DTYPES`).
DATATYPES: dict[str, str] = {
    "FP32": "float32",
    "FP64": "float64",
    "FP16": "float16",
    "BF16": "bfloat16",
    "INT64": "int64",
    "INT32": "int32",
    "BOOL": "bool",
    "UINT8": "uint8",
}
#: Wire dtype name → protocol datatype.
PROTOCOL_NAMES: dict[str, str] = {name: datatype for datatype, name in DATATYPES.items()}


@dataclass(frozen=True)
class RequestedOutput:
    """An entry of the request's ``outputs``: which output, and whether as raw bytes."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request.

    Attributes:
        id: the request's ``id``, echoed in the response (None when absent).
        inputs: each input's tensor by name, in the order sent.
        parameters: the request's parameters other than the protocol's own.
        outputs: the requested outputs, or None for all of them.
        binary_output: the default for outputs not listed (``binary_data_output``).
    """

    id: str | None
    inputs: dict[str, WireTensor]
    parameters: dict[str, Any]
    outputs: list[RequestedOutput] | None
    binary_output: bool


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length`` (None: the whole body is JSON).

    Raises:
        InvalidRequest: not a number of bytes within the body.
    """
    if value is None:
        return None
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) > body_size:
        raise InvalidRequest(
            f"Inference-Header-Content-Length must be a byte count within the body ({body_size} bytes)",
            field="Inference-Header-Content-Length",
        )
    return int(digits)


def parse_infer_request(body: bytearray, json_length: int | None, max_elements: int) -> InferRequest:
    """Parse an infer request body: the JSON header, then the binary sections of its inputs.

    Raises:
        MalformedBody, NotAnObject: the header is not a JSON object.
        InvalidRequest: the envelope is not an infer request (field named, e.g. ``inputs.1.shape``),
            or the binary sections do not add up to the body.
        TensorTooLarge: an input has more than ``max_elements`` elements.
    """
    if json_length is None:
        binary = memoryview(b"")
        try:
            header = parse_json_object(body)
        except MalformedBody as error:
            hint = "; binary tensor data after the JSON header needs the Inference-Header-Content-Length header"
            raise MalformedBody(error.detail + hint) from None
    else:
        binary = memoryview(body)[json_length:]
        header = parse_json_object(bytearray(body[:json_length]))
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("id must be a string", field="id")
    inputs_value = header.get("inputs")
    if not isinstance(inputs_value, list) or not inputs_value:
        raise InvalidRequest("inputs must be a non-empty list of tensors", field="inputs")
    inputs: dict[str, WireTensor] = {}
    offset = 0
    for position, item in enumerate(inputs_value):
        name, tensor, used = _input(item, f"inputs.{position}", binary[offset:], max_elements)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice", field=f"inputs.{position}.name")
        inputs[name] = tensor
        offset += used
    if offset != len(binary):
        raise InvalidRequest(f"the body has {len(binary) - offset} bytes after the inputs' binary data", field="inputs")
    parameters = _object(header.get("parameters"), "parameters")
    binary_output = parameters.pop("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidRequest("must be a boolean", field="parameters.binary_data_output")
    outputs = None if header.get("outputs") is None else _outputs(header["outputs"], binary_output)
    unknown = sorted(set(header) - {"id", "inputs", "outputs", "parameters"})
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0][:64]!r}", field=unknown[0][:64])
    return InferRequest(request_id, inputs, parameters, outputs, binary_output)


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("must be an object", field=field)
    return dict(value)


def _input(item: Any, field: str, binary: memoryview, max_elements: int) -> tuple[str, WireTensor, int]:
    """One input's name and tensor, and how many bytes of ``binary`` (what follows) it took."""
    if not isinstance(item, dict):
        raise InvalidRequest("an input is an object with name, shape, datatype and data or parameters.binary_data_size", field=field)
    unknown = sorted(set(item) - {"name", "shape", "datatype", "parameters", "data"})
    if unknown:
        raise InvalidRequest(f"unknown key {unknown[0][:64]!r}", field=field)
    name, datatype = item.get("name"), item.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("name must be a non-empty string", field=f"{field}.name")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidRequest(f"datatype must be one of {', '.join(DATATYPES)}", field=f"{field}.datatype")
    try:
        shape = read_shape(item.get("shape"), name, max_elements)
    except ValueError as error:
        raise InvalidRequest(str(error), field=f"{field}.shape") from None
    elements = math.prod(shape)
    dtype_name = DATATYPES[datatype]
    parameters = _object(item.get("parameters"), f"{field}.parameters")
    size = parameters.pop("binary_data_size", None)
    if parameters:
        raise InvalidRequest(f"unknown parameter {next(iter(parameters))[:64]!r}", field=f"{field}.parameters")
    if size is not None:
        if "data" in item:
            raise InvalidRequest("give data or parameters.binary_data_size, not both", field=f"{field}.data")
        needed = elements * wire.itemsize(dtype_name)
        if not isinstance(size, int) or isinstance(size, bool) or size != needed:
            raise InvalidRequest(f"binary_data_size must be {needed} for {datatype} × shape {list(shape)}", field=f"{field}.parameters")
        if size > len(binary):
            raise InvalidRequest(f"the body holds {len(binary)} bytes of binary data where {size} were declared", field=field)
        section = binary[:size]
        # Read in place where the section is aligned for its dtype (the tensor then keeps the body
        # alive instead of a copy of it); copied where the header's length left it misaligned.
        aligned = _address(section) % wire.itemsize(dtype_name) == 0
        return name, WireTensor(wire.from_bytes(section if aligned else bytearray(section), dtype_name, shape), "base64"), size
    if "data" not in item:
        raise InvalidRequest("give data or parameters.binary_data_size", field=f"{field}.data")
    return name, WireTensor(_json_data(item["data"], dtype_name, shape, f"{field}.data"), "base64"), 0


def _address(view: memoryview) -> int:
    """The address of a memoryview's first byte."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) if len(view) else 0


def _json_data(value: Any, dtype_name: str, shape: tuple[int, ...], field: str) -> torch.Tensor:
    """A tensor from an input's ``data``: its numbers (any nesting) in row-major order."""
    elements = math.prod(shape)
    boolean = dtype_name == "bool"
    floating = dtype_name in wire.Kind.FLOAT.dtypes
    if isinstance(value, NumberArray):
        if boolean or (not floating and not value.integral):
            raise InvalidRequest(f"must hold only {'booleans' if boolean else 'integers'}", field=field)
        try:
            values: np.ndarray = value.floats(False) if floating else value.integers()
        except InexactInteger as error:
            raise InvalidRequest(f"holds {error}", field=field) from None
    elif isinstance(value, simdjson.Array):
        try:
            values = np.array(value.as_list(), dtype=object).ravel() if boolean else _flat_numbers(value, floating)
        except (TypeError, ValueError):
            raise InvalidRequest("must hold only numbers (booleans for BOOL), nested or flat", field=field) from None
        if boolean and not all(isinstance(item, bool) for item in values.tolist()):
            raise InvalidRequest("must hold only booleans", field=field)
    else:
        raise InvalidRequest("must be a list of numbers", field=field)
    if values.size != elements:
        raise InvalidRequest(f"holds {values.size} values; shape {list(shape)} needs {elements}", field=field)
    if boolean:
        return torch.tensor(values.astype(np.bool_)).reshape(shape)
    converted = torch.from_numpy(np.ascontiguousarray(values)).reshape(shape).to(wire.DTYPES[dtype_name])
    if values.size and not floating:
        info = np.iinfo(np.dtype(dtype_name))
        if int(values.min()) < info.min or int(values.max()) > info.max:
            raise InvalidRequest(f"holds integers outside {PROTOCOL_NAMES[dtype_name]}'s range [{info.min}, {info.max}]", field=field)
    elif values.size and bool(np.isfinite(values).all()) and not bool(torch.isfinite(converted).all()):
        raise InvalidRequest(f"holds numbers beyond {PROTOCOL_NAMES[dtype_name]}'s range", field=field)
    return converted


def _flat_numbers(array: simdjson.Array, floating: bool) -> np.ndarray:
    """The numbers of a (possibly nested) simdjson array, copied in C; strings, booleans and null refused."""
    buffer = array.as_buffer(of_type="d" if floating else "i")
    return np.frombuffer(buffer, dtype=np.float64 if floating else np.int64)


def _outputs(value: Any, binary_default: bool) -> list[RequestedOutput]:
    if not isinstance(value, list):
        raise InvalidRequest("must be a list of {name, parameters}", field="outputs")
    requested: list[RequestedOutput] = []
    for position, item in enumerate(value):
        field = f"outputs.{position}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or set(item) - {"name", "parameters"}:
            raise InvalidRequest("an output is an object with a name and optional parameters", field=field)
        parameters = _object(item.get("parameters"), f"{field}.parameters")
        binary = parameters.pop("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise InvalidRequest("binary_data must be a boolean", field=f"{field}.parameters.binary_data")
        if parameters:
            raise InvalidRequest(f"unknown parameter {next(iter(parameters))[:64]!r}", field=f"{field}.parameters")
        if any(output.name == item["name"] for output in requested):
            raise InvalidRequest(f"output {item['name'][:64]!r} is asked for twice", field=f"{field}.name")
        requested.append(RequestedOutput(item["name"], binary))
    return requested


@dataclass(frozen=True)
class Output:
    """One output tensor of a response, and whether it goes as raw bytes."""

    name: str
    tensor: torch.Tensor
    binary: bool


def render_infer_response(model: str, request_id: str | None, outputs: list[Output]) -> tuple[list[bytes], int | None]:
    """The response body in parts (JSON header first, then the binary sections), and the header's
    length when binary sections follow (for ``Inference-Header-Content-Length``).

    Raises:
        NotRepresentable: a non-finite value in an output sent as JSON (JSON has no NaN or infinity).
    """
    described: list[dict[str, Any]] = []
    sections: list[bytes] = []
    for output in outputs:
        tensor = output.tensor.detach().cpu().contiguous()
        entry: dict[str, Any] = {"name": output.name, "datatype": PROTOCOL_NAMES[wire.NAMES[tensor.dtype]], "shape": list(tensor.shape)}
        if output.binary:
            raw = wire.to_bytes(tensor).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            sections.append(raw)
        else:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NotRepresentable(
                    f"{output.name} has non-finite values, which JSON cannot carry: ask for it as binary data", field=output.name
                )
            entry["data"] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).reshape(-1).numpy()
        described.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": described}
    if request_id is not None:
        response["id"] = request_id
    header = dump_parts(response)
    if not sections:
        return header, None
    json_part = b"".join(header)
    return [json_part, *sections], len(json_part)
