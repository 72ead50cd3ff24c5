# Sourced by the GPU scripts: the wheels the GPU image lacks (diffusers, omegaconf and their small
# deps, carried in .whl/, see gpu_session.sh) onto PYTHONPATH, $OUT made, and the device named.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
