#!/usr/bin/env bash
# Issue 34 on a lent GPU, one prepared run (about 8 minutes): a change to the library's default
# recipe (SET, chosen on tune seeds) confirmed on all three teachers at once, confirm seeds 200/201
# x confirm draws 0-4, with the same teacher grids as the stored confirm rows so each teacher's
# best is read from the store, not chosen again. One process per teacher, side by side.
#   SET="objective.distribution_matching.weight=1" bash benchmarks/gpu_recipe_confirm.sh
# Wheels the GPU image lacks travel in .whl/ (see gpu_recipe_runs.sh). Back here:
#   tar xzf store.tgz in the repository root, then python benchmarks/report.py --write docs/results.md
set -uo pipefail
source benchmarks/gpu_setup.sh
LIMIT=${LIMIT:-500}
SET=${SET:?name the change to confirm, e.g. SET=objective.distribution_matching.weight=1}
LOGS=/tmp/confirm_logs; mkdir -p $LOGS
common=(--split confirm --seeds 2 --draws 5 --best-shift 1,2.5 --best-interval none --best-draw 0 --threads 2
        --eval-device cuda --set $SET)
timeout $LIMIT python3 benchmarks/quality.py --suite digits_own_guidance "${common[@]}" \
  --best-steps 16,32,64,128 --best-cfg 1,2,3 --best-n 50 > $LOGS/digits.log 2>&1 &
timeout $LIMIT python3 benchmarks/quality.py --suite letters_own_guidance "${common[@]}" --n 50 \
  --best-steps 16,32,64 --best-cfg 1,2,3,4.5 --best-n 30 > $LOGS/letters.log 2>&1 &
timeout $LIMIT python3 benchmarks/quality.py --suite scenes_own_guidance "${common[@]}" --n 8 \
  --best-steps 16,32,64,128 --best-cfg 1,2,3,4.5 --best-n 8 > $LOGS/scenes.log 2>&1 &
wait
tar czf "$OUT/store.tgz" benchmarks/results
tar czf "$OUT/logs.tgz" -C $LOGS .
for f in $LOGS/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -E "^\| (student|teacher)"; done
