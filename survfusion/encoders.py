"""Tile encoders: a registry of timm ViTs, strict weight loading, device-side normalisation, precision.

An encoder travels as one ``TileEncoder``: the model, where its weights came from (sha256), its
input size, normalisation, precision and embedding size. Tiles arrive as uint8 ``(B, H, W, 3)``
(a quarter of the bytes of float32 over PCIe); they are area-resized (when read larger than the
model input), scaled and normalised on the device.

Weights are never downloaded: ``uni`` needs the user's ``pytorch_model.bin`` (or a .safetensors);
``vit-tiny`` gets its weights from ``python -m survfusion init-encoder``. Both go through the same
strict loader: safetensors, or ``torch.load(weights_only=True)``; ``strict=True``. The architecture is
built on the ``meta`` device and the loaded tensors are assigned to it: no random initialisation
(seconds for ViT-L) and no second copy of the weights in memory.

Faults (``survfusion.errors``): CUDA out of memory halves the batch and retries, down to one tile,
and keeps the size that worked; non-finite fp16/bf16 embeddings are recomputed in fp32. Whatever
still fails is a ``ComputeError``, never an input problem.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from survfusion.errors import ComputeError, UserError
from survfusion.fileio import sha256_file

# The oldest host driver the pinned torch's CUDA 12 runtime runs on (CUDA 12 minor-version
# compatibility; the wheel carries SASS for sm_75, so nothing needs a newer driver's PTX JIT).
MIN_DRIVER = "525.60.13"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder's architecture: our ``VisionTransformer`` arguments, and the timm model it equals
    (used for the random weights of ``init-encoder`` and, in the tests, as the reference)."""

    name: str
    timm_name: str
    timm_kwargs: dict = field(default_factory=dict)
    vit_kwargs: dict = field(default_factory=dict)
    embed_dim: int = 1024
    input_px: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flops_per_tile: float = 0.0  # forward FLOPs at input_px (2 x multiply-adds), for utilisation


ENCODERS: dict[str, EncoderSpec] = {
    # UNI (Chen et al. 2024), exactly as its model card builds it.
    "uni": EncoderSpec(
        "uni",
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True},
        {"img_size": 224, "patch_size": 16, "dim": 1024, "depth": 24, "heads": 16, "init_values": 1e-5},
        embed_dim=1024,
        flops_per_tile=123e9,
    ),
    # A 4-block ViT-Tiny for tests and demos: same code path, a 192-d embedding, ~1/100 of UNI's cost.
    "vit-tiny": EncoderSpec(
        "vit-tiny",
        "vit_tiny_patch16_224",
        {"img_size": 224, "patch_size": 16, "depth": 4, "num_classes": 0, "dynamic_img_size": True},
        {"img_size": 224, "patch_size": 16, "dim": 192, "depth": 4, "heads": 3},
        embed_dim=192,
        flops_per_tile=1.5e9,
    ),
}


def encoder_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


def build_architecture(name: str) -> nn.Module:
    """The encoder's network (``survfusion.vit``, timm's parameter names), randomly initialised by
    torch's defaults; under ``with torch.device("meta")`` it has shapes only (nothing allocated)."""
    from survfusion.vit import VisionTransformer

    return VisionTransformer(**encoder_spec(name).vit_kwargs)


def build_timm_reference(name: str) -> nn.Module:
    """The same network from timm (``pretrained=False``: random weights, never a download)."""
    import timm

    spec = encoder_spec(name)
    return timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs)


def map_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Foreign checkpoint keys -> timm keys: drop a ``module.`` (DataParallel) prefix shared by all."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .bin/.pt/.pth with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"encoder weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))  # memory-mapped: pages are read as the tensors are used
        state = _torch_load(path)
    except (SafetensorError, RuntimeError, OSError, ValueError, pickle.UnpicklingError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"encoder weights {path}: cannot be loaded safely ({msg})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"encoder weights {path}: not a state dict of tensors")
    return state


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``, memory-mapped when the file is in the zip format."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):  # only the legacy (non-zip) format cannot be mapped
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def check_fit(model: nn.Module, state: dict[str, torch.Tensor], path, name: str) -> None:
    """Raise one line naming the missing, unexpected and wrongly shaped keys (the first few of each)
    unless ``state`` fits ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:

        def few(keys):
            return (
                ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                if keys
                else "none"
            )

        raise UserError(
            f"encoder weights {path} do not fit {name!r}: missing keys: {few(missing)}; "
            f"unexpected keys: {few(unexpected)}; wrong shapes: {few(shapes)}"
        )


def load_weights_strict(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load ``path`` into ``model`` with ``strict=True`` (``check_fit`` first, for a readable error).

    ``model`` may live on the ``meta`` device: the loaded tensors are then assigned to it (cast to the
    model's dtypes), so the weights exist once."""
    state = map_state_dict(read_weights(path))
    check_fit(model, state, path, name)
    expected = model.state_dict()
    on_meta = any(t.is_meta for t in expected.values())
    if on_meta:
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=on_meta)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a non-persistent buffer is not in any checkpoint: the architecture needs a real init
        raise RuntimeError(f"encoder {name!r}: tensors left uninitialised on the meta device: {left[:3]}")


def init_encoder_weights(name: str, out: str | os.PathLike, *, seed: int = 0) -> str:
    """Create random weights for ``name`` (deterministic in ``seed``; timm's initialisation) as
    safetensors; returns sha256."""
    torch.manual_seed(seed)
    model = build_timm_reference(name)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors orders several keys at random, and the file's sha256 must not vary.
    save_file(state, str(out), metadata={"survfusion": f"encoder={name} seed={seed}"})
    return sha256_file(out)


def convert_to_safetensors(name: str, src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Write the weights of ``src`` (any format ``read_weights`` takes) as safetensors at ``dst``, after
    checking that they fit ``name`` strictly; keys in timm's naming, tensors as stored. Returns the
    sha256 of ``dst``. Done once by ``package``, so the container never unpickles anything."""
    raw = read_weights(src)
    state = {k: v.contiguous() for k, v in map_state_dict(raw).items()}
    with torch.device("meta"):
        check_fit(build_architecture(name), state, src, name)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if Path(src).suffix == ".safetensors" and state.keys() == raw.keys():
        shutil.copyfile(src, dst)  # already safe and in timm's names: keep the very bytes
    else:
        save_file(state, str(dst), metadata={"survfusion": f"encoder={name}"})
    return sha256_file(dst)


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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: fp16 below compute capability 8.0 (a T4 reports bf16 as supported but emulates it:
    fp16 is its only fast path), bf16 from 8.0 (Ampere and newer), fp32 on the CPU.
    Returns the compute dtype, or None for plain fp32."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise UserError(f"precision: expected auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.float16 if precision == "fp16" else torch.bfloat16


DTYPE_NAMES = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class TileEncoder:
    """An encoder ready to embed uint8 tiles on its device.

    ``weights_sha256`` identifies the weights as feature files record them: the sha256 of ``weights``,
    or ``source_sha256`` when ``weights`` is a conversion of another file (``package`` turns UNI's
    ``pytorch_model.bin`` into safetensors). ``file_sha256`` is always that of ``weights`` itself; it is
    computed in a background thread while the model is built and moved to the device.

    ``cast_weights``: hold the weights in the compute dtype (fp16/bf16) instead of fp32 under autocast.
    LayerNorm and the attention softmax still accumulate in fp32 inside PyTorch's fp16/bf16 kernels.
    Off by default: ``bench/encoder.py`` measures both, and autocast keeps fp32 weights for the fp32
    recompute of non-finite tiles.
    """

    def __init__(
        self,
        name: str,
        weights: str | os.PathLike,
        *,
        device: str = "auto",
        precision: str = "auto",
        cast_weights: bool = False,
        source_sha256: str | None = None,
    ) -> None:
        self.spec = encoder_spec(name)
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.weights_path = Path(weights)
        hasher = ThreadPoolExecutor(max_workers=1)  # hashing overlaps building, loading, moving
        self._file_sha256 = hasher.submit(sha256_file, self.weights_path)
        hasher.shutdown(wait=False)
        self._source_sha256 = source_sha256
        with torch.device("meta"):
            model = build_architecture(name)
        load_weights_strict(model, weights, name)
        self.cast_weights = bool(cast_weights and self.autocast_dtype is not None)
        model = model.to(self.device, dtype=self.autocast_dtype if self.cast_weights else None)
        self.model = model.eval()
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape)
        self.max_batch: int | None = None  # set by the first CUDA out-of-memory error
        self._events: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def file_sha256(self) -> str:
        return self._file_sha256.result()

    @property
    def weights_sha256(self) -> str:
        return self._source_sha256 or self.file_sha256

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def precision(self) -> str:
        return DTYPE_NAMES[self.autocast_dtype]

    @property
    def weights_dtype(self) -> str:
        return self.precision if self.cast_weights else "fp32"

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, input_px, input_px)`` on the device."""
        x = tiles.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.spec.input_px or x.shape[-2] != self.spec.input_px:
            x = F.interpolate(x, size=(self.spec.input_px, self.spec.input_px), mode="area")
        return (x - self._mean) / self._std

    def _forward(self, x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """The model at ``dtype`` (None: fp32), float32 out, on the device."""
        if self.cast_weights:
            if dtype is None:  # fp32 recompute: lossless round trip of the fp16/bf16 weights
                try:
                    return self.model.float()(x).float()
                finally:
                    self.model.to(self.autocast_dtype)
            return self.model(x.to(dtype)).float()
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self.model(x).float()

    def _embed_chunk(self, tiles: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(tiles)
        out = self._forward(x, self.autocast_dtype)
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            if self.autocast_dtype is None:
                raise ComputeError(
                    f"encoder {self.name}: non-finite embeddings in fp32 for {int(bad.sum())} tile(s); "
                    f"the weights {self.weights_path.name} are broken"
                )
            redo = self._forward(x[bad], None)
            if not bool(torch.isfinite(redo).all()):
                raise ComputeError(
                    f"encoder {self.name}: non-finite embeddings even after an fp32 recompute; "
                    f"the weights {self.weights_path.name} are broken"
                )
            out[bad] = redo
            self._count("nonfinite", int(bad.sum()))
        return out

    @torch.inference_mode()
    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, embed_dim)`` float32 on the CPU.

        CUDA out of memory: the batch is split in halves and retried, down to one tile; the size that
        worked is kept (``max_batch``) for every later call. One tile out of memory: ``ComputeError``.
        """
        out, start, n = [], 0, len(tiles)
        while start < n:
            size = min(self.max_batch or n, n - start)
            try:
                out.append(self._embed_chunk(tiles[start : start + size]).cpu())
            except torch.OutOfMemoryError:
                if size == 1:
                    raise ComputeError(
                        f"encoder {self.name}: CUDA out of memory embedding a single tile on "
                        f"{self.device}; the GPU is too small or shared"
                    ) from None
                self.max_batch = max(1, size // 2)
                self._events.setdefault("oom_from", size)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            start += size
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def _count(self, event: str, n: int) -> None:
        self._events[event] = self._events.get(event, 0) + n

    def take_notes(self, n_tiles: int) -> list[str]:
        """One line per fault worked around since the last call (for the log), then forget them."""
        notes = []
        if "oom_from" in self._events:
            notes.append(
                f"encoder: CUDA out of memory at a batch of {self._events['oom_from']} tiles; "
                f"embedding in batches of {self.max_batch} from then on"
            )
        if "nonfinite" in self._events:
            notes.append(
                f"encoder: {self._events['nonfinite']} of {n_tiles} tiles had non-finite {self.precision} "
                "embeddings; recomputed in fp32"
            )
        self._events = {}
        return notes
