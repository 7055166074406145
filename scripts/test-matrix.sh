#!/usr/bin/env bash
# The suite on every CPU kernel and thread count our machines have: a test that holds only by
# rounding, thread count or CPU kernel fails here before it turns CI red on another machine.
#   scripts/test-matrix.sh          the whole suite x {best, avx2, default} kernels, the quick loop x {1, 2} threads
#   scripts/test-matrix.sh quick    the quick loop (-m "not slow") for every row
# One summary line per row; exit code 1 if any row failed. About 15 minutes on 2 cores (whole suite).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mode=${1:-full}
best=$(.venv/bin/python -c "import torch; print(torch.backends.cpu.get_cpu_capability().lower())")
rows=()
for cap in "$best" avx2 default; do rows+=("ATEN_CPU_CAPABILITY=$cap"); done
for threads in 1 2; do rows+=("OMP_NUM_THREADS=$threads"); done
failed=0
for row in "${rows[@]}"; do
  args=(-q -p no:cacheprovider)
  if [ "$mode" = quick ] || [[ $row == OMP_* ]]; then args+=(-m "not slow"); fi
  start=$(date +%s)
  out=$(env "$row" .venv/bin/python -m pytest "${args[@]}" 2>&1)
  rc=$?
  summary=$(echo "$out" | tail -1)
  echo "test-matrix: $row ${args[*]:3} -> rc $rc, $summary ($(( $(date +%s) - start )) s)"
  if [ $rc -ne 0 ]; then failed=1; echo "$out" | grep -E "^(FAILED|ERROR)" ; fi
done
exit $failed
