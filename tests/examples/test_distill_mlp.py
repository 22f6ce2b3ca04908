"""The example runs end to end and its two loss curves agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distill_mlp.py"


def test_local_and_remote_curves_agree():
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "25", "--teacher-steps", "100"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLE.parents[1],
    )
    assert result.returncode == 0, result.stderr
    worst = float(re.search(r"largest relative difference between the curves: (\S+)", result.stdout).group(1))
    assert worst < 1e-4
    local, remote = re.search(r"final test accuracy: local (\S+), remote (\S+)", result.stdout).groups()
    assert local == remote
