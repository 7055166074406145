"""The tile-encoder registry: each encoder's architecture, normalisation, input size and width.

An ``EncoderSpec`` says how to build an encoder exactly as its reference does (``timm_name`` and
``timm_kwargs`` for timm's own build, used for random weights and as the tests' reference;
``vit_kwargs`` for ``survfusion.features.h5.vit``, the network that actually runs). Adding an encoder is
one entry in ``ENCODERS``; weights are never downloaded (``survfusion.features.weights``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from survfusion.errors import UserError

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
    """The encoder's network (``survfusion.features.vit``, timm's parameter names), randomly initialised by
    torch's defaults; under ``with torch.device("meta")`` it has shapes only (nothing allocated)."""
    from survfusion.features.vit import VisionTransformer

    return VisionTransformer(**encoder_spec(name).vit_kwargs)


def build_timm_reference(name: str) -> nn.Module:
    """The same network from timm (``pretrained=False``: random weights, never a download)."""
    import timm

    spec = encoder_spec(name)
    return timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs)
