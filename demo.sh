#!/usr/bin/env bash
# The demo command (README): set up .venv if needed, then run the end-to-end core demo.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/python examples/core_demo.py "$@"
