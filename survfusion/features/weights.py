"""Encoder weights: read strictly (safetensors, or ``torch.load(weights_only=True)``; never a pickle),
map the reference's key names to ours (``survfusion.features.checkpoints``), check they fit the
architecture key by key, make local random ones, convert to safetensors once.

Weights are never downloaded: a pathology encoder needs the user's file as its publisher ships it
(UNI's ``pytorch_model.bin``, Phikon-v2's ``model.safetensors``, ...); ``init-encoder`` writes random
ones in the same key names. All go through the same strict loader (``strict=True``), and a file for
another encoder fails naming the mismatch.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from survfusion.errors import UserError
from survfusion.features.checkpoints import to_our_keys
from survfusion.features.encoders import build_architecture, build_reference, encoder_spec
from survfusion.fileio import sha256_file


def map_state_dict(state: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """A checkpoint of encoder ``name`` in its reference's key names -> our parameter names."""
    return to_our_keys(state, encoder_spec(name).checkpoint)


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
    state = map_state_dict(read_weights(path), name)
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
    """Create random weights for ``name`` (deterministic in ``seed``; the reference build's
    initialisation, in its key names, as a published file has them) as safetensors; returns sha256."""
    torch.manual_seed(seed)
    model = build_reference(name)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors orders several keys at random, and the file's sha256 must not vary.
    save_file(state, str(out), metadata={"survfusion": f"encoder={name} seed={seed}"})
    return sha256_file(out)


def convert_to_safetensors(name: str, src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Write the weights of ``src`` (any format ``read_weights`` takes) as safetensors at ``dst``, after
    checking that they fit ``name`` strictly. Returns the sha256 of ``dst``. Keys in our names (the
    reference's mapped once; mapping our names again leaves them as they are), tensors as stored.
    Done once by ``package``, so the container never unpickles anything."""
    raw = read_weights(src)
    state = {k: v.contiguous() for k, v in map_state_dict(raw, name).items()}
    with torch.device("meta"):
        check_fit(build_architecture(name), state, src, name)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    if Path(src).suffix == ".safetensors" and state.keys() == raw.keys():
        shutil.copyfile(src, dst)  # already safe and in our names: keep the very bytes
    else:
        save_file(state, str(dst), metadata={"survfusion": f"encoder={name}"})
    return sha256_file(dst)
