"""The tile-encoder registry: how each encoder is built, fed, run and measured.

An ``EncoderSpec`` is everything the kit knows about one encoder: its network (``arch``: the
arguments of ``survfusion.features.vit``), the reference build it equals (``reference``: timm's, or
transformers', with the arguments that reproduce the published model), the key names its published
weights use (``checkpoint``), its input (tile side and micrometres per pixel read, model input side,
resize or centre crop, normalisation) and the precision its reference runs at. Its output width,
parameter count and FLOPs per tile are computed from the network, never written twice.

The entries follow the public reference builds: the model cards of UNI, UNI2-h, Virchow2,
H-optimus-0/1, Prov-GigaPath, Phikon-v2, and TRIDENT's loaders (``trident/patch_encoder_models``),
which are also where CONCH v1.5's vision tower is defined (docs/DESIGN.md, "Tile encoders").
``test_vit.py`` holds every entry to its reference: identical keys and shapes at full size, equal
embeddings from the same random weights at reduced depth.

``NAME@D`` (for example ``uni2-h@2``) is entry NAME cut to its first D blocks: the same code path,
width and weights format at a fraction of the cost, for tests and demos. Weights are never
downloaded (``survfusion.features.weights``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache

import torch
from torch import nn

from survfusion.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)

# The T4's sustained rate for ViT inference, TFLOP/s (low, high). fp16: 8.6-19.7, the range that
# makes UNI (123 GFLOPs/tile) run at 70-160 tiles/s, i.e. 13-30% of the T4's 65 TFLOP/s fp16
# tensor-core peak (docs/BENCHMARKS.md, "A time budget for one case"); fp32: 50-70% of its
# 8.1 TFLOP/s peak (no tensor cores for fp32). Estimates until a T4 is measured.
T4_SUSTAINED_TFLOPS = {"fp16": (8.6, 19.7), "fp32": (4.0, 5.7)}

FITS = ("resize", "crop")


@dataclass(frozen=True)
class EncoderSpec:
    """One tile encoder.

    Attributes:
        name: registry name (what feature files, bundles and ``--encoder`` say).
        title: the model's published name.
        arch: ``VisionTransformer`` arguments; with ``pool_dim``/``pool_heads``, the trunk of an
            ``AttentionPooledViT`` (CONCH v1.5).
        reference: ``("timm", model_name, kwargs)`` or ``("transformers-dinov2", "", config)``: the
            build the tests compare with and ``init-encoder`` draws random weights from; its depth
            always comes from ``arch``.
        checkpoint: key names of the published weights (``survfusion.features.checkpoints``).
        input_px: the model's input side.
        tile_px, spacing_um: the tile read by default, at this many micrometres per pixel.
        fit: ``resize`` (area-resample the tile to ``input_px``) or ``crop`` (its centre).
        mean, std: the normalisation.
        precision: what the reference recipe runs at (fp16, bf16, fp32); ``auto`` follows it.
        test_only: a small network for tests and demos, not a pathology model.
    """

    name: str
    title: str
    arch: dict
    reference: tuple[str, str, dict]
    checkpoint: str = "timm"
    input_px: int = 224
    tile_px: int = 224
    spacing_um: float = 0.5
    fit: str = "resize"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    precision: str = "fp16"
    test_only: bool = False
    notes: str = field(default="", compare=False)

    @property
    def depth(self) -> int:
        return int(self.arch["depth"])

    @property
    def embed_dim(self) -> int:
        """The width of one tile's embedding: what the survival model's input layer takes."""
        if "pool_dim" in self.arch:
            return int(self.arch["pool_dim"])
        return int(self.arch["dim"]) * (2 if self.arch.get("pool") == "cls+mean" else 1)

    def at_depth(self, depth: int) -> EncoderSpec:
        return replace(self, name=f"{self.name}@{depth}", arch={**self.arch, "depth": depth})


_SWIGLU_GIANT = {"dim": 1536, "heads": 24, "mlp_ratio": 2.66667 * 2, "mlp": "swiglu", "init_values": 1e-5}
_TIMM_SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}  # names: resolved in build_reference

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        # UNI (Chen et al. 2024), as its model card builds it; the paper's encoder and the default. The
        # paper tiled at 10x (1.0 um/px, 224 px), which stays this entry's default.
        EncoderSpec(
            "uni",
            "UNI (ViT-L/16)",
            {"img_size": 224, "patch_size": 16, "dim": 1024, "depth": 24, "heads": 16, "init_values": 1e-5},
            ("timm", "vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5}),
            tile_px=224,
            spacing_um=1.0,
            precision="fp16",
        ),
        EncoderSpec(
            "uni2-h",
            "UNI2-h (ViT-H/14, SwiGLU, 8 registers)",
            {
                "img_size": 224,
                "patch_size": 14,
                "depth": 24,
                "reg_tokens": 8,
                "no_embed_class": True,
                **_SWIGLU_GIANT,
            },
            (
                "timm",
                "vit_giant_patch14_224",
                {
                    "img_size": 224,
                    "patch_size": 14,
                    "embed_dim": 1536,
                    "num_heads": 24,
                    "init_values": 1e-5,
                    "mlp_ratio": 2.66667 * 2,
                    "no_embed_class": True,
                    "reg_tokens": 8,
                    **_TIMM_SWIGLU,
                },
            ),
            tile_px=256,
            precision="bf16",
        ),
        EncoderSpec(
            "virchow2",
            "Virchow2 (ViT-H/14, SwiGLU, 4 registers)",
            {
                "img_size": 224,
                "patch_size": 14,
                "dim": 1280,
                "depth": 32,
                "heads": 16,
                "mlp_ratio": 5.3375,
                "mlp": "swiglu",
                "init_values": 1e-5,
                "reg_tokens": 4,
                "pool": "cls+mean",
            },
            (
                "timm",
                "vit_huge_patch14_224",
                {
                    "img_size": 224,
                    "init_values": 1e-5,
                    "mlp_ratio": 5.3375,
                    "reg_tokens": 4,
                    "global_pool": "",
                    **_TIMM_SWIGLU,
                },
            ),
            tile_px=224,
            precision="fp16",
            notes="embedding = class token beside the mean of the 256 patch tokens (registers excluded)",
        ),
        *(
            EncoderSpec(
                name,
                f"{title} (ViT-g/14, SwiGLU, 4 registers)",
                {
                    "img_size": 224,
                    "patch_size": 14,
                    "depth": 40,
                    "reg_tokens": 4,
                    "no_embed_class": True,
                    **_SWIGLU_GIANT,
                },
                ("timm", "vit_giant_patch14_reg4_dinov2", {"img_size": 224, "init_values": 1e-5}),
                tile_px=224,
                mean=HOPTIMUS_MEAN,
                std=HOPTIMUS_STD,
                precision="fp16",
            )
            for name, title in (("h-optimus-0", "H-optimus-0"), ("h-optimus-1", "H-optimus-1"))
        ),
        EncoderSpec(
            "gigapath",
            "Prov-GigaPath tile encoder (ViT-g, patch 16, SwiGLU)",
            {"img_size": 224, "patch_size": 16, "depth": 40, **_SWIGLU_GIANT},
            (
                "timm",
                "vit_giant_patch14_dinov2",
                {
                    "img_size": 224,
                    "patch_size": 16,
                    "embed_dim": 1536,
                    "num_heads": 24,
                    "init_values": 1e-5,
                    "mlp_ratio": 5.33334,
                },
            ),
            tile_px=256,
            fit="crop",
            precision="fp16",
            notes="patch 16 despite the architecture's name; 256 px tiles, centre 224 px",
        ),
        EncoderSpec(
            "conch-v1.5",
            "CONCH v1.5 vision tower (ViT-L/16 + attention pooler)",
            {
                "img_size": 448,
                "patch_size": 16,
                "dim": 1024,
                "depth": 24,
                "heads": 16,
                "init_values": 1.0,
                "pos_grid": 14,
                "pool_dim": 768,
                "pool_heads": 8,
            },
            ("timm", "vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1.0}),
            input_px=448,
            tile_px=512,
            precision="fp16",
            notes="embedding = the attention pooler's output (not the class token); position grid 14x14 "
            "resampled to 28x28",
        ),
        EncoderSpec(
            "phikon-v2",
            "Phikon-v2 (ViT-L/16, DINOv2)",
            {"img_size": 224, "patch_size": 16, "dim": 1024, "depth": 24, "heads": 16, "init_values": 1e-5},
            (
                "transformers-dinov2",
                "",
                {
                    "hidden_size": 1024,
                    "num_attention_heads": 16,
                    "patch_size": 16,
                    "image_size": 224,
                    "mlp_ratio": 4,
                    "layerscale_value": 1e-5,
                    "layer_norm_eps": 1e-6,
                },
            ),
            checkpoint="hf-dinov2",
            tile_px=224,
            precision="fp32",
        ),
        # A 4-block ViT-Tiny for tests and demos: the same code path, a 192-d embedding, ~1/100 of UNI's cost.
        EncoderSpec(
            "vit-tiny",
            "ViT-Tiny/16, 4 blocks (tests and demos)",
            {"img_size": 224, "patch_size": 16, "dim": 192, "depth": 4, "heads": 3},
            ("timm", "vit_tiny_patch16_224", {"img_size": 224, "patch_size": 16}),
            tile_px=224,
            spacing_um=1.0,
            precision="fp16",
            test_only=True,
        ),
    )
}


def encoder_spec(name: str) -> EncoderSpec:
    """The entry ``name``, or ``NAME@D``: entry NAME at depth D (1 <= D <= its depth)."""
    base, _, depth = str(name).partition("@")
    if base not in ENCODERS:
        raise UserError(f"unknown encoder {str(name)[:60]!r}; valid encoders: {', '.join(ENCODERS)}")
    spec = ENCODERS[base]
    if not depth:
        return spec
    if not depth.isdigit() or not 1 <= int(depth) <= spec.depth:
        raise UserError(f"encoder {str(name)[:60]!r}: the depth after @ must be 1..{spec.depth}")
    return spec.at_depth(int(depth))


def build_architecture(name: str) -> nn.Module:
    """The encoder's network (``survfusion.features.vit``), initialised by torch's defaults; under
    ``with torch.device("meta")`` it has shapes only (nothing allocated)."""
    from survfusion.features.vit import AttentionPooledViT, VisionTransformer

    arch = dict(encoder_spec(name).arch)
    if "pool_dim" in arch:
        return AttentionPooledViT(**arch)
    return VisionTransformer(**arch)


def build_reference(name: str) -> nn.Module:
    """The reference build (random weights, never a download) whose state dict is in the published
    checkpoint's key names: timm's model, a transformers ``Dinov2Model``, or for CONCH v1.5 timm's
    trunk beside our pooler (the tower TRIDENT defines; its forward is transcribed in the tests).
    Needs timm (requirements-train.txt), or transformers for Phikon-v2 (requirements-dev.txt)."""
    spec = encoder_spec(name)
    kind, model_name, kwargs = spec.reference
    if kind == "transformers-dinov2":
        try:
            from transformers import Dinov2Config, Dinov2Model
        except ImportError:
            raise UserError(
                f"{spec.name}: its reference build needs transformers (requirements-dev.txt)"
            ) from None
        config = Dinov2Config(**kwargs, num_hidden_layers=spec.depth, use_swiglu_ffn=False, hidden_act="gelu")
        return Dinov2Model(config)
    import timm
    import timm.layers

    resolved = {
        **kwargs,
        **{k: getattr(timm.layers, v) for k, v in kwargs.items() if k == "mlp_layer"},
        **{k: getattr(nn, v) for k, v in kwargs.items() if k == "act_layer"},
    }
    trunk = timm.create_model(model_name, pretrained=False, num_classes=0, depth=spec.depth, **resolved)
    if "pool_dim" not in spec.arch:
        return trunk
    from survfusion.features.vit import AttentionalPooler

    tower = nn.Module()
    tower.trunk = trunk
    tower.attn_pool_contrast = AttentionalPooler(
        spec.arch["pool_dim"], spec.arch["dim"], spec.arch["pool_heads"]
    )
    nn.init.normal_(tower.attn_pool_contrast.query)  # the reference: torch.randn
    tower.ln_contrast = nn.LayerNorm(spec.arch["pool_dim"])
    return tower


@cache
def parameter_count(name: str) -> int:
    """Parameters of the network, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_architecture(name).parameters())


@cache
def flops_per_tile(name: str) -> float:
    """Forward FLOPs of one tile (2 x multiply-adds of every matmul, convolution and attention),
    counted by ``torch.utils.flop_counter`` over the network on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = encoder_spec(name)
    with torch.device("meta"):
        model = build_architecture(name)
        x = torch.empty(1, 3, spec.input_px, spec.input_px)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def t4_seconds(name: str, tiles: int, precision: str | None = None) -> tuple[float, float]:
    """Estimated (fast, slow) seconds to embed ``tiles`` on a T4 at ``precision`` (default: what
    ``auto`` runs there): FLOPs over ``T4_SUSTAINED_TFLOPS``."""
    precision = precision or auto_precision(encoder_spec(name), cuda_major=7)
    lo, hi = T4_SUSTAINED_TFLOPS["fp32" if precision == "fp32" else "fp16"]
    total = flops_per_tile(name) * tiles
    return total / (hi * 1e12), total / (lo * 1e12)


def auto_precision(spec: EncoderSpec, *, cuda_major: int | None) -> str:
    """What ``--precision auto`` runs ``spec`` at: fp32 on a CPU (``cuda_major`` None) and for a
    reference that runs fp32; otherwise bf16 from compute capability 8.0 (fp32's range: no
    overflow) and fp16 below it (a T4 has no fast bf16; non-finite tiles are recomputed in fp32)."""
    if cuda_major is None or spec.precision == "fp32":
        return "fp32"
    return "bf16" if cuda_major >= 8 else "fp16"


def precision_note(spec: EncoderSpec, chosen: str, *, cuda_major: int | None) -> str | None:
    """One line when ``auto`` departs from the reference's precision on a GPU (printed, and
    recorded in the feature file), else None."""
    if cuda_major is None or chosen == spec.precision:
        return None
    if spec.precision == "bf16" and chosen == "fp16":
        return (
            f"{spec.name}: its reference runs bf16, which this GPU (compute capability {cuda_major}.x) "
            "lacks; fp16 instead, any tile with a non-finite embedding recomputed in fp32"
        )
    return f"{spec.name}: its reference runs {spec.precision}; {chosen} here"
