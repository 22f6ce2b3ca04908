"""``distill-serve`` without the server extra says what to install instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_WITHOUT_UVICORN = """
import importlib.abc, sys

class NoUvicorn(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "uvicorn":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoUvicorn())
from service.cli import main
"""


def test_a_missing_server_extra_is_named() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_UVICORN], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert done.returncode == 1
    assert "distill-serve needs the server extra: pip install 'distill[server]'" in done.stderr
    assert "Traceback" not in done.stderr
