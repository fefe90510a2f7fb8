#!/usr/bin/env bash
# Run snnrun's GPU checks on a CUDA machine with no network (the device tool's H100/H200):
#
#   bash scripts/gpu_run.sh quick          # the prepared call: <= 8 min on an H100 -> $OUT/gpu.md
#   bash scripts/gpu_run.sh [setup|tests|bench|e2e|all] [extra args for that stage]
#   GPU_RUN_DRY=1 PYTHON=.venv/bin/python bash scripts/gpu_run.sh quick   # its dry run on a CPU
#
# Before the device call, here (with network):
#   scripts/gpu_wheels.sh                                   # wheels into .whl/ (git-ignored)
#   mkdir -p .devdata && cp -r ../shared/data/fashion-mnist .devdata/   # only for e2e (30 MB)
# and call it with carry: [".whl", ".devdata"] (the tree that travels must stay under 64 MiB).
#
# quick: four parts in turn, each within a budget of seconds (a part cut at its budget keeps what
# it finished), $OUT/gpu.md rewritten after each; $OUT/env.txt; one log per part:
#   1. kernel tests, compiled: every kernel and dtype at two sizes (test_*_kernels.py -k
#      every_kernel_and_dtype_at_two_sizes) and the test once broken across devices -> tests.log
#   2. scripts/bench_neurons.py at T 4, 32 x N 2^16, 2^20, bfloat16 and float32 (the goal's
#      size, T=32 N=2^20 bf16, first: torch.compile's first build per T and dtype is slow) -> bench.md
#   3. scripts/bench_zoo.py --device cuda: training steps of fmnist_csnn, sew_resnet18 (CIFAR
#      stem), spikformer and the ALIF net, snnrun torch/triton x fp32/amp_bf16 beside
#      SpikingJelly 2.0's builders                                                -> steps.md
#   4. scripts/bench_neurons.py --e2e: one whole epoch of experiment=fmnist_csnn per backend on
#      $FMNIST_ROOT (default .devdata/fashion-mnist; triton after an untimed short run that fills
#      Triton's cache): time and test accuracy                                    -> epoch.md
# GPU_RUN_DRY=1 runs the same parts on the CPU at toy sizes (kernels interpreted; no wheels: the
# current environment), for CI (tests/test_gpu_run.py) and before spending a loan.
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
DRY=${GPU_RUN_DRY:-0}
SHIM=${SHIM_DIR:-/tmp/snnrun-path}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

setup() {
  if [ "$DRY" = 1 ]; then
    echo "dry run: the current environment, no wheels"
  elif ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { echo "wheel install failed" >&2; exit 1; }
  else
    echo "no .whl/*.whl here: run scripts/gpu_wheels.sh and carry .whl" >&2
  fi
  local shim=$SHIM
  rm -rf "$shim" && mkdir -p "$shim/snnrun"
  for entry in "$REPO"/src/snnrun/*; do
    ln -s "$entry" "$shim/snnrun/"
  done
  ln -sfn "$REPO/kernels" "$shim/snnrun/kernels"  # src/snnrun/kernels links there too
  ln -s "$REPO/conf" "$shim/snnrun/conf"
  export PYTHONPATH="/tmp/site:$shim:$REPO${PYTHONPATH:+:$PYTHONPATH}"
  {
    date -u
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    fi
    "$PY" - <<'EOF'
import sys, torch, triton, snnrun.kernels, snnrun.conf
from importlib.metadata import version
print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__,
      "spikingjelly", version("spikingjelly"), "snntorch", version("snntorch"))
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

# --------------------------------------------------------------------------- quick

# part NAME BUDGET_S TITLE -- COMMAND...: run COMMAND within BUDGET_S (log: $OUT/NAME.log) and
# write the part's section ($OUT/partK.section.md, K counting parts: title, command, time,
# outcome, and its table $OUT/NAME.md, or the log's summary lines where it writes none).
PARTS=0
part() {
  local name=$1 budget=$2 title=$3
  shift 4
  PARTS=$((PARTS + 1))
  local start=$SECONDS rc
  timeout "$budget" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local took=$((SECONDS - start)) outcome="done"
  [ "$rc" = 124 ] && outcome="cut at its budget of ${budget} s (what it finished is below)"
  [ "$rc" != 0 ] && [ "$rc" != 124 ] && outcome="FAILED (exit $rc; the end of $name.log below)"
  {
    echo "## $title"
    echo
    echo "\`$*\`: ${took} s, $outcome."
    echo
    if [ -s "$OUT/$name.md" ]; then
      cat "$OUT/$name.md"
    else  # no table of its own (pytest -v): the log's summary lines, or its counts if cut
      echo '```'
      grep -iE "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$OUT/$name.log" | tail -n 12
      [ "$rc" = 124 ] && echo "before the cut: $(grep -c ' PASSED' "$OUT/$name.log") passed," \
        "$(grep -cE ' (FAILED|ERROR)' "$OUT/$name.log") failed"
      echo '```'
    fi
    if [ "$rc" != 0 ] && [ "$rc" != 124 ]; then
      echo '```'; tail -n 15 "$OUT/$name.log"; echo '```'
    fi
    echo
  } > "$OUT/part$PARTS.section.md"
  assemble
  echo "quick: $name $outcome in ${took} s" >&2
  [ "$rc" = 0 ] || [ "$rc" = 124 ]
}

# skip_part TITLE WHY: a section saying why a part did not run.
skip_part() {
  PARTS=$((PARTS + 1))
  printf '## %s\n\nskipped: %s\n\n' "$1" "$2" > "$OUT/part$PARTS.section.md"
  assemble
  echo "quick: skipped $1: $2" >&2
}

assemble() {
  {
    echo "# snnrun on a GPU: \`bash scripts/gpu_run.sh quick\`$([ "$DRY" = 1 ] && echo ' (dry run, CPU)')"
    echo
    echo '```'; cat "$OUT/env.txt"; echo '```'
    echo
    for k in $(seq "$PARTS"); do cat "$OUT/part$k.section.md"; done
  } > "$OUT/gpu.md"
}

quick() {
  local root=${FMNIST_ROOT:-$REPO/.devdata/fashion-mnist} failed=0
  local test_env=(env -u TRITON_INTERPRET SNNRUN_TEST_GPU=1) bench_env=(env -u TRITON_INTERPRET)
  local sizes="32x1048576,4x1048576,32x65536,4x65536" bench_extra=() device=cuda
  local nets="fmnist_csnn:128:4,sew_resnet18_cifar:64:4,spikformer:64:4,alif:256:100"
  local steps=(--steps 10 --warmup 3) epoch=(--e2e-train-limit 0 --e2e-warmup 1024)
  local budgets=(110 150 110 100)  # s; with setup, under 8 minutes
  if [ "$DRY" = 1 ]; then  # toy sizes; kernels interpreted in parts 1-2, the torch fallback after
    test_env=(env TRITON_INTERPRET=1) bench_env=(env TRITON_INTERPRET=1) sizes="4x1024"
    nets="fmnist_csnn:2:2,sew_resnet18_cifar:2:2,spikformer:2:2,alif:2:8" device=cpu
    bench_extra=(--cpu --skip compile) steps=(--steps 1 --warmup 1) budgets=(300 300 300 300)
    epoch=(--e2e-train-limit 256 --e2e-overrides "model.channels=4 dataset.test_limit=128 batch_size=64")
  fi
  rm -f "$OUT"/*.section.md "$OUT"/{tests,bench,steps,epoch}.md
  part tests "${budgets[0]}" "1. Kernel tests, compiled (every kernel and dtype at two sizes)" -- \
    "${test_env[@]}" "$PY" -m pytest -v -rfE --durations=5 -p no:cacheprovider tests/test_kernels.py \
    tests/test_state_kernels.py -k "every_kernel_and_dtype_at_two_sizes or v_last_unused" || failed=1
  part bench "${budgets[1]}" "2. One neuron layer, forward + backward" -- \
    "${bench_env[@]}" "$PY" scripts/bench_neurons.py --sizes "$sizes" \
    --dtypes bfloat16 float32 "${bench_extra[@]}" --out "$OUT/bench.md" || failed=1
  part steps "${budgets[2]}" "3. Training steps, snnrun beside SpikingJelly 2.0" -- \
    "$PY" scripts/bench_zoo.py --device "$device" --nets "$nets" --backends torch,triton \
    --precisions fp32,amp_bf16 "${steps[@]}" --out "$OUT/steps.md" || failed=1
  local title4="4. One epoch of experiment=fmnist_csnn on Fashion-MNIST"
  if [ -d "$root" ]; then
    part epoch "${budgets[3]}" "$title4" -- env WANDB_MODE=disabled "$PY" scripts/bench_neurons.py \
      --e2e "$root" --e2e-backends triton torch "${epoch[@]}" --out "$OUT/epoch.md" || failed=1
  else  # no network there: a download would only wait out the budget
    skip_part "$title4" "no Fashion-MNIST at $root (carry .devdata, or set FMNIST_ROOT)"
  fi
  echo "wrote $OUT/gpu.md" >&2
  return $failed
}

stage=${1:-all}
shift || true
setup
case "$stage" in
  setup) ;;
  quick) quick ;;
  tests) tests "$@" ;;
  bench) bench "$@" ;;
  e2e) e2e "$@" ;;
  all) tests; bench; e2e ;;
  *) echo "unknown stage $stage (quick|setup|tests|bench|e2e|all)" >&2; exit 2 ;;
esac
