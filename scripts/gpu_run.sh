#!/usr/bin/env bash
# Run snnrun's GPU checks on a CUDA machine with no network (the device tool's H100/H200):
#
#   bash scripts/gpu_run.sh [setup|tests|bench|e2e|all] [extra args for that stage]
#
# Before the device call, here (with network):
#   scripts/gpu_wheels.sh                                   # wheels into .whl/ (git-ignored)
#   mkdir -p .devdata && cp -r ../shared/data/fashion-mnist .devdata/   # only for e2e (30 MB)
# and call it with carry: [".whl", ".devdata"] (the tree that travels must stay under 64 MiB).
#
# Stages (each fits one 10-minute device command; "all" runs them in turn and may not):
#   setup  installs .whl/*.whl into /tmp/site (no index, no deps) and makes snnrun importable
#          (always runs first; prints python/torch/triton/GPU versions to $OUT/env.txt)
#   tests  SNNRUN_TEST_GPU=1 python -m pytest tests/test_kernels.py: the kernel test matrix,
#          compiled for the GPU (TRITON_INTERPRET unset)                     -> $OUT/tests.log
#   bench  scripts/bench_neurons.py [args] (default: every size)  -> $OUT/bench.log, bench.md
#   e2e    scripts/bench_neurons.py --e2e $FMNIST_ROOT (default .devdata/fashion-mnist)
#                                                                            -> $OUT/e2e.log
#
# Making snnrun importable without installing it: the repo maps snnrun.kernels to kernels/ and
# snnrun.conf to conf/ (pyproject package-dir). An offline `pip install -e .` needs the image's
# setuptools to build this pyproject (>= 69; a setuptools 65 venv failed here), so instead a
# shim package is assembled in /tmp/snnrun-path/snnrun: symlinks to every entry of src/snnrun
# plus kernels -> kernels/ and conf -> conf/, and PYTHONPATH=/tmp/site:/tmp/snnrun-path:<repo>.
# Nothing in the repo copy is changed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
OUT=${OUT:-/tmp/snnrun-gpu-out}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-560}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

setup() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 1; }
  else
    echo "no .whl/*.whl here: run scripts/gpu_wheels.sh and carry .whl" >&2
  fi
  local shim=/tmp/snnrun-path
  rm -rf "$shim" && mkdir -p "$shim/snnrun"
  for entry in "$REPO"/src/snnrun/*; do
    ln -s "$entry" "$shim/snnrun/"
  done
  ln -sfn "$REPO/kernels" "$shim/snnrun/kernels"  # src/snnrun/kernels links there too
  ln -s "$REPO/conf" "$shim/snnrun/conf"
  export PYTHONPATH="/tmp/site:$shim:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" - <<'EOF'
import sys, torch, triton, snnrun.kernels, snnrun.conf
print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("snnrun.kernels from", snnrun.kernels.__file__, "triton backend registered")
EOF
  } 2>&1 | tee "$OUT/env.txt"
}

tests() {
  # conftest leaves TRITON_INTERPRET unset when SNNRUN_TEST_GPU=1: kernels compile for the GPU.
  env -u TRITON_INTERPRET SNNRUN_TEST_GPU=1 timeout "$STAGE_TIMEOUT" \
    "$PY" -m pytest -q -p no:cacheprovider --durations=10 tests/test_kernels.py "$@" 2>&1 \
    | tee "$OUT/tests.log"
}

bench() {
  env -u TRITON_INTERPRET timeout "$STAGE_TIMEOUT" \
    "$PY" scripts/bench_neurons.py --out "$OUT/bench.md" "$@" 2>&1 | tee "$OUT/bench.log"
}

e2e() {
  local root=${FMNIST_ROOT:-$REPO/.devdata/fashion-mnist}
  env -u TRITON_INTERPRET WANDB_MODE=disabled timeout "$STAGE_TIMEOUT" \
    "$PY" scripts/bench_neurons.py --e2e "$root" "$@" 2>&1 | tee "$OUT/e2e.log"
}

stage=${1:-all}
shift || true
setup
case "$stage" in
  setup) ;;
  tests) tests "$@" ;;
  bench) bench "$@" ;;
  e2e) e2e "$@" ;;
  all) tests; bench; e2e ;;
  *) echo "unknown stage $stage (setup|tests|bench|e2e|all)" >&2; exit 2 ;;
esac
