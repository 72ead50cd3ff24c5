#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run on a lent machine (see docs/results.md).
# Wheels the GPU image lacks (diffusers, omegaconf and their small deps) travel in .whl/:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl diffusers==0.42.1 omegaconf==2.3.0 ...
# Results land in $OUT (gpu.json: real-shape step time/memory; jvp.json: JVP checks; distill.log).
set -uo pipefail
source benchmarks/gpu_setup.sh
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
# 1. Sana-0.6B shapes, full depth, bf16: TBCM step vs data-driven sCM step, per pair
timeout 200 python3 benchmarks/sana_real_shape.py --full --sizes 512 --no-paper --json "$OUT/gpu.json" 2>&1 | tail -16
# 2. the digits default end to end on CUDA (trajectory source, bf16 autocast, checkpoints, grids)
timeout 60 python3 -m tbcm.cli distill --out /tmp/run_cuda --no-progress --config configs/distill_digits.yaml \
  steps=40 device=cuda precision=bf16 checkpoint_every=20 preview.seeds=2 > "$OUT/distill.log" 2>&1; echo "distill on cuda: exit $?"; tail -4 "$OUT/distill.log"
# 3. the student's JVP at Sana-0.6B width: math vs fused attention, fp32 vs bf16
timeout 90 python3 benchmarks/gpu_jvp_check.py --json "$OUT/jvp.json" 2>&1 | tail -8
