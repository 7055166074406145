#!/usr/bin/env bash
# Run the unchanged ./build.sh, ./test_run.sh and ./export.sh against a real container engine on a
# machine that has none: podman serves the Docker API to the stock docker client from a scratch
# folder, with a locally built stand-in for the Dockerfile's base image (no registry is reachable).
# Everything is torn down at the end. Needs root, apt and about 25 GB of free disk.
#
#   test/engine.sh            (model/ must hold a bundle: run ./demo.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=$(awk '/^FROM /{print $2; exit}' Dockerfile)
S=$(mktemp -d /var/tmp/survfusion-engine.XXXXXX)
export CONTAINERS_CONF=$S/containers.conf CONTAINERS_STORAGE_CONF=$S/storage.conf
export DOCKER_HOST=unix://$S/podman.sock DOCKER_BUILDKIT=0
# podman replaces all its default ulimits by the ones a run names (test_run.sh names the data segment),
# and its own defaults exceed this host's hard limits: name the host's.
export TEST_RUN_OPTS="--ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
SERVICE=
stamp() { date +%s; }
teardown() {
  [ -n "$SERVICE" ] && kill "$SERVICE" 2>/dev/null && wait "$SERVICE" 2>/dev/null || true
  podman system reset -f >/dev/null 2>&1 || true
  rm -rf "$S"
}
trap teardown EXIT

[ -f model/bundle/manifest.json ] || { echo "engine: model/ has no bundle; run ./demo.sh first" >&2; exit 1; }
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends podman runc mmdebstrap >/dev/null
fi

cat > "$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat > "$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$S/graph"
runroot = "$S/run"
EOF
podman system service --time=0 "$DOCKER_HOST" >"$S/service.log" 2>&1 &
SERVICE=$!
for _ in $(seq 50); do docker version >/dev/null 2>&1 && break; sleep 0.2; done

t0=$(stamp)
# The stand-in base: Debian bookworm with Python 3.11 and pip, as the official python:3.11-slim image
# provides (no torch, no CUDA: the Dockerfile installs requirements.txt from the package index),
# tagged with exactly the Dockerfile's FROM. The local CA belongs to this stand-in only.
mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates,passwd \
  bookworm "$S/rootfs.tar"
podman import --quiet "$S/rootfs.tar" survfusion-standin-rootfs >/dev/null
mkdir -p "$S/base/certs"
cp /usr/local/share/ca-certificates/*.crt "$S/base/certs/" 2>/dev/null || true
cat > "$S/base/Dockerfile" <<'EOF'
FROM survfusion-standin-rootfs
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
EOF
docker build --quiet --tag "$BASE" "$S/base" >/dev/null
t_base=$(( $(stamp) - t0 ))

t0=$(stamp); ./build.sh; t_build=$(( $(stamp) - t0 ))
t0=$(stamp); ./test_run.sh | tee "$S/test_run.log"; t_run=$(( $(stamp) - t0 ))
grep -q "months" "$S/test_run.log"
t0=$(stamp); ./export.sh; t_export=$(( $(stamp) - t0 ))
size=$(docker image inspect --format '{{.Size}}' survfusion-chimera-task3:latest)
base_size=$(docker image inspect --format '{{.Size}}' "$BASE")
echo "engine: stand-in base $(( base_size / 1000000 )) MB; the image's largest installed packages (MB):"
docker run --rm --entrypoint sh survfusion-chimera-task3:latest -c \
  'du -sm /usr/local/lib/python3*/*-packages/* 2>/dev/null | sort -rn | head -15'
echo "engine: stand-in base ${t_base} s; build.sh ${t_build} s (incl. image); test_run.sh ${t_run} s;" \
  "export.sh ${t_export} s; image $(( size / 1000000 )) MB;" \
  "uploads $(du -h dist/survfusion-chimera-task3.tar.gz | cut -f1) + $(du -h dist/model.tar.gz | cut -f1)"
echo "engine: OK"
