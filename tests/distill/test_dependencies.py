"""The engine and the Python client need only the base install: no web server, no pydantic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Run in a fresh interpreter where importing any of the server extra's packages fails, as it would
# after a plain `pip install distill`.
_WITHOUT_SERVER = """
import importlib.abc, sys
SERVER = {"fastapi", "fastapi_offline", "starlette", "uvicorn", "httptools", "uvloop", "pydantic", "pydantic_core",
          "pydantic_settings", "simdjson", "pybase64", "prometheus_client", "service"}

class NoServer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER:
            raise ModuleNotFoundError(f"No module named {name!r} (the server extra is not installed)")
        return None

sys.meta_path.insert(0, NoServer())
import torch
import distill
import distill.client
from distill.client import DistillClient

result = distill.kl_div(torch.tensor([[2.0, 0.5, -1.0]]), teacher_logits=torch.tensor([[1.5, 1.0, -0.5]]), temperature=2.0)
assert result.grad is not None and result.loss_sum > 0
with DistillClient("http://127.0.0.1:9") as client:
    assert callable(client.kl_div)
loaded = sorted(name for name in sys.modules if name.split(".")[0] in SERVER)
assert not loaded, loaded
print("ok")
"""


def test_the_engine_and_client_import_without_the_server_extra(backend: str) -> None:
    environment = {**os.environ, "DISTILL_NATIVE": "1" if backend == "native" else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SERVER], capture_output=True, text=True, cwd=Path(__file__).parents[2], env=environment
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
