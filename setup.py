"""Build hook for the optional compiled libraries; all other metadata lives in pyproject.toml.

``distill.native._kernels`` (the fused loss kernels, loaded by ``distill/native/kernels.py``) and
``service.codec._json_tensors`` (the JSON tensor reader, loaded by ``service/codec/json_reader.py``)
are plain C ABI libraries called through ctypes (both loaded by ``distill/native/loader.py``), built
as optional extensions: without a C++ compiler the install still succeeds, the losses run on torch
ops and JSON goes through the general parser. They include no Python or torch headers, so they build
without torch installed.
"""

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

# Symbols stripped; the kernels find the OpenMP runtime that torch's wheel ships (torch/lib beside
# distill/ in site-packages) before the system's, so they load without libgomp installed and share
# torch's thread pool. In a source checkout that path does not exist and the system's is used.
STRIP = ["-s"]
TORCH_OPENMP = ["-Wl,-rpath,$ORIGIN/../../torch/lib"]


class PlainLibraries(build_ext):
    """Names each library ``<name>.so``: they are C ABI libraries loaded with ctypes, not CPython
    modules, so one build serves every Python version (``importlib`` finds ``.so`` on all of them)."""

    def get_ext_filename(self, fullname: str) -> str:
        return fullname.replace(".", "/") + ".so"


class PlatformWheel(bdist_wheel):
    """Tags the wheel ``py3-none-<platform>``: it depends on the platform, not on the Python version or ABI."""

    def get_tag(self) -> tuple[str, str, str]:
        return ("py3", "none", super().get_tag()[2])


setup(
    cmdclass={"build_ext": PlainLibraries, "bdist_wheel": PlatformWheel},
    ext_modules=[
        Extension(
            "distill.native._kernels",
            sources=["distill/native/csrc/kernels.cpp"],
            depends=["distill/native/csrc/kernels_impl.h"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp", "-Wno-psabi"],
            extra_link_args=["-fopenmp", *STRIP, *TORCH_OPENMP],
            optional=True,
        ),
        Extension(
            "service.codec._json_tensors",
            sources=["service/codec/csrc/json_tensors.cpp"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17"],
            extra_link_args=STRIP,
            optional=True,
        ),
    ],
)
