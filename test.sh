#!/usr/bin/env bash
# The test command (README, CI): set up .venv if needed, lint, type-check, then run the whole suite.
# Extra arguments go to pytest, e.g. ./test.sh -k calibration
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
