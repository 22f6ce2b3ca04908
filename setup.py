"""Build hook for the optional compiled libraries; all other metadata lives in pyproject.toml.

``distill.native._kernels`` (the fused loss kernels, loaded by ``distill/native/kernels.py``) and
``service.codec._json_tensors`` (the JSON tensor reader, loaded by ``service/codec/json_reader.py``)
are plain C ABI libraries called through ctypes (both loaded by ``distill/native/loader.py``), built
as optional extensions: without a C++ compiler the install still succeeds, the losses run on torch
ops and JSON goes through the general parser. They include no Python or torch headers, so they build
without torch installed.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "distill.native._kernels",
            sources=["distill/native/csrc/kernels.cpp"],
            depends=["distill/native/csrc/kernels_impl.h"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp", "-Wno-psabi"],
            extra_link_args=["-fopenmp"],
            optional=True,
        ),
        Extension(
            "service.codec._json_tensors",
            sources=["service/codec/csrc/json_tensors.cpp"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17"],
            optional=True,
        ),
    ]
)
