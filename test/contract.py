"""Run inference.py the way the container runs it, without a container engine.

In a private mount namespace with no network (``unshare -m -n``), under grand-challenge's limits
(``scripts/platform.env``: at most 4 CPUs by affinity, RLIMIT_DATA of 15 GiB as sagemaker-shim sets
it): the model directory is packed with ``scripts/pack_model.sh`` (the tarball ``export.sh``
uploads), extracted, and bind-mounted read-only at ``/opt/ml/model``, where inference.py finds it
by default; the input is bind-mounted read-only; the process runs as ``nobody`` with an empty
temporary directory as HOME and TMPDIR, and afterwards no file owned by ``nobody`` may exist outside
the output and temporary directories. /opt and /root get a tmpfs inside the namespace, with the
folders the process needs (Python's prefix, the venv, the repository) bound back: the host is not
changed.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
MODEL_MOUNT = "/opt/ml/model"
HIDDEN = (Path("/root"), Path("/opt"))  # replaced by a tmpfs in the namespace (see the docstring)


def platform_limits() -> dict[str, int]:
    """scripts/platform.env as numbers (the one place the platform's limits are written)."""
    limits = {}
    for line in (ROOT / "scripts" / "platform.env").read_text().splitlines():
        key, _, value = line.partition("#")[0].partition("=")
        if key.strip():
            limits[key.strip()] = int(value)
    return limits


def cpu_set() -> list[int]:
    """The CPUs the contained process may use: the first GC_CPUS of ours."""
    return sorted(os.sched_getaffinity(0))[: platform_limits()["GC_CPUS"]]


_PACKED: dict[Path, Path] = {}


def packed_model(model_dir: Path) -> Path:
    """``model_dir`` packed by scripts/pack_model.sh and extracted, as the platform extracts the
    tarball to /opt/ml/model (once per model directory)."""
    model_dir = model_dir.resolve()
    if model_dir not in _PACKED:
        work = Path(tempfile.mkdtemp(prefix="packed-model-"))
        atexit.register(shutil.rmtree, work, ignore_errors=True)
        subprocess.run([str(ROOT / "scripts" / "pack_model.sh"), str(model_dir), str(work)], check=True)
        (work / "model").mkdir()
        subprocess.run(["tar", "-xzf", str(work / "model.tar.gz"), "-C", str(work / "model")], check=True)
        for d in (work, work / "model"):
            d.chmod(0o755)
        _PACKED[model_dir] = work / "model"
    return _PACKED[model_dir]


@dataclass
class ContractRun:
    returncode: int
    stdout: str
    stderr: str
    output: bytes | None
    strays: list[str]


def harness_available() -> str | None:
    """None when the harness can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root to create the namespace (CI runs as root)"
    for tool in ("unshare", "setpriv", "mount", "prlimit", "taskset", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    probe = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare refused: {probe.stderr.decode().strip()}"
    return None


def _reachable_paths(hidden: Path) -> list[Path]:
    """Folders under ``hidden`` that the process needs (Python's prefix, the venv, the repository)."""
    wanted = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), ROOT}
    return sorted(p for p in wanted if p == hidden or hidden in p.parents)


def _mount_lines(stash: Path, model: Path) -> list[str]:
    """Shell lines: what the process needs under each HIDDEN folder is bound aside, a tmpfs covers
    the folder, the kept paths are bound back; then the packed model read-only at MODEL_MOUNT."""
    keep = [path for hidden in HIDDEN for path in _reachable_paths(hidden)]
    aside = [stash / str(i) for i in range(len(keep))]
    lines = []
    for path, spot in zip(keep, aside, strict=True):
        spot.mkdir(parents=True)
        lines.append(f"mount --bind {shlex.quote(str(path))} {spot}")
    lines += [f"mount -t tmpfs -o mode=755 tmpfs {hidden}" for hidden in HIDDEN]
    for path, spot in zip(keep, aside, strict=True):
        lines += [f"mkdir -p {shlex.quote(str(path))}", f"mount --bind {spot} {shlex.quote(str(path))}"]
    q = shlex.quote(str(model))
    return [*lines, f"mkdir -p {MODEL_MOUNT}", f"mount --bind {q} {MODEL_MOUNT}",
            f"mount -o remount,bind,ro {MODEL_MOUNT}"]  # fmt: skip


def run_contract(
    input_dir: Path, model_dir: Path, *extra: str, timeout: int = 300, program: str | None = None
) -> ContractRun:
    """inference.py (or ``python -c program``) on ``input_dir`` with ``model_dir``, contained."""
    model = packed_model(model_dir)
    work = Path(tempfile.mkdtemp(prefix="contract-"))
    try:
        work.chmod(0o755)
        out, tmp, stash = work / "output", work / "tmp", work / "stash"
        for d in (out, tmp):
            d.mkdir()
            d.chmod(0o777)
        marker = work / "marker"
        marker.touch()
        lines = ["set -e", *_mount_lines(stash, model)]
        q = shlex.quote(str(input_dir))
        lines += [f"mount --bind {q} {q}", f"mount -o remount,bind,ro {q}"]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [
            sys.executable,
            str(ROOT / "inference.py"),
            "--input",
            str(input_dir),
            "--output",
            str(out),
            "--device",
            "cpu",
            *extra,
        ]
        if program is not None:
            cmd = [sys.executable, "-c", program, str(input_dir), str(out)]
        limits = platform_limits()
        data = limits["GC_DATA_LIMIT_GIB"] * 2**30
        cpus = ",".join(map(str, cpu_set()))
        lines.append(
            f"exec prlimit --data={data}:{data} taskset -c {cpus} "
            f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups env -i "
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            + " "
            + " ".join(shlex.quote(c) for c in cmd)
        )
        proc = subprocess.run(
            ["unshare", "-m", "-n", "--propagation", "private", "bash", "-c", "\n".join(lines)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = out / "likelihood-of-bladder-cancer-recurrence.json"
        strays = _strays(marker, exclude=(out, tmp))
        return ContractRun(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            result.read_bytes() if result.exists() else None,
            strays,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _strays(marker: Path, exclude: tuple[Path, ...]) -> list[str]:
    """Files or folders owned by nobody, made since ``marker``, outside ``exclude``."""
    found = subprocess.run(
        ["find", *WORLD_WRITABLE, str(ROOT), "-xdev", "-user", str(NOBODY), "-newer", str(marker)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return [f for f in found if not any(f == str(e) or f.startswith(f"{e}/") for e in exclude)]
