"""A checkpoint's key names -> the parameter names of our build (``survfusion.features.vit``).

Every registered encoder loads a file written in its reference's own key names, strictly:

- ``timm``: timm's names are ours (UNI, UNI2-h, Virchow2, H-optimus, Prov-GigaPath); CONCH v1.5's
  ``trunk.* / attn_pool_contrast.* / ln_contrast.*`` are ours too.
- ``hf-dinov2``: Hugging Face transformers' ``Dinov2Model`` (Phikon-v2), as its published files
  write them (transformers 4.x: ``encoder.layer.N.attention.attention.query``, ...). The separate
  query/key/value projections are stacked into one ``qkv`` (timm's layout, one matmul);
  ``embeddings.mask_token`` is dropped: the reference uses it only to mask patches in pre-training.

Keys already in our names pass through unchanged (``package`` writes them so). What the mapping
does not recognise is passed on unchanged too, so ``weights.check_fit`` names it as an
unexpected key: nothing is dropped silently but the one documented unused tensor.
"""

from __future__ import annotations

import re

import torch

FORMATS = ("timm", "hf-dinov2")
HF_UNUSED = ("embeddings.mask_token",)

_HF_FIXED = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_IN_LAYER = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_QKV = ("query", "key", "value")


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``module.`` (DataParallel) prefix shared by every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def to_our_keys(state: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """``state`` in the reference's names (``fmt``) -> our parameter names."""
    if fmt not in FORMATS:
        raise ValueError(f"checkpoint format: expected one of {FORMATS}, got {fmt!r}")
    state = strip_module_prefix(state)
    if fmt == "timm":
        return state
    return _from_hf_dinov2(state)


def _from_hf_dinov2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = {}
    for key, value in state.items():
        if key in HF_UNUSED:
            continue
        if key in _HF_FIXED:
            out[_HF_FIXED[key]] = value
            continue
        m = _HF_LAYER.match(key)
        rest = m.group(2) if m else ""
        if m and rest in _HF_IN_LAYER:
            out[f"blocks.{m.group(1)}.{_HF_IN_LAYER[rest]}"] = value
            continue
        parts = rest.split(".")
        if m and len(parts) == 4 and parts[:2] == ["attention", "attention"] and parts[2] in _QKV:
            qkv.setdefault((m.group(1), parts[3]), {})[parts[2]] = (key, value)
            continue
        out[key] = value  # unknown: check_fit names it
    for (layer, kind), parts in qkv.items():
        if len(parts) == 3:
            out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[p][1] for p in _QKV], dim=0)
        else:  # incomplete: pass the pieces on, so they are named as unexpected and qkv as missing
            out.update(dict(parts.values()))
    return out
