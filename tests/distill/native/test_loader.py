"""The native boundary's loader: a library whose struct layout differs is refused, with a reason."""

from __future__ import annotations

import ctypes
import logging

import pytest

from distill import native
from distill.native import kernels, loader

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are not built")


@needs_kernels
def test_struct_sizes_match_the_declarations():
    assert native.load_library("distill.native._kernels", kernels._STRUCTS) is not None


@needs_kernels
def test_a_struct_size_mismatch_falls_back_with_a_logged_reason(caplog: pytest.LogCaptureFixture):
    class Shorter(ctypes.Structure):
        _fields_ = (("dtype", ctypes.c_int),)

    with caplog.at_level(logging.WARNING, logger="distill"):
        assert loader.load_library("distill.native._kernels", {"SoftArgs": Shorter}) is None
    assert "struct SoftArgs" in caplog.text and "fallback" in caplog.text


@needs_kernels
def test_an_unknown_struct_is_a_mismatch(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert loader.load_library("distill.native._kernels", {"NoSuchArgs": kernels.SoftArgs}) is None
    assert "NoSuchArgs" in caplog.text


def test_a_missing_library_is_none():
    assert loader.load_library("distill.native._no_such_library", {}) is None


def test_the_switch_is_scoped():
    before = native.enabled()
    with native.switched(not before):
        assert native.enabled() is (not before)
        assert native.kernels_in_use() == "torch" or native.enabled()
    assert native.enabled() is before
