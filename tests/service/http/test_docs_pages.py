"""/docs and /redoc work without internet: every script, style sheet and icon they load is served by the app."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|spec-url=["']([^"']+)["']""")


def referenced(page: str) -> list[str]:
    return [next(group for group in match.groups() if group) for match in ASSET.finditer(page)]


@pytest.mark.parametrize(("page", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_documentation_pages_load_only_local_assets(client: TestClient, page: str, script: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    urls = referenced(response.text)
    assert any(url.endswith(script) for url in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from outside the app"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0, url
    bundle = client.get(next(url for url in urls if url.endswith(script)))
    assert bundle.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    assert len(bundle.content) > 100_000  # the UI itself, not a stub
