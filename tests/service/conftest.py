"""Fixtures for HTTP tests: an app per test module, talked to through httpx (FastAPI's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from distill.client.wire import decode_tensor, encode_tensor
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
    return encode_tensor(tensor, "base64")


def from_binary(value: dict[str, Any]) -> torch.Tensor:
    return decode_tensor(value)
