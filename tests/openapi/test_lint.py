"""``redocly lint`` passes on openapi/openapi.json with every recommended rule as an error
(tests/openapi/redocly.yaml); the few locations it skips are listed, with the reason, in
tests/openapi/.redocly.lint-ignore.yaml."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
REDOCLY = HERE / "node_modules" / ".bin" / "redocly"


def test_the_spec_lints_clean() -> None:
    if not REDOCLY.exists():
        reason = "redocly: missing tests/openapi/node_modules (scripts/install_client_toolchains.sh installs it)"
        if os.environ.get("DISTILL_REQUIRE_CLIENT_TOOLCHAINS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    run = subprocess.run(
        [str(REDOCLY), "lint", "openapi/openapi.json", "--config", "tests/openapi/redocly.yaml", "--format", "stylish"],
        cwd=HERE.parents[1],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"},
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
