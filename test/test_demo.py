"""The README's demo runs end to end (briefly) and leaves a loadable bundle."""

import subprocess
import sys
from pathlib import Path

from survfusion.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]


def test_core_demo_runs_and_writes_a_bundle(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "core_demo.py"), "--out", str(tmp_path), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "held-out C-index of predicted months" in out.stdout
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.model_name == "ABMIL_Surv_PG"
