#!/usr/bin/env bash
# Create .venv and install tbcm into it (pass "test" for the test extras). torch is pinned to the
# CPU build first so that pip does not pull a multi-GB CUDA build; on a GPU machine, install the
# torch you want into .venv before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
if [ -n "${1:-}" ]; then target=".[$1]"; else target="."; fi
.venv/bin/python -m pip install -q -e "$target"
