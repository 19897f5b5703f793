#!/usr/bin/env bash
# webuiapi_client.sh — run tests/ref/webuiapi_client.py (the `webuiapi` Python client of
# the AUTOMATIC1111 API against a tiny-model `sdxld serve`) in its own virtual environment,
# made on first use: the client comes from PyPI, never into the system Python.  By hand,
# not in CI.
# Usage: tests/ref/webuiapi_client.sh   (VENV=... to choose the environment's folder;
#        SDXLD_BIN=... for another build than build/server/sdxld)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-build/webuiapi-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q webuiapi
fi
exec "$VENV/bin/python" tests/ref/webuiapi_client.py
