# Python: openapi-python-client's client, called by python/main.py.
set -euo pipefail
mkdir -p clients
openapi-python-client generate --path openapi/openapi.json --meta none --output-path clients/python/distill_client > clients/python.log
PYTHONPATH=clients/python python tests/openapi/python/main.py "$1"
