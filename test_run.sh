#!/usr/bin/env bash
# Build, then run every case under test/input/ the way grand-challenge runs a job: no network, input
# read-only, a fresh volume on /tmp, model/ read-only at /opt/ml/model, the GPU when there is one.
set -euo pipefail
cd "$(dirname "$0")"
IMAGE=${IMAGE:-survfusion-chimera-task3}
if [ ! -f model/bundle/manifest.json ]; then
  echo "test_run: model/ has no bundle; run ./demo.sh or 'python -m survfusion package' first" >&2
  exit 1
fi
./build.sh
gpu=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=(--gpus all); fi
failed=0
for case in test/input/*/; do
  name=$(basename "$case")
  out=$(mktemp -d)
  chmod 777 "$out"
  volume="survfusion-tmp-$name-$$"
  docker volume create "$volume" >/dev/null
  start=$(date +%s)
  if docker run --rm --platform=linux/amd64 --network none "${gpu[@]}" --shm-size=7g \
      -v "$PWD/$case:/input:ro" -v "$out:/output" -v "$volume:/tmp" -v "$PWD/model:/opt/ml/model:ro" \
      "$IMAGE:latest"; then
    result="$out/likelihood-of-bladder-cancer-recurrence.json"
    if value=$(python3 -c 'import json, math, sys; v = json.load(open(sys.argv[1])); assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, v; print(v)' "$result"); then
      echo "test_run: $name -> $value months ($(( $(date +%s) - start )) s)"
    else
      echo "test_run: $name: no valid number in $result" >&2; failed=1
    fi
  else
    echo "test_run: $name: the container failed" >&2; failed=1
  fi
  docker volume rm "$volume" >/dev/null
  rm -rf "$out"
done
exit $failed
