#!/usr/bin/env bash
# Build the grand-challenge image (linux/amd64) and tag it IMAGE:latest and IMAGE:<git commit>.
set -euo pipefail
cd "$(dirname "$0")"
IMAGE=${IMAGE:-survfusion-chimera-task3}
TAG=$(git rev-parse --short HEAD 2>/dev/null || echo dev)
docker build --platform=linux/amd64 --tag "$IMAGE:latest" --tag "$IMAGE:$TAG" .
echo "build: $IMAGE:latest ($IMAGE:$TAG)"
