"""Which device and precision the encoder runs on, and what the log says about them.

Training and serving both resolve their device here. ``auto`` takes the GPU when torch can use one;
a GPU that is visible but unusable (a host driver older than ``MIN_DRIVER``, say) is a
``ComputeError`` in one line naming the driver found and the one needed, never a quiet CPU run.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import torch

from survfusion.errors import ComputeError, UserError
from survfusion.features.encoders import ENCODERS, EncoderSpec, auto_precision, precision_note
from survfusion.features.request import PRECISION_CHOICES

# The oldest host driver the pinned torch's CUDA 12 runtime runs on (CUDA 12 minor-version
# compatibility; the wheel carries SASS for sm_75, so nothing needs a newer driver's PTX JIT).
MIN_DRIVER = "525.60.13"


def auto_batch_size(device: torch.device) -> int:
    """Tiles per batch when none is given, by measurement (docs/BENCHMARKS.md): 128 on a GPU (UNI on
    an H200: 2,199 tiles/s, against 2,002 at 256 and less at 64), 16 on a CPU (activations stay in
    cache: 1.2-1.4x the rate at 64 on our 2-core machine)."""
    return 128 if device.type == "cuda" else 16


def nvidia_device_visible() -> bool:
    """Whether this process was given an NVIDIA GPU: a device node, or NVIDIA_VISIBLE_DEVICES naming
    one (the NVIDIA container runtime's variable; ``void``/``none`` mean no GPU)."""
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip().lower()
    if visible not in ("", "void", "none"):
        return True
    return any(re.fullmatch(r"nvidia\d+", p.name) for p in Path("/dev").glob("nvidia*"))


def nvidia_driver_version() -> str | None:
    """The host's NVIDIA driver version (from the kernel module, else nvidia-smi), or None."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        match = re.search(r"Kernel Module(?: for \S+)?\s+([0-9]+(?:\.[0-9]+)+)", text)
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _driver_too_old(driver: str | None) -> bool:
    """Whether a driver version such as ``535.104.05`` is below MIN_DRIVER (unknown: not known to be)."""
    if driver is None or not re.fullmatch(r"\d+(\.\d+)*", driver):
        return False
    return tuple(map(int, driver.split("."))) < tuple(map(int, MIN_DRIVER.split(".")))


def _unusable_gpu(torch_part: str) -> str:
    """Why a GPU torch cannot use is refused: the driver and, when it is older, the floor it misses."""
    driver = nvidia_driver_version()
    floor = ""
    if _driver_too_old(driver):
        floor = f", older than the {MIN_DRIVER} that CUDA {torch.version.cuda} needs"
    return f"{torch_part} (driver {driver or 'unknown'}{floor})"


def describe_device(device: torch.device) -> str:
    """One line for the log: the GPU's name and capability, torch's CUDA version, the driver's."""
    if device.type != "cuda":
        return (
            f"{device} (torch {torch.__version__}, CUDA runtime {torch.version.cuda} unused, "
            f"{torch.get_num_threads()} threads)"
        )
    major, minor = torch.cuda.get_device_capability(device)
    return (
        f"{torch.cuda.get_device_name(device)} (sm_{major}{minor}), torch {torch.__version__} with CUDA "
        f"{torch.version.cuda}, driver {nvidia_driver_version() or 'unknown'}"
    )


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: the GPU when torch can use one, else the CPU -- unless a GPU was given to this process
    that torch cannot initialise (say, a host driver older than torch's CUDA needs): UNI on a few CPU
    cores would take hours, so that is a ``ComputeError``, not a quiet CPU run. ``cpu`` is explicit."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if nvidia_device_visible():
            raise ComputeError(
                _unusable_gpu(
                    f"an NVIDIA GPU is visible but torch {torch.__version__} (CUDA {torch.version.cuda}) "
                    "cannot use it"
                )
                + f"; this torch needs a host driver >= {MIN_DRIVER}; refusing to run the encoder on "
                "the CPU (use --device cpu to insist)"
            )
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ComputeError(
            _unusable_gpu(
                f"device {device!r} requested but torch {torch.__version__} (CUDA {torch.version.cuda}) "
                "cannot use a GPU here"
            )
        )
    return dev


def resolve_precision(
    precision: str, device: torch.device, spec: EncoderSpec | None = None
) -> tuple[torch.dtype | None, str | None]:
    """The compute dtype (None: plain fp32) and, when ``auto`` departs from the encoder's reference
    precision, one line saying so. ``auto`` (``encoders.auto_precision``): fp32 on the CPU and for an
    encoder whose reference runs fp32; otherwise fp16 below compute capability 8.0 (a T4 reports bf16
    as supported but emulates it: fp16 is its only fast path), bf16 from 8.0 (Ampere and newer)."""
    if precision not in PRECISION_CHOICES:
        raise UserError(f"precision: expected {', '.join(PRECISION_CHOICES)}, got {precision[:20]!r}")
    note = None
    if precision == "auto":
        major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else None
        spec = spec or ENCODERS["uni"]
        precision = auto_precision(spec, cuda_major=major)
        note = precision_note(spec, precision, cuda_major=major)
    return DTYPES[precision], note


DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
