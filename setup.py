"""Build hook for the optional compiled libraries; all other metadata lives in pyproject.toml.

``distill._kernels`` (the fused loss kernels, loaded by ``distill/native.py``) and
``service._json_tensors`` (the JSON tensor codec, loaded by ``service/json_native.py``) are plain C
ABI libraries called through ctypes, built as optional extensions: without a C++ compiler the
install still succeeds, the losses run on torch ops and JSON goes through the general parser. They
include no Python or torch headers, so they build without torch installed.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "distill._kernels",
            sources=["distill/csrc/kernels.cpp"],
            depends=["distill/csrc/kernels_impl.h"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp", "-Wno-psabi"],
            extra_link_args=["-fopenmp"],
            optional=True,
        ),
        Extension(
            "service._json_tensors",
            sources=["service/csrc/json_tensors.cpp"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17"],
            optional=True,
        ),
    ]
)
