#!/usr/bin/env bash
# Download, into the git-ignored .whl/, the CPython 3.12 manylinux wheels that a GPU machine
# (torch 2.11 image, no network) needs to run snnrun's GPU tests, the neuron benchmark and the
# end-to-end run. scripts/gpu_run.sh installs them there with
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl
#
#   scripts/gpu_wheels.sh          # what the image lacks: hydra, omegaconf, antlr4, the peers
#   scripts/gpu_wheels.sh --wandb  # + wandb and the deps the image lacks (logger=wandb only)
#   scripts/gpu_wheels.sh --all    # + rich, scikit-learn, scipy & co, which the image already
#                                  #   has (for an image that lacks them)
#
# The device call carries .whl (carry: [".whl"]); the whole tree that travels is limited to
# 64 MiB, so take only the tiers you need: the default tier is 1.7 MB, --wandb adds 24 MB
# (wandb's wheel is 20 MB), --all adds 45 MB more (scipy 34 MB): 70 MB, over the limit.
# WHEEL_DIR=<dir> downloads elsewhere than .whl.
# One version of each package (two versions of one stop the whole --no-deps install).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEST=${WHEEL_DIR:-.whl}

# Imported by snnrun (hydra, omegaconf) and by the benchmark's peers (spikingjelly, snntorch).
CORE=(
  hydra-core==1.3.8
  omegaconf==2.3.1
  antlr4-python3-runtime==4.9.3
  spikingjelly==2.0.0
  loguru==0.7.3
  scienceplots==2.2.2
  snntorch==1.0.0
)
# wandb and its requirements that the torch 2.11 image lacks (only logger=wandb imports wandb).
WANDB=(
  wandb==0.31.0
  pydantic==2.14.3
  pydantic-core==2.50.4
  annotated-types==0.8.0
  typing-inspection==0.4.5
  platformdirs==4.14.7
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2
  opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-http-transport==0.66b2
  googleapis-common-protos==1.76.0
  cwevals==0.0.1b1
  sniffio==1.3.1
  distro==1.9.0
)
# Already in the image (KINDS.md); only for an image without them.
IMAGE=(
  rich==15.0.0
  markdown-it-py==4.3.0
  mdurl==0.1.2
  pygments==2.21.0
  scikit-learn==1.9.1
  joblib==1.6.0
  threadpoolctl==3.8.0
  scipy==1.17.1
)

wanted=("${CORE[@]}")
for arg in "$@"; do
  case "$arg" in
    --wandb) wanted+=("${WANDB[@]}") ;;
    --all) wanted+=("${WANDB[@]}" "${IMAGE[@]}") ;;
    *) echo "usage: $0 [--wandb] [--all]" >&2; exit 2 ;;
  esac
done

PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
mkdir -p "$DEST"
for spec in "${wanted[@]}"; do
  # Binary wheels need the target's tags; pure-python ones (py3-none-any) match either way.
  # A package published only as an sdist (antlr4-python3-runtime 4.9.3) is built into a
  # pure-python wheel here.
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$spec" 2>/dev/null \
    || "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      -d "$DEST" "$spec" 2>/dev/null \
    || "$PYTHON" -m pip wheel -q --no-deps -w "$DEST" "$spec"
done

# One version per package: refuse a folder where an earlier run left another version.
dupes=$(find "$DEST" -maxdepth 1 -name '*.whl' -printf '%f\n' | cut -d- -f1 | tr 'A-Z_.' 'a-z--' \
  | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "more than one version in $DEST of: $dupes (delete the old wheels)" >&2
  exit 1
fi
du -sh "$DEST"
ls "$DEST"
