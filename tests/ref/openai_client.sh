#!/usr/bin/env bash
# openai_client.sh — run tests/ref/openai_client.py (the official `openai` Python client
# against a tiny-model `sdxld serve`) in its own virtual environment, made on first use:
# the client comes from PyPI, never into the system Python.  By hand, not in CI.
# Usage: tests/ref/openai_client.sh   (VENV=... to choose the environment's folder;
#        SDXLD_BIN=... for another build than build/server/sdxld)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-build/openai-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q openai
fi
exec "$VENV/bin/python" tests/ref/openai_client.py
