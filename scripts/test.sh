#!/usr/bin/env bash
# Install (with the test extras) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/python -m pytest "$@"
