"""schemathesis against a real server from its own spec: no generated request gets a server error.

Positive and negative cases (the spec's schemas, then values and types that break them) for every
operation, with a fixed seed and a bounded number of examples so the run is reproducible and CI-sized
(about 6,000 requests, 15 s on a 2-core machine).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import live_server

pytestmark = pytest.mark.slow


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is part of the test extra"
    with live_server() as url:
        run = subprocess.run(
            [
                cli,
                "run",
                f"{url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--mode",
                "all",
                "--max-examples",
                "50",
                "--seed",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,
        )
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    assert run.returncode == 0, summary or run.stdout[-3000:] + run.stderr[-3000:]
    assert "generated" in summary and "Server error" not in summary
