#!/usr/bin/env bash
# Issue 27's table (docs/RESULTS.md, "Issue 27: worlds ..."): for one world and one cohort seed, a
# 176-patient cohort without slides, vit-tiny-width synthetic tile features (64 per patient) and the
# nested outer-test of every default candidate, of auto and of the blend, 5 outer test sets, one thread.
#   scripts/worlds.sh WORLD SEED [OUTER_FOLD ...]   -> runs/worlds/WORLD-sSEED/ot
# Each step is skipped when its output exists, so a world can be run over several sessions and
# several processes (one per outer fold set); python scripts/worlds_table.py runs/worlds pools them.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
world=$1 seed=$2; shift 2
dir=runs/worlds/$world-s$seed
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$dir/cohort/oracle.json" ] || $py -m survfusion synth --world "$world" --no-slides --patients 176 \
  --seed "$seed" --out "$dir/cohort"
[ -d "$dir/features" ] || $py -m survfusion synth-features --cohort "$dir/cohort" --out "$dir/features" \
  --encoder vit-tiny --tiles 64 --seed "$seed"
only=(); [ $# -gt 0 ] && only=(--only "$@")
$py -m survfusion outer-test --cohort "$dir/cohort" --features "$dir/features" --out "$dir/ot" \
  --config configs/synthetic-2048.json --models CoxNet_ClinRNA --methods auto blend --seed "$seed" "${only[@]}"
# the per-patient test predictions (a few KB per unit) into docs/worlds/runs/, which the repository keeps
$py scripts/worlds_sets.py keep "$dir"
