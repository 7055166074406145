"""The runtime encoder: a ``TileEncoder`` embeds uint8 tiles on its device.

An encoder travels as one ``TileEncoder``: the model, where its weights came from (sha256), its
input size, normalisation, precision and embedding size. Tiles arrive as uint8 ``(B, H, W, 3)``
(a quarter of the bytes of float32 over PCIe); they are area-resized (when read larger than the
model input), scaled and normalised on the device. The architecture is built on the ``meta`` device
and the loaded tensors are assigned to it: no random initialisation (seconds for ViT-L) and no second
copy of the weights in memory.

Faults (``survfusion.errors``): CUDA out of memory halves the batch and retries, down to one tile,
and keeps the size that worked; non-finite fp16/bf16 embeddings are recomputed in fp32. Whatever
still fails is a ``ComputeError``, never an input problem.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from survfusion.errors import ComputeError
from survfusion.features.device import DTYPE_NAMES, resolve_device, resolve_precision
from survfusion.features.encoders import build_architecture, encoder_spec
from survfusion.features.weights import load_weights_strict
from survfusion.fileio import sha256_file


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
        self.autocast_dtype, self.precision_note = resolve_precision(precision, self.device, self.spec)
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
        """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, input_px, input_px)`` on the device:
        area-resampled to the input (``fit`` resize), or to the encoder's tile side and then its
        centre cropped to the input (``fit`` crop: Prov-GigaPath's 256 -> 224)."""
        x = tiles.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        spec = self.spec
        side = spec.tile_px if spec.fit == "crop" else spec.input_px
        if x.shape[-1] != side or x.shape[-2] != side:
            x = F.interpolate(x, size=(side, side), mode="area")
        if side != spec.input_px:
            top = (side - spec.input_px) // 2
            x = x[..., top : top + spec.input_px, top : top + spec.input_px]
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
