#!/usr/bin/env bash
# Issue 14 on a lent GPU, one prepared run (about 6-8 minutes): Sana-0.6B shapes at full depth,
# bf16 weights, the teacher's cross-attention through F.scaled_dot_product_attention (fused
# kernels), 512 and 1024 px, TBCM with the pool vs each step's own rollout vs data-driven sCM at
# equal pairs per step, plus the paper's setting; then the 1024 px rows with the rollout compiled.
# Wheels the GPU image lacks travel in .whl/ (see gpu_session.sh). Results land in $OUT; merge with
#   python benchmarks/sana_real_shape.py --no-measure --gpu-json gpu_side_by_side.json --write-results
set -uo pipefail
source benchmarks/gpu_setup.sh
# 1. the side-by-side rows: 7 cases, one after the other, 8 warm-up + 8 timed steps each (a pool of 8 prompts)
timeout 420 python3 benchmarks/sana_real_shape.py --full --json "$OUT/gpu_side_by_side.json" 2>&1 | tail -32
# 2. what torch.compile of the rollout's teacher adds (1024 px, bf16 autocast on top of the bf16 weights)
timeout 150 python3 benchmarks/sana_real_shape.py --full --sizes 1024 --no-paper --rollout-compile --rollout-dtype bf16 \
  --json "$OUT/gpu_side_by_side_compiled.json" 2>&1 | tail -16
