"""The allocator settings the service applies at start-up."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from distill.native.allocator import keep_freed_memory


@pytest.mark.skipif(platform.system() != "Linux" or ctypes.util.find_library("c") is None, reason="glibc only")
def test_settings_apply_on_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert keep_freed_memory()
    assert keep_freed_memory()
