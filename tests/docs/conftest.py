"""A live ``distill-serve`` process for the documentation's HTTP examples (sent over TCP, as a reader would)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.live import live_server


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server() as url:
        yield url
