#!/usr/bin/env bash
# Install and run the main job on the embedded default (built-in teacher and prompts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/tbcm distill --out "${1:-runs/default}" "${@:2}"
