"""docs/architecture.md: its worked example adds a loss with one engine module and nothing else.

The example module is taken from the document as written, placed in ``distill.losses`` in a fresh
interpreter (no file of the project changes), and then served, documented, combined and called from
the client without any change to ``service/`` or ``distill/client/``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"

CHECKS = textwrap.dedent(
    """
    import importlib, sys
    import httpx, torch, torch.nn.functional as F
    import distill.losses

    distill.losses.__path__.append(sys.argv[1])
    importlib.import_module("distill.losses.logit_mse")

    import distill
    from distill import Term
    from distill.client import DistillClient, RemoteLogitMSE
    from fastapi.testclient import TestClient
    from service.app import create_app
    from service.settings import Settings
    from tests.tolerances import assert_close

    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    leaf = s.clone().requires_grad_(True)
    reference = F.mse_loss(leaf, t)
    reference.backward()

    local = distill.logit_mse(s, teacher_logits=t)
    assert_close(local.loss, reference.detach(), torch.float32)
    assert_close(local.grad, leaf.grad, torch.float32)

    with TestClient(create_app(Settings(device="cpu"))) as http:
        answer = http.post("/v1/logit_mse", json={"student_logits": s.tolist(), "teacher_logits": t.tolist()})
        assert answer.status_code == 200, answer.text
        assert abs(answer.json()["loss"] - float(reference)) <= 1e-6 * float(reference)
        spec = http.get("/openapi.json").json()
        assert "/v1/logit_mse" in spec["paths"], sorted(spec["paths"])
        assert {"LogitMSERequest", "LogitMSETerm"} <= set(spec["components"]["schemas"])
        assert "logit_mse" in http.get("/v1/info").json()["losses"]
        terms = [{"loss": "logit_mse", "coefficient": 0.5, "teacher_logits": t.tolist()}, {"loss": "kl_div", "teacher_logits": t.tolist()}]
        combined = http.post("/v1/distill", json={"student_logits": s.tolist(), "terms": terms})
        assert combined.status_code == 200, combined.text
        wrong = http.post("/v1/logit_mse", json={"student_logits": s.tolist(), "teacher_logits": t.tolist(), "reduction": "batchmean"})
        assert wrong.status_code == 422 and wrong.json()["field"] == "reduction"

        def forward(request: httpx.Request) -> httpx.Response:
            answer = http.request(request.method, request.url.path, content=request.content, headers=dict(request.headers))
            return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

        with DistillClient("http://testserver", transport=httpx.MockTransport(forward)) as client:
            assert_close(client.logit_mse(s, teacher_logits=t).loss, reference.detach(), torch.float32)
            student = s.clone().requires_grad_(True)
            RemoteLogitMSE(client)(student, t).backward()
            assert_close(student.grad, leaf.grad, torch.float32)

    objective = distill.distill(s, [Term.logit_mse(2.0, teacher_logits=t)])
    assert_close(objective.loss, 2.0 * reference.detach(), torch.float32)
    print("worked example ok")
    """
)


def worked_example() -> str:
    """The Python block of the document's 'Adding a loss' section."""
    section = DOC.read_text().split("## Adding a loss: a worked example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the worked example has no python block"
    return match.group(1)


@pytest.mark.slow
def test_worked_example_adds_a_loss_with_one_module(tmp_path: Path) -> None:
    (tmp_path / "logit_mse.py").write_text(worked_example())
    run = subprocess.run([sys.executable, "-c", CHECKS, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "worked example ok" in run.stdout


def test_the_tree_names_every_package() -> None:
    text = DOC.read_text()
    packages = [path.parent for path in (ROOT / "distill").rglob("__init__.py")] + [
        path.parent for path in (ROOT / "service").rglob("__init__.py")
    ]
    for package in packages:
        if package.name in ("distill", "service"):
            continue
        assert f"  {package.name}/" in text, f"docs/architecture.md does not show {package.relative_to(ROOT)}"
