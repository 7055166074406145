#!/usr/bin/env bash
# Build, then run every case under test/input/ the way grand-challenge runs a job on ml.g4dn.xlarge
# (scripts/platform.env): at most 4 CPUs, 16 GiB, the data segment limited to 15 GiB as sagemaker-shim
# limits it, no network, input read-only, a fresh volume on /tmp, the model read-only at /opt/ml/model
# extracted from the very tarball export.sh uploads, a non-root user (the image's), the GPU when there
# is one.
set -euo pipefail
cd "$(dirname "$0")"
IMAGE=${IMAGE:-survfusion-chimera-task3}
# shellcheck source=scripts/platform.env
source scripts/platform.env
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ ! -f model/bundle/manifest.json ]; then
  echo "$(basename "$0" .sh): model/ has no bundle; run ./demo.sh or 'python -m survfusion package --run RUN --encoder-weights W' first" >&2
  exit 1
fi
scripts/pack_model.sh model "$scratch"
mkdir "$scratch/model" && tar -xzf "$scratch/model.tar.gz" -C "$scratch/model" && chmod 755 "$scratch/model"
./build.sh
# With a GPU the container uses it; without one, say so explicitly: inference.py refuses to fall back
# to the CPU on its own when the image's environment names an NVIDIA device.
gpu=(-e SURVFUSION_DEVICE=cpu -e NVIDIA_VISIBLE_DEVICES=void)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu=(--gpus all)
else
  echo "test_run: no GPU here; the container runs on the CPU (--device cpu)"
fi
cpus=$(( $(nproc) < GC_CPUS ? $(nproc) : GC_CPUS ))
data=$(( GC_DATA_LIMIT_GIB * 1024 * 1024 * 1024 ))
limits=(--cpus "$cpus" --memory "${GC_MEMORY_GIB}g" --ulimit "data=$data:$data")
# Options an engine needs besides these (test/engine.sh: podman drops its default ulimits once one is set).
read -r -a engine_opts <<< "${TEST_RUN_OPTS:-}"
echo "test_run: limits: $cpus CPUs, ${GC_MEMORY_GIB} GiB, RLIMIT_DATA ${GC_DATA_LIMIT_GIB} GiB, model from model.tar.gz"
failed=0
for case in test/input/*/; do
  name=$(basename "$case")
  out=$(mktemp -d)
  chmod 777 "$out"
  volume="survfusion-tmp-$name-$$"
  docker volume create "$volume" >/dev/null
  start=$(date +%s)
  rc=0
  docker run --rm --platform=linux/amd64 --network none "${gpu[@]}" "${limits[@]}" "${engine_opts[@]}" --shm-size="${GC_SHM_GIB}g" \
    -v "$PWD/$case:/input:ro" -v "$out:/output" -v "$volume:/tmp" -v "$scratch/model:/opt/ml/model:ro" \
    "$IMAGE:latest" || rc=$?
  result="$out/likelihood-of-bladder-cancer-recurrence.json"
  if value=$(python3 - "$result" <<'PY'
import json, math, sys
try:
    v = json.load(open(sys.argv[1]))
except (OSError, ValueError) as err:
    sys.exit(f"no readable output ({type(err).__name__})")
if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
    sys.exit(f"output is not a finite number >= 0: {v!r}")
print(v)
PY
  ) && [ "$rc" -eq 0 ]; then
    echo "test_run: $name -> $value months ($(( $(date +%s) - start )) s)"
  else
    echo "test_run: $name FAILED (container exit code $rc)" >&2
    failed=1
  fi
  docker volume rm "$volume" >/dev/null
  rm -rf "$out"
done
exit $failed
