#!/usr/bin/env bash
# Every GPU check in one run (bench/gpu_check.py): <= 6 minutes on a bare GPU machine, one table.
#
# The lent GPU machines have no network and lack some wheels (shared/notes/gpu-machine.md, measured:
# Python 3.12, torch 2.11 + CUDA 13, timm, tifffile, h5py, safetensors, pandas 3, scikit-learn 1.9;
# no imagecodecs, openslide, lifelines, scikit-survival, histolab). Bring them:
#
#   bench/gpu_wheels.sh             # here, with package access: ~50 MiB of wheels into .whl/
#   run: bash bench/gpu_check.sh    # there, carrying .whl (the device tool's carry: [".whl"])
#
# The install line used there (no index, no dependencies resolved, into an ignored .site/):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
# Results: the table on stdout and bench/.data/gpu_check.json; copy them to docs/BENCHMARKS.md.
# torch is the machine's own (2.11 + CUDA 13 when measured), not the pin (torch 2.10.0 + CUDA 12.8):
# the pinned wheels with their CUDA libraries are ~3 GB, far over what a run may carry (64 MiB), so
# the table says which torch it ran on; the pin's own GPU behaviour is the T4 job's to show.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  t0=$(date +%s)
  "$py" -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
  echo "gpu_check: wheels installed in $(( $(date +%s) - t0 )) s"
fi
export PYTHONPATH="$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export CUBLAS_WORKSPACE_CONFIG=:4096:8
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print(torch.cuda.get_device_name(0))"
exec "$py" bench/gpu_check.py "$@"
