# Sourced by the experiment scripts: the 176-patient synthetic cohort and its vit-tiny features,
# made once (each step is skipped when its output exists). Sets py, COHORT, FEATURES, WEIGHTS.
scripts/setup.sh
py=.venv/bin/python
COHORT=cohorts/synth176 FEATURES=features/synth176-vit-tiny WEIGHTS=cohorts/vit-tiny.safetensors
[ -f "$WEIGHTS" ] || $py -m survfusion init-encoder --encoder vit-tiny --out "$WEIGHTS" --seed 0
[ -f "$COHORT/oracle.json" ] || $py -m survfusion synth --out "$COHORT" --patients 176 --seed 0
$py -m survfusion extract --cohort "$COHORT" --out "$FEATURES" --encoder vit-tiny --weights "$WEIGHTS"
