"""Fixtures for HTTP tests: an app per test module, talked to through httpx (FastAPI's TestClient)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def make_client(**settings: Any) -> TestClient:
    return TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with make_client(device="cpu") as test_client:
        yield test_client


def binary(tensor: torch.Tensor) -> dict[str, Any]:
    """The base64 wire form of a tensor."""
    names = {
        torch.float32: "float32",
        torch.float64: "float64",
        torch.float16: "float16",
        torch.bfloat16: "bfloat16",
        torch.int64: "int64",
        torch.int32: "int32",
        torch.bool: "bool",
    }
    raw = tensor.contiguous().view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor.contiguous()
    return {"dtype": names[tensor.dtype], "shape": list(tensor.shape), "data": base64.b64encode(raw.numpy().tobytes()).decode()}


def from_binary(value: dict[str, Any]) -> torch.Tensor:
    dtypes = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
    raw = bytearray(base64.b64decode(value["data"]))
    return torch.frombuffer(raw, dtype=dtypes[value["dtype"]]).reshape(value["shape"])
