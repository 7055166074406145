#!/usr/bin/env bash
# The two uploads for grand-challenge, in dist/:
#   survfusion-chimera-task3.tar.gz   the container image (docker save | gzip)  -> "Container image"
#   model.tar.gz                      model/ (bundle + encoder weights) + SHA256SUMS -> "Model"
set -euo pipefail
cd "$(dirname "$0")"
IMAGE=${IMAGE:-survfusion-chimera-task3}
if [ ! -f model/bundle/manifest.json ]; then
  echo "$(basename "$0" .sh): model/ has no bundle; run ./demo.sh or 'python -m survfusion package --run RUN --encoder-weights W' first" >&2
  exit 1
fi
scripts/pack_model.sh model dist
docker image inspect "$IMAGE:latest" >/dev/null 2>&1 || ./build.sh
docker save "$IMAGE:latest" | gzip -c > dist/survfusion-chimera-task3.tar.gz
(cd dist && sha256sum survfusion-chimera-task3.tar.gz model.tar.gz > uploads.sha256)
ls -l dist
echo "export: upload dist/survfusion-chimera-task3.tar.gz as the image and dist/model.tar.gz as the model"
