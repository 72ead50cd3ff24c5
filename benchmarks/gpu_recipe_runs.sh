#!/usr/bin/env bash
# Issue 34 on a lent GPU, one prepared run (about 9 minutes): the library's default recipe on the
# scenes teacher under the confirm protocol, and training curves longer than the default on the
# digits, letters and scenes teachers (does the 1-step sample keep improving with training?).
# Four jobs side by side on the one GPU, each with its own time limit; what finished comes back in
# $OUT as tarballs of the results store, the curves' PNGs and the run folders (no checkpoints).
# Wheels the GPU image lacks travel in .whl/ (omegaconf, antlr4-python3-runtime, pytorch_optimizer):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl omegaconf==2.4.0 ...
# Back here: tar xzf each tarball in the repository root, then python benchmarks/report.py --write docs/results.md
set -uo pipefail
source benchmarks/gpu_setup.sh
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
LIMIT=${LIMIT:-470}
common="--threads 2 --eval-device cuda"
timeout $LIMIT python3 benchmarks/quality.py --suite scenes_own_guidance --split confirm --seeds 2 --draws 5 --n 8 \
  --best-steps 16,32,64,128 --best-shift 1,2.5 --best-cfg 1,2,3,4.5 --best-interval none --best-draw 0 --best-n 8 \
  $common > "$OUT/scenes_confirm.log" 2>&1 &
timeout $LIMIT python3 benchmarks/curves.py --suite scenes_own_guidance --split tune --seeds 1 --every 600 --n 8 \
  $common > "$OUT/scenes_curve.log" 2>&1 &
timeout $LIMIT python3 benchmarks/curves.py --suite digits_own_guidance --split tune --seeds 1 --every 1200 \
  --set steps=9600 $common > "$OUT/digits_curve.log" 2>&1 &
timeout $LIMIT python3 benchmarks/curves.py --suite letters_own_guidance --split tune --seeds 1 --every 1200 --n 30 \
  --set steps=9600 $common > "$OUT/letters_curve.log" 2>&1 &
wait
nvidia-smi --query-gpu=memory.used --format=csv,noheader
tail -n 3 "$OUT"/*.log
tar czf "$OUT/store.tgz" benchmarks/results docs/img
# one tarball per run folder: a file over 16 MB does not come back (both runs in one were 17.4 MB)
for d in runs/bench/scenes_own_guidance/confirm_*; do tar czf "$OUT/$(basename $d).tgz" --exclude=checkpoints "$d"; done
tar czf "$OUT/curve_runs.tgz" --exclude=checkpoints --exclude=student runs/bench/*/tune_*
ls -la "$OUT"
