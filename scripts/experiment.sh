#!/usr/bin/env bash
# The paper's experiment on the synthetic cohort (docs/RESULTS.md): cohort, features, runs, table.
# Every step is skipped when its output exists, so the table can be built over several sessions.
#   scripts/experiment.sh          everything
#   scripts/experiment.sh outer    only the outer-test protocol (single split vs 5-fold ensemble)
#   scripts/experiment.sh baselines  the classical baselines on the same outer test sets
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/synth176.sh
RUNS=runs/exp
# The outer-test protocol (issue 12): 5 outer test sets that no training step sees; on the rest, the
# paper's single 85:15 split vs the 5-fold ensemble, for ABMIL_Surv_PG and ABMIL_Surv. One process
# per model, one thread each (2 cores: 1.4x the throughput of one 2-thread process).
outer() {
  local args=(--cohort "$COHORT" --features "$FEATURES" --out runs/outer --config configs/synthetic-fast.json
              --outer 5 --folds 5)
  OMP_NUM_THREADS=1 $py -m survfusion outer-test "${args[@]}" --models ABMIL_Surv_PG > runs/outer-PG.log 2>&1 &
  OMP_NUM_THREADS=1 $py -m survfusion outer-test "${args[@]}" --models ABMIL_Surv > runs/outer-Surv.log 2>&1
  wait
  $py -m survfusion outer-test "${args[@]}" --report
}
if [ "${1:-all}" = outer ]; then outer; exit; fi
# Issue 21: the classical baselines on the same outer test sets, into the same protocol folder (their
# rows sit beside the deep ones, paired per test set with the same patients).
baselines() {
  $py -m survfusion outer-test --cohort "$COHORT" --features "$FEATURES" --out runs/outer \
    --config configs/synthetic-fast.json --outer 5 --folds 5 --models CoxPH_Clin CoxNet_ClinRNA RSF_ClinRNA
}
if [ "${1:-all}" = baselines ]; then baselines; exit; fi
train() {  # model seed config name
  [ -f "$RUNS/$4/metrics.json" ] || $py -m survfusion train --cohort "$COHORT" --features "$FEATURES" \
    --model "$1" --seed "$2" --config "$3" --out "$RUNS/$4"
}
for seed in 0 1 2; do
  train ABMIL_Surv "$seed" configs/synthetic-fast.json "ABMIL_Surv-s$seed"
  train ABMIL_Surv_PG "$seed" configs/synthetic-fast.json "ABMIL_Surv_PG-s$seed"
done
for seed in 0 1 2; do
  for model in ABMIL_Surv_PG_Res LMF HFBSurv; do
    train "$model" "$seed" configs/synthetic-fast.json "$model-s$seed"
  done
done
train ABMIL_Hist 0 configs/synthetic-fast.json ABMIL_Hist-s0
train RNA_Clin 0 configs/synthetic-fast.json RNA_Clin-s0
# The paper's exact input size (all 19,359 genes): about 6 s per epoch on 2 CPU cores.
train ABMIL_Surv_PG 0 configs/synthetic-allgenes.json ABMIL_Surv_PG-allgenes-s0
train ABMIL_Surv 0 configs/synthetic-allgenes.json ABMIL_Surv-allgenes-s0
$py -m survfusion compare "$RUNS"/*/ --out "$RUNS/table.md"
$py -m survfusion evaluate --bundle "$RUNS/ABMIL_Surv_PG-s1/bundle" --cohort "$COHORT" --features "$FEATURES" \
  --out "$RUNS/ABMIL_Surv_PG-s1/eval-val" --cases val
outer
