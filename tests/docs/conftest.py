"""The app for the documentation's HTTP examples."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import make_client


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with make_client(device="cpu") as test_client:
        yield test_client
