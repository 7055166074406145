"""Tile encoders: a registry of timm ViTs, strict weight loading, device-side normalisation, precision.

An encoder travels as one ``TileEncoder``: the model, where its weights came from (sha256), its
input size, normalisation, precision and embedding size. Tiles arrive as uint8 ``(B, H, W, 3)``
(a quarter of the bytes of float32 over PCIe); they are area-resized (when read larger than the
model input), scaled and normalised on the device.

Weights are never downloaded: ``uni`` needs the user's ``pytorch_model.bin`` (or a .safetensors);
``vit-tiny`` gets its weights from ``python -m survfusion init-encoder``. Both go through the same
strict loader: safetensors, or ``torch.load(weights_only=True)``; ``strict=True``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from survfusion.errors import UserError
from survfusion.fileio import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """How to build an encoder's architecture with timm (no pretrained download, ever)."""

    name: str
    timm_name: str
    timm_kwargs: dict = field(default_factory=dict)
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
        embed_dim=1024,
        flops_per_tile=123e9,
    ),
    # A 4-block ViT-Tiny for tests and demos: same code path, a 192-d embedding, ~1/100 of UNI's cost.
    "vit-tiny": EncoderSpec(
        "vit-tiny",
        "vit_tiny_patch16_224",
        {"img_size": 224, "patch_size": 16, "depth": 4, "num_classes": 0, "dynamic_img_size": True},
        embed_dim=192,
        flops_per_tile=1.5e9,
    ),
}


def encoder_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name]


def build_architecture(name: str) -> nn.Module:
    """The encoder's network with random weights (timm, ``pretrained=False``)."""
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
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, ValueError, pickle.UnpicklingError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"encoder weights {path}: cannot be loaded safely ({msg})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"encoder weights {path}: not a state dict of tensors")
    return state


def load_weights_strict(model: nn.Module, path: str | os.PathLike, name: str) -> str:
    """Load ``path`` into ``model`` with ``strict=True``; returns the file's sha256.

    A mismatch raises one line naming the missing and unexpected keys (the first few of each)."""
    state = map_state_dict(read_weights(path))
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
    model.load_state_dict(state, strict=True)
    return sha256_file(path)


def init_encoder_weights(name: str, out: str | os.PathLike, *, seed: int = 0) -> str:
    """Create random weights for ``name`` (deterministic in ``seed``) as safetensors; returns sha256."""
    torch.manual_seed(seed)
    model = build_architecture(name)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors orders several keys at random, and the file's sha256 must not vary.
    save_file(state, str(out), metadata={"survfusion": f"encoder={name} seed={seed}"})
    return sha256_file(out)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: fp16 on pre-Ampere GPUs (T4: no bf16), bf16 on Ampere and newer, fp32 on CPU.
    Returns the autocast dtype, or None for plain fp32."""
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise UserError(f"precision: expected auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    return torch.float16 if precision == "fp16" else torch.bfloat16


class TileEncoder:
    """An encoder ready to embed uint8 tiles on its device."""

    def __init__(
        self,
        name: str,
        weights: str | os.PathLike,
        *,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.spec = encoder_spec(name)
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        model = build_architecture(name)
        self.weights_path = Path(weights)
        self.weights_sha256 = load_weights_strict(model, weights, name)
        self.model = model.to(self.device).eval()
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.autocast_dtype]

    def preprocess(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, input_px, input_px)`` on the device."""
        x = tiles.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != self.spec.input_px or x.shape[-2] != self.spec.input_px:
            x = F.interpolate(x, size=(self.spec.input_px, self.spec.input_px), mode="area")
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, embed_dim)`` float32 on the CPU."""
        x = self.preprocess(tiles)
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            out = self.model(x)
        return out.float().cpu()
