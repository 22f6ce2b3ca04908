"""The binary tensor format: every wire dtype round-trips bit for bit; bfloat16 through int16."""

from __future__ import annotations

import base64

import pytest
import torch

from distill import wire
from distill.client.wire import decode_tensor, encode_tensor


@pytest.mark.parametrize("name", list(wire.DTYPES))
def test_round_trip_is_exact(name: str) -> None:
    dtype = wire.DTYPES[name]
    generator = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        tensor = torch.randn(3, 4, generator=generator).to(dtype)
    elif dtype == torch.bool:
        tensor = torch.rand(3, 4, generator=generator) > 0.5
    else:
        tensor = torch.randint(0, 100, (3, 4), generator=generator).to(dtype)
    raw = wire.to_bytes(tensor)
    assert raw.nbytes == tensor.numel() * wire.itemsize(name)
    back = wire.from_bytes(bytearray(raw.tobytes()), name, tensor.shape)
    assert back.dtype == dtype and torch.equal(back, tensor)
    assert torch.equal(decode_tensor(encode_tensor(tensor, "base64")), tensor)


def test_little_endian_layout() -> None:
    assert wire.to_bytes(torch.tensor([1.0], dtype=torch.float32)).tobytes() == b"\x00\x00\x80\x3f"
    assert wire.to_bytes(torch.tensor([1.0], dtype=torch.bfloat16)).tobytes() == b"\x80\x3f"


def test_empty_and_zero_dimensional() -> None:
    assert wire.from_bytes(bytearray(), "float32", (2, 0)).shape == (2, 0)
    scalar = torch.tensor(7, dtype=torch.int64)
    encoded = encode_tensor(scalar, "base64")
    assert encoded["shape"] == [] and base64.b64decode(encoded["data"]) == (7).to_bytes(8, "little")
    assert torch.equal(decode_tensor(encoded), scalar)


def test_kinds_partition_the_table() -> None:
    # FLOAT, INDEX and MASK partition the wire dtypes; NUMBER is FLOAT and INDEX together.
    names = [name for kind in (wire.Kind.FLOAT, wire.Kind.INDEX, wire.Kind.MASK) for name in kind.dtypes]
    assert sorted(names) == sorted(wire.DTYPES)
    assert list(wire.Kind.NUMBER.dtypes) == [*wire.Kind.FLOAT.dtypes, *wire.Kind.INDEX.dtypes]
