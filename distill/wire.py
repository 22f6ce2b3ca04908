"""The binary tensor wire format, shared by the service and its Python client.

A binary tensor is ``{"dtype": <name>, "shape": [...], "data": <base64>}``: the tensor's elements in
row-major order, little-endian, base64-encoded. This module owns the one table of dtype names, what
each kind of tensor field accepts, and the conversion between a tensor and its raw bytes (base64 is
left to the caller: the service uses pybase64 on memoryviews, the client the standard library).

bfloat16 has no numpy dtype, so its bytes travel through an int16 view of the same bits. On a
big-endian machine elements are byte-swapped on the way in and out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import Enum

import numpy as np
import torch
from torch import Tensor

#: Every dtype the wire carries, by its name on the wire.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
    "uint8": torch.uint8,
}
NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}


class Kind(Enum):
    """What a tensor field holds, which fixes the dtypes it accepts."""

    FLOAT = ("float32", "float64", "float16", "bfloat16")
    INDEX = ("int64", "int32")
    MASK = ("bool", "uint8")
    #: Class indices or float targets, told apart by dtype (JSON: integers or not), as PyTorch's cross_entropy tells them.
    NUMBER = ("float32", "float64", "float16", "bfloat16", "int64", "int32")

    @property
    def dtypes(self) -> dict[str, torch.dtype]:
        """The accepted dtypes by wire name, in the order the API documents them."""
        return {name: DTYPES[name] for name in self.value}


def to_bytes(tensor: Tensor) -> np.ndarray:
    """A contiguous numpy array whose buffer is the tensor's wire bytes (CPU copy if needed); flat past
    32 dimensions, which numpy before 2.0 holds at most (tensors: 64)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dim() > 32:
        tensor = tensor.reshape(-1)
    array = (tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor).numpy()
    return array.byteswap() if sys.byteorder != "little" and array.itemsize > 1 else array


def itemsize(name: str) -> int:
    """Bytes per element of a wire dtype."""
    return torch.empty((), dtype=DTYPES[name]).element_size()


def from_bytes(raw: bytearray | memoryview, name: str, shape: Sequence[int]) -> Tensor:
    """The tensor held by ``raw`` (exactly ``prod(shape) × itemsize`` bytes; shared, not copied)."""
    dtype = DTYPES[name]
    if not raw:
        return torch.empty(tuple(shape), dtype=dtype)
    tensor = torch.frombuffer(raw, dtype=torch.int16 if dtype == torch.bfloat16 else dtype)
    if sys.byteorder != "little" and tensor.element_size() > 1:
        tensor = torch.from_numpy(tensor.numpy().byteswap())
    return (tensor.view(dtype) if dtype == torch.bfloat16 else tensor).reshape(tuple(shape))
