#!/usr/bin/env bash
# Prove the declared dependency floors: install the lowest version of every direct dependency that
# pyproject.toml allows (uv's lowest-direct resolution; indirect ones resolve as usual) and run the
# fast test suite on them. torch stays at constraints.txt's CPU build, taken from TORCH_FIND_LINKS (a
# directory holding that wheel): left free, the lowest resolution would fetch an old multi-GB CUDA build.
#
#   scripts/check_floors.sh            (env: TORCH_FIND_LINKS=/opt/wheels VENV=.venv-lowest)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-lowest}
TORCH_FIND_LINKS=${TORCH_FIND_LINKS:-/opt/wheels}

python3 -m venv --clear "$VENV"
"$VENV/bin/pip" install -q "uv>=0.5"
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --resolution lowest-direct \
    --find-links "$TORCH_FIND_LINKS" -c constraints.txt -e '.[test]'
echo "== lowest direct versions:"
"$VENV/bin/uv" pip list --python "$VENV/bin/python" 2>/dev/null \
    | grep -iE '^(torch|numpy|httpx|orjson|fastapi|starlette|uvicorn|httptools|uvloop|pydantic|pydantic-core|pydantic-settings|typing-extensions|pysimdjson|pybase64|prometheus-client|pytest|hypothesis|openapi-spec-validator|openapi-python-client|schemathesis|openapi-generator-cli) '
"$VENV/bin/pytest" -q -m "not slow"
