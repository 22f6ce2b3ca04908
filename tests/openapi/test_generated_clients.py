"""Clients generated from openapi/openapi.json by five toolchains, built and called against a live server.

Each toolchain's ``tests/openapi/<toolchain>/client.sh`` (the commands the README shows) generates a client,
builds it, and runs a small program with it that sends the same five requests: a KL divergence with tensors
as JSON ``values`` (reduced, and per element: the loss a tensor), a cross-entropy with a base64 student (its
gradient comes back in base64), the combined objective with those two terms, and a cross-entropy with a label
out of range. The program prints what the
server answered; this test checks each loss and gradient against the engine in process, and the 422's field.
The inputs (a (2, 4) student and teacher, labels [2, 0]) are written out in each program.

The toolchains are Debian's (JDK, Jackson, Go and gopkg.in/validator.v2), npm's (pinned in
tests/openapi/package-lock.json) and pip's (openapi-generator-cli, openapi-python-client):
``scripts/install_client_toolchains.sh`` installs them. A missing one skips its test, unless
``DISTILL_REQUIRE_CLIENT_TOOLCHAINS=1`` (``.ci/run`` sets it), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import distill
from distill import Term
from tests.live import live_server
from tests.tolerances import assert_close

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
NODE_BIN = HERE / "node_modules" / ".bin"
BIN = Path(sys.executable).parent
JARS = [
    Path("/usr/share/java", name)
    for name in ("jackson-databind.jar", "jackson-core.jar", "jackson-annotations.jar", "jsr305.jar", "geronimo-annotation-1.3-spec.jar")
]
VALIDATOR = Path("/usr/share/gocode/src/gopkg.in/validator.v2")

#: What each toolchain needs: commands on PATH (or in the venv, or tests/openapi/node_modules/.bin) and files.
NEEDS: dict[str, tuple[list[str], list[Path]]] = {
    "python": (["openapi-python-client"], []),
    "typescript_fetch": (["openapi-generator-cli", "java", "node", "tsc"], []),
    "openapi_fetch": (["node", "openapi-typescript", "tsc"], []),
    "java": (["openapi-generator-cli", "java", "javac"], JARS),
    "go": (["openapi-generator-cli", "java", "go"], [VALIDATOR]),
}

STUDENT = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.5, 0.25, -0.75, 3.0]).reshape(2, 4)
TEACHER = torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5, 0.5, 2.5, -0.5]).reshape(2, 4)
LABELS = torch.tensor([2, 0])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server() as url:
        yield url


def _search_path() -> str:
    return os.pathsep.join([str(BIN), str(NODE_BIN), os.environ.get("PATH", "")])


def _require(toolchain: str) -> None:
    commands, files = NEEDS[toolchain]
    missing = [name for name in commands if shutil.which(name, path=_search_path()) is None]
    missing += [str(path) for path in files if not path.exists()]
    if missing:
        reason = f"{toolchain}: missing {', '.join(missing)} (scripts/install_client_toolchains.sh installs them)"
        if os.environ.get("DISTILL_REQUIRE_CLIENT_TOOLCHAINS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _run_client(toolchain: str, url: str, workdir: Path) -> dict:
    """Run ``client.sh`` in a scratch directory that sees the spec and tests/ as the repository lays them out."""
    for name in ("openapi", "tests"):
        (workdir / name).symlink_to(ROOT / name)
    script = HERE / toolchain / "client.sh"
    run = subprocess.run(
        ["bash", str(script), url],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": _search_path()},
    )
    logs = "\n".join(f"{log.name}:\n{log.read_text()[-3000:]}" for log in (workdir / "clients").glob("*.log"))
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}\n{logs}"
    return json.loads(run.stdout.strip().splitlines()[-1])


def _check(answer: dict, expected: distill.LossResult | distill.DistillResult) -> None:
    if expected.loss.dim():
        assert_close(torch.tensor(answer["loss"]).reshape(expected.loss.shape), expected.loss, torch.float32)
    else:
        assert answer["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert expected.grad is not None
    assert_close(torch.tensor(answer["grad"]).reshape(2, 4), expected.grad, torch.float32)


@pytest.mark.parametrize("toolchain", list(NEEDS))
def test_generated_client_answers_as_the_engine(toolchain: str, server: str, tmp_path: Path) -> None:
    _require(toolchain)
    answer = _run_client(toolchain, server, tmp_path)

    kl_div = distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=2.0)
    cross_entropy = distill.cross_entropy(STUDENT, labels=LABELS)
    terms = [Term("kl_div", 0.5, {"teacher_logits": TEACHER, "temperature": 2.0}), Term("cross_entropy", 1.0, {"labels": LABELS})]
    objective = distill.distill(STUDENT, terms)
    _check(answer["kl_div"], kl_div)
    _check(answer["kl_div_none"], distill.kl_div(STUDENT, teacher_logits=TEACHER, temperature=2.0, reduction="none"))
    _check(answer["cross_entropy"], cross_entropy)
    _check(answer["distill"], objective)
    assert answer["distill"]["terms"] == pytest.approx([float(term.result.loss) for term in objective.terms], rel=1e-6)
    assert answer["problem"] == {"status": 422, "field": "labels"}
