"""The wheel: tagged for the platform only, stripped libraries, its license, and kernels that load without torch imported."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "distill", "service")
LIBRARIES = ("distill/native/_kernels.so", "service/codec/_json_tensors.so")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.platform != "linux" or shutil.which("g++") is None or shutil.which("readelf") is None,
        reason="needs Linux, g++ and readelf",
    ),
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel built by pip from a copy of the sources (no build outputs of this checkout in it)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out), str(source)], check=True)
    (built,) = out.glob("*.whl")
    yield built


def test_the_wheel_is_for_any_python_3_on_this_platform(wheel: Path) -> None:
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-py3-none-{platform}.whl"), wheel.name


def test_the_wheel_holds_the_libraries_and_the_license_but_no_sources(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(name for name in names if name.endswith(".so")) == sorted(LIBRARIES)
    assert not [name for name in names if "/csrc/" in name]
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    metadata = zipfile.ZipFile(wheel).read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked as site-packages would hold it, beside this environment's torch."""
    site = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(site)
    (site / "torch").symlink_to(Path(torch.__file__).parent, target_is_directory=True)
    return site


def readelf(*arguments: str) -> str:
    return subprocess.run(["readelf", *arguments], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_libraries_are_stripped(site: Path, library: str) -> None:
    assert ".symtab" not in readelf("-S", "-W", str(site / library))


def test_the_kernels_take_the_openmp_runtime_torch_ships(site: Path) -> None:
    assert "$ORIGIN/../../torch/lib" in readelf("-d", str(site / LIBRARIES[0]))
    # A fresh interpreter, torch not imported: the loader finds libgomp through the library's RUNPATH
    # in torch's wheel, not in the system (where a slim image has none).
    program = f"""
import ctypes, sys
ctypes.CDLL({str(site / LIBRARIES[1])!r})
kernels = ctypes.CDLL({str(site / LIBRARIES[0])!r})
assert kernels.distill_isa() in (0, 2, 3)
assert "torch" not in sys.modules
print(next(line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert Path(done.stdout.strip()).resolve() == (Path(torch.__file__).parent / "lib" / "libgomp.so.1").resolve()
