"""Run inference.py the way the container runs it, without a container engine.

In a private mount namespace with no network (``unshare -m -n``): the input and model directories
are bind-mounted read-only, the process runs as ``nobody`` with an empty temporary directory as HOME
and TMPDIR, and afterwards no file owned by ``nobody`` may exist outside the output and temporary
directories. A Python that lives under /root (0700) is made reachable by re-mounting the folders it
needs under a tmpfs on /root, inside the namespace only: the host is not changed.
"""

from __future__ import annotations

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
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    probe = subprocess.run(["unshare", "-m", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare refused: {probe.stderr.decode().strip()}"
    return None


def _reachable_paths() -> list[Path]:
    """Folders under /root that the process needs (Python's prefix, the venv, the repository)."""
    wanted = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), ROOT}
    return sorted(p for p in wanted if str(p).startswith("/root/") or p == Path("/root"))


def run_contract(
    input_dir: Path, model_dir: Path, *extra: str, timeout: int = 300, program: str | None = None
) -> ContractRun:
    """inference.py (or ``python -c program``) on ``input_dir`` with ``model_dir``, contained."""
    work = Path(tempfile.mkdtemp(prefix="contract-"))
    try:
        work.chmod(0o755)
        out, tmp, stash = work / "output", work / "tmp", work / "stash"
        for d in (out, tmp):
            d.mkdir()
            d.chmod(0o777)
        marker = work / "marker"
        marker.touch()
        lines = ["set -e"]
        hidden = _reachable_paths()
        for i, path in enumerate(hidden):
            (stash / str(i)).mkdir(parents=True)
            lines.append(f"mount --bind {shlex.quote(str(path))} {stash / str(i)}")
        if hidden:
            lines.append("mount -t tmpfs -o mode=755 tmpfs /root")
            for i, path in enumerate(hidden):
                lines += [
                    f"mkdir -p {shlex.quote(str(path))}",
                    f"mount --bind {stash / str(i)} {shlex.quote(str(path))}",
                ]
        for ro in (input_dir, model_dir):
            q = shlex.quote(str(ro))
            lines += [f"mount --bind {q} {q}", f"mount -o remount,bind,ro {q}"]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "2",
        }
        cmd = [
            sys.executable,
            str(ROOT / "inference.py"),
            "--input",
            str(input_dir),
            "--output",
            str(out),
            "--model",
            str(model_dir),
            "--device",
            "cpu",
            *extra,
        ]
        if program is not None:
            cmd = [sys.executable, "-c", program, str(input_dir), str(out)]
        lines.append(
            f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups env -i "
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
