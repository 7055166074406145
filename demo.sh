#!/usr/bin/env bash
# The demo (README): on a fresh machine, set up, make a small synthetic cohort, extract features with
# vit-tiny, train ABMIL_Surv_PG briefly, package model/, and run inference.py on test/input/ without
# Docker. Prints the predicted months and the validation C-index (best and last epoch). About 5
# minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
py=.venv/bin/python
D=runs/demo
mkdir -p "$D"
t0=$(date +%s)
$py -m survfusion init-encoder --encoder vit-tiny --out "$D/vit-tiny.safetensors" --seed 0
[ -f "$D/cohort/oracle.json" ] || $py -m survfusion synth --out "$D/cohort" --patients 60 --seed 1 --slide-px 2688
$py -m survfusion extract --cohort "$D/cohort" --out "$D/features" --encoder vit-tiny --weights "$D/vit-tiny.safetensors"
$py -m survfusion train --cohort "$D/cohort" --features "$D/features" --model ABMIL_Surv_PG \
  --config configs/demo.json --out "$D/run"
$py -m survfusion package --run "$D/run" --encoder-weights "$D/vit-tiny.safetensors" --out model
for case in test/input/*/; do
  name=$(basename "$case")
  $py inference.py --input "$case" --output "$D/output/$name" --model model --device cpu
  echo "demo: $name -> $(cat "$D/output/$name/likelihood-of-bladder-cancer-recurrence.json") months"
done
$py - "$D/run/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"demo: validation C-index {m['val_c_index']:.3f} on {m['n_val']} patients at the best epoch "
      f"{m['best_epoch']} (optimistic: chosen on them), {m['val_c_index_last_epoch']:.3f} at the last "
      f"epoch; oracle {m.get('oracle_val_c_index', float('nan')):.3f}")
PY
echo "demo: done in $(( $(date +%s) - t0 )) s (after set-up)"
