"""The README's examples: each curl request is sent to a live server and answers what the README shows.

Numbers agree to 1e-6 relative (with a floor of 1e-6 of the largest magnitude in the same tensor, for
entries near zero), base64 tensors after decoding; everything else exactly. The engine-only Python
example is executed as written.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from distill import native

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
EXAMPLE = re.compile(
    r"```bash\ncurl -s localhost:8000(/v1/[\w/]+) -H 'content-type: application/json' -d '(.*?)'\n```\n```json\n(.*?)\n```", re.DOTALL
)
CASES = EXAMPLE.findall(README)


def close(actual: Any, expected: Any, scale: float, where: str) -> None:
    if isinstance(expected, dict) and set(expected) == {"dtype", "shape", "data"}:
        assert actual["dtype"] == expected["dtype"] and actual["shape"] == expected["shape"], where
        values = [np.frombuffer(base64.b64decode(item["data"]), dtype=item["dtype"]).astype(np.float64) for item in (actual, expected)]
        close(values[0].tolist(), values[1].tolist(), 0.0, where)
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            close(actual[key], expected[key], 0.0, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        largest = max((abs(value) for value in np.ravel(np.array(expected, dtype=object)) if isinstance(value, float | int)), default=0.0)
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            close(left, right, max(scale, float(largest)), f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert actual == pytest.approx(expected, rel=1e-6, abs=1e-6 * scale), (where, actual, expected)
    else:
        assert actual == expected, (where, actual, expected)


def test_the_readme_has_examples():
    assert len(CASES) >= 6


@pytest.mark.skipif(not native.kernels.available(), reason="the README shows the answers of the compiled kernels")
@pytest.mark.parametrize(("route", "body", "answer"), CASES, ids=[f"{route}-{index}" for index, (route, _, _) in enumerate(CASES)])
def test_each_curl_example_answers_what_the_readme_shows(server, route, body, answer):
    response = httpx.post(f"{server}{route}", content=body.encode(), headers={"content-type": "application/json"}, timeout=30)
    close(response.json(), json.loads(answer), 0.0, route)


def test_the_engine_example_runs():
    block = README.split("From Python without the service:", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert code
    exec(compile(code.group(1), "README.md", "exec"), {})  # the README's own example


def test_the_tritonclient_example_runs(server):
    pytest.importorskip("tritonclient.http")
    block = README.split("With NVIDIA's `tritonclient`", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.DOTALL)
    assert code
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1).replace("localhost:8000", server.removeprefix("http://")), "README.md", "exec"), namespace)
    shown = re.search(r'result.as_numpy\("loss"\)  # array\(\[([0-9.]+)\]\)', code.group(1))
    assert shown
    assert namespace["result"].as_numpy("loss")[0] == pytest.approx(float(shown.group(1)), rel=1e-6)
    assert namespace["result"].as_numpy("grad").shape == (2, 3)


CLIENT_SCRIPTS = sorted(Path(__file__).resolve().parents[1].glob("openapi/*/client.sh"))


@pytest.mark.parametrize("script", CLIENT_SCRIPTS, ids=lambda path: path.parent.name)
def test_the_readme_shows_each_generated_client_command(script: Path) -> None:
    """The README's commands for generating and building a client are exactly those its test runs."""
    commands = [line for line in script.read_text().splitlines() if line and not line.startswith("#") and line != "set -euo pipefail"]
    assert commands
    for command in commands:
        assert command.replace('"$1"', "http://127.0.0.1:8000") in README, command
