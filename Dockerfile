# syntax=docker/dockerfile:1
#
# distill: knowledge-distillation loss service.
#
#   CPU image (default target):  docker build --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> -t distill .
#   CUDA image:                  docker build --target cuda -t distill:cuda .
#
# The CPU image should take torch from the PyTorch CPU wheel index (TORCH_INDEX_URL); without it, pip
# takes torch from the default index, which on Linux x86-64 is the (much larger) CUDA build.
# TORCH_FIND_LINKS points pip at a directory of wheels instead (offline builds).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch>=2.1"
ARG TORCH_INDEX_URL=""
ARG TORCH_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# g++ builds the fused CPU kernels into the wheel (the runtime image needs no compiler). Debian's
# g++ is whatever the base image's release ships; pinning it would break on every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY distill ./distill
COPY service ./service
# The service's virtual environment is made here, without pip, by the build tools' pip (--python):
# the runtime stage copies it and so holds no pip, setuptools, wheel files or compiler. torch declares
# setuptools for compiling C++ extensions at run time, which the service never does: it goes too.
# torch is pinned through TORCH_SPEC (a build argument hadolint cannot see); the rest by the wheel's metadata.
# hadolint ignore=DL3013
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir "setuptools>=77" \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} \
        "$TORCH_SPEC" \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir "$(ls /wheels/*.whl)[server]" \
    && /opt/build/bin/pip --python /opt/venv/bin/python uninstall --yes setuptools

FROM ${PYTHON_IMAGE} AS runtime
# GLIBC_TUNABLES: the allocator settings of distill/native/allocator.py (one arena, 64 MiB mmap and
# 256 MiB trim thresholds), in force from the first allocation, before torch starts any thread.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456 \
    DISTILL_HOST=0.0.0.0 \
    DISTILL_PORT=8000
# The base image's own pip, setuptools and wheel go too (where it has them): nothing installs at run time.
RUN if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall --yes --no-cache-dir pip setuptools wheel; fi \
    && useradd --system --create-home --uid 10001 distill
COPY --from=build /opt/venv /opt/venv
USER 10001
WORKDIR /home/distill
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DISTILL_PORT', '8000') + '/livez', timeout=4)"]
ENTRYPOINT ["distill-serve"]

FROM runtime AS cuda
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DISTILL_DEVICE=cuda

FROM runtime AS cpu
ENV DISTILL_DEVICE=cpu
