# Sourced by the GPU scripts: the wheels the GPU image lacks (carried in .whl/) onto PYTHONPATH, $OUT
# made, and the device named. The builtin, letters and scenes teachers need three wheels:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl omegaconf==2.4.0 antlr4-python3-runtime==4.13.2 pytorch_optimizer==4.1.0
# (Sana/FLUX/SD3 shapes add diffusers, see gpu_session.sh). Run with TBCM_GIT_COMMIT=<the commit sent>
# (and TBCM_GIT_DIRTY=1 if the tree had changes) so the records name it: the machine's .git may be older.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD/src || exit 1
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
