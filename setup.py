"""Build hook for the optional compiled kernels; all other metadata lives in pyproject.toml.

``distill._kernels`` is a plain C ABI library (loaded with ctypes by ``distill/native.py``), built as
an optional extension: without a C++ compiler the install still succeeds and the losses run on torch
ops. It includes no Python or torch headers, so it builds without torch installed.
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
        )
    ]
)
