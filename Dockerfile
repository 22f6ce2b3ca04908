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
# g++ builds the fused CPU kernels into the wheel (the runtime image needs no compiler). Debian's
# g++ is whatever the base image's release ships; pinning it would break on every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY distill ./distill
COPY service ./service
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir "setuptools>=69" wheel \
    && /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_SPEC="torch>=2.1"
ARG TORCH_INDEX_URL=""
ARG TORCH_FIND_LINKS=""
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISTILL_HOST=0.0.0.0 \
    DISTILL_PORT=8000
COPY --from=build /wheels /tmp/wheels
# torch is pinned through TORCH_SPEC (a build argument hadolint cannot see); the rest by the wheel's metadata.
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} \
        "$TORCH_SPEC" \
    && pip install --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --create-home --uid 10001 distill
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
