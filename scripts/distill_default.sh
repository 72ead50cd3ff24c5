#!/usr/bin/env bash
# Install and run the main job on the embedded default: the built-in digits teacher and its prompts,
# with the recipe measured on it (configs/distill_digits.yaml). Extra arguments are key=value overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/tbcm distill --out "${1:-runs/default}" --config configs/distill_digits.yaml "${@:2}"
