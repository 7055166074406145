#!/usr/bin/env bash
# Pack a model directory into the tarball grand-challenge extracts to /opt/ml/model:
#   scripts/pack_model.sh MODEL_DIR OUT_DIR  ->  OUT_DIR/model.tar.gz (MODEL_DIR + SHA256SUMS), OUT_DIR/SHA256SUMS
# export.sh packs model/ for the upload; test_run.sh and the no-engine harness (test/contract.py) run
# the container from this very tarball, extracted, as the platform does.
set -euo pipefail
model=${1:?usage: scripts/pack_model.sh MODEL_DIR OUT_DIR}
out=${2:?usage: scripts/pack_model.sh MODEL_DIR OUT_DIR}
[ -d "$model" ] || { echo "pack_model: $model is not a directory" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
(cd "$model" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum) > "$out/SHA256SUMS"
# Readable by the container's non-root user whatever the local permissions were.
tar -czf "$out/model.tar.gz" --owner=0 --group=0 --mode='a+rX' -C "$model" . -C "$out" SHA256SUMS
