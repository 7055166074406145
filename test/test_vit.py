"""Every registered encoder against its reference build: the same state-dict keys and shapes at full
size (meta device), the same embeddings from the same random weights at reduced depth, and a strict
load of a checkpoint written in the reference's own key names.

The references: timm 1.0.31 for UNI, UNI2-h, Virchow2, H-optimus-0/1, Prov-GigaPath and CONCH v1.5's
trunk; transformers' ``Dinov2Model`` for Phikon-v2; CONCH v1.5's position resampling and attention
pooler transcribed below from TRIDENT's ``trident/patch_encoder_models/model_zoo/conchv1_5/conchv1_5.py``
(``interpolate_pos_encoding``, ``AttentionalPooler``, ``CONCHVisionTower.forward``), einsum and all.
"""

import math

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from survfusion.errors import UserError
from survfusion.features.checkpoints import to_our_keys
from survfusion.features.encoders import ENCODERS, build_architecture, build_reference, encoder_spec
from survfusion.features.tile_encoder import TileEncoder
from survfusion.features.weights import init_encoder_weights, load_weights_strict
from survfusion.nets.calibration import _cdf_knots
from survfusion.slides.geometry import uniform_subset

# Reduced depth per entry: two blocks (one for the 1.1 B-parameter giants), full width.
DEPTH = {name: 1 if spec.arch.get("dim") == 1536 else 2 for name, spec in ENCODERS.items()}
DEPTH["vit-tiny"] = 4


def scramble_(model: torch.nn.Module, seed: int) -> None:
    """Every parameter to O(1)-effect random values: LayerScale's 1e-5 would otherwise hide a wrong
    block (a GELU where SiLU belongs changes the output by 1e-5 x something)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))


def reference_embedding(name: str, ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What each model card / TRIDENT takes as the tile embedding, from the reference build."""
    spec = encoder_spec(name)
    kind = spec.reference[0]
    if kind == "transformers-dinov2":  # Phikon-v2: last_hidden_state[:, 0]
        return ref(pixel_values=x).last_hidden_state[:, 0]
    if name.startswith("virchow2"):  # the model card: concat(class token, mean of the patch tokens)
        out = ref(x)
        return torch.cat([out[:, 0], out[:, 5:].mean(1)], dim=-1)
    if name.startswith("conch-v1.5"):
        return conch_reference_forward(ref, x)
    return ref(x)


def conch_reference_forward(tower: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TRIDENT's CONCHVisionTower.forward, transcribed: trunk.forward_features (position grid
    resampled by DINO's scale factor), then the einsum pooler with its max-shifted softmax, then
    ln_contrast."""
    trunk = tower.trunk
    b, _, w, h = x.shape
    tokens = trunk.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat((trunk.cls_token.expand(b, -1, -1), tokens), dim=1)
    npatch, n = tokens.shape[1] - 1, trunk.pos_embed.shape[1] - 1
    pos = trunk.pos_embed
    if npatch != n:
        dim = tokens.shape[-1]
        w0, h0 = w // 16 + 0.1, h // 16 + 0.1
        patch_pos = torch.nn.functional.interpolate(
            pos[:, 1:].reshape(1, int(math.sqrt(n)), int(math.sqrt(n)), dim).permute(0, 3, 1, 2),
            scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
            mode="bicubic",
        )
        pos = torch.cat((pos[:, 0].unsqueeze(0), patch_pos.permute(0, 2, 3, 1).view(1, -1, dim)), dim=1)
    tokens = trunk.norm(trunk.blocks(tokens + pos))
    pool = tower.attn_pool_contrast
    xk = pool.ln_k(tokens[:, None])  # b 1 n d
    q = pool.to_q(pool.ln_q(pool.query.expand(b, 1, -1, -1)))  # b 1 1 d
    k, v = pool.to_kv(xk).chunk(2, dim=-1)
    heads = pool.heads

    def split(t):  # 'b t n (h d) -> b h t n d'
        return t.reshape(*t.shape[:3], heads, -1).permute(0, 3, 1, 2, 4)

    q, k, v = split(q) * (q.shape[-1] // heads) ** -0.5, split(k), split(v)
    sim = torch.einsum("...id,...jd->...ij", q, k)
    attn = (sim - sim.amax(dim=-1, keepdim=True)).softmax(dim=-1)
    out = torch.einsum("...ij,...jd->...id", attn, v).permute(0, 2, 3, 1, 4).flatten(-2)
    return tower.ln_contrast(pool.to_out(out).squeeze(1)[:, 0])


@pytest.mark.parametrize("name", list(ENCODERS))
def test_full_size_keys_and_shapes_equal_the_reference(name):
    """At full depth, on the meta device: the reference's checkpoint keys, mapped to ours, are
    exactly our parameters, shape for shape."""
    spec = ENCODERS[name]
    with torch.device("meta"):
        ours, ref = build_architecture(name), build_reference(name)
    mapped = to_our_keys(ref.state_dict(), spec.checkpoint)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in mapped.items()
    }


# Published parameter counts (model cards / papers), to the precision they state them.
PUBLISHED_PARAMS = {"uni": 303e6, "uni2-h": 681e6, "virchow2": 631e6, "h-optimus-0": 1.13e9,
                    "h-optimus-1": 1.13e9, "gigapath": 1.13e9, "phikon-v2": 303e6}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_are_the_published_ones(name):
    from survfusion.features.encoders import parameter_count

    assert parameter_count(name) == pytest.approx(PUBLISHED_PARAMS[name], rel=5e-3)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_same_embeddings_as_the_reference_from_the_same_weights(name):
    """Random weights in the reference -> its checkpoint keys -> our build, strictly -> equal
    embeddings. fp32 on both sides; the two differ only in summation order (fused qkv, sdpa vs
    einsum), so agreement is to float32 rounding: 1e-4 on O(1) LayerNormed outputs."""
    short = f"{name}@{DEPTH[name]}" if DEPTH[name] < ENCODERS[name].depth else name
    spec = encoder_spec(short)
    torch.manual_seed(0)
    ref = build_reference(short).eval()
    scramble_(ref, seed=1)
    ours = build_architecture(short).eval()
    ours.load_state_dict(to_our_keys(ref.state_dict(), spec.checkpoint), strict=True)
    x = torch.randn(2, 3, spec.input_px, spec.input_px, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = reference_embedding(short, ref, x), ours(x)
    assert got.shape == (2, spec.embed_dim)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_the_swiglu_trap_is_visible():
    """timm's block hands its act_layer (GELU by default) to SwiGLUPacked: built without
    act_layer=SiLU, UNI2-h runs another function. Our build equals the SiLU one and is far from the
    GELU one (so the equality test above would catch the trap)."""
    spec = encoder_spec("uni2-h@1")
    _, model_name, kwargs = spec.reference
    torch.manual_seed(0)
    ref = build_reference("uni2-h@1").eval()
    scramble_(ref, seed=1)
    gelu = {**kwargs, "mlp_layer": timm.layers.SwiGLUPacked, "act_layer": None}  # timm's default: GELU
    wrong = timm.create_model(model_name, pretrained=False, num_classes=0, depth=1, **gelu).eval()
    wrong.load_state_dict(ref.state_dict())
    ours = build_architecture("uni2-h@1").eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        assert (ours(x) - wrong(x)).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["phikon-v2@1", "conch-v1.5@1", "virchow2@1"])
def test_strict_load_of_a_reference_named_checkpoint(tmp_path, name):
    """init-encoder writes the reference's own key names (transformers' for Phikon-v2, trunk.* for
    CONCH); the strict loader takes them, and the embeddings are the reference's."""
    path = tmp_path / "w.safetensors"
    init_encoder_weights(name, path, seed=4)
    from safetensors.torch import load_file

    keys = set(load_file(str(path)))
    torch.manual_seed(4)
    ref = build_reference(name).eval()
    assert keys == set(ref.state_dict())
    enc = TileEncoder(name, path, device="cpu")
    tiles = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, enc.spec.tile_px, enc.spec.tile_px, 3), dtype=np.uint8)
    )
    with torch.no_grad():
        want = reference_embedding(name, ref, enc.preprocess(tiles))
    torch.testing.assert_close(enc.embed(tiles), want, rtol=1e-4, atol=1e-4)


def test_a_checkpoint_for_another_encoder_fails_naming_the_mismatch(tmp_path):
    path = tmp_path / "w.safetensors"
    init_encoder_weights("uni2-h@1", path, seed=0)
    with torch.device("meta"):
        model = build_architecture("virchow2@1")
    with pytest.raises(UserError, match=r"do not fit 'virchow2@1'.*wrong shapes: .*pos_embed"):
        load_weights_strict(model, path, "virchow2@1")
    with torch.device("meta"):
        model = build_architecture("uni2-h@2")
    with pytest.raises(UserError, match=r"missing keys: blocks\.1\."):
        load_weights_strict(model, path, "uni2-h@2")


def test_an_incomplete_hf_attention_is_named_not_dropped(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    init_encoder_weights("phikon-v2@1", path, seed=0)
    state = load_file(str(path))
    del state["encoder.layer.0.attention.attention.key.weight"]
    save_file(state, str(tmp_path / "cut.safetensors"))
    with torch.device("meta"):
        model = build_architecture("phikon-v2@1")
    with pytest.raises(
        UserError, match=r"missing keys: blocks\.0\.attn\.qkv\.weight.*unexpected keys: .*query"
    ):
        load_weights_strict(model, tmp_path / "cut.safetensors", "phikon-v2@1")


@pytest.mark.parametrize("bad", ["nope", "uni@0", "uni@25", "uni@x", "uni@"])
def test_encoder_names_are_checked(bad):
    if bad == "uni@":
        assert encoder_spec(bad) is ENCODERS["uni"]
        return
    with pytest.raises(UserError):
        encoder_spec(bad)


def test_flop_counts_match_the_closed_form():
    """torch's FLOP counter (what the registry reports) against the ViT's closed form at full size:
    per token and block 2 x (4 d^2 + 2 d h_in) for qkv, proj and the MLP (h_in = fc1 in, fc2 in),
    2 x 2 n d for attention; plus the patch embedding."""
    from survfusion.features.encoders import flops_per_tile

    for name in ("uni", "uni2-h", "virchow2", "gigapath"):
        a = ENCODERS[name].arch
        d, p, depth = a["dim"], a["patch_size"], a["depth"]
        hidden = int(d * a.get("mlp_ratio", 4.0))
        fc2_in = hidden // 2 if a.get("mlp") == "swiglu" else hidden
        n = (224 // p) ** 2 + 1 + a.get("reg_tokens", 0)
        per_block = n * 2 * (4 * d * d + d * hidden + fc2_in * d) + 2 * 2 * n * n * d
        patch = 2 * (224 // p) ** 2 * 3 * p * p * d
        assert flops_per_tile(name) == pytest.approx(depth * per_block + patch, rel=1e-6)


def test_meta_build_assigns_the_loaded_weights(tmp_path):
    from survfusion.features.weights import init_encoder_weights

    path = tmp_path / "w.safetensors"
    init_encoder_weights("vit-tiny", path, seed=3)
    enc = TileEncoder("vit-tiny", path, device="cpu")
    assert not any(p.is_meta for p in enc.model.parameters())
    torch.manual_seed(3)
    ref = build_reference("vit-tiny").eval()
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    with torch.no_grad():
        torch.testing.assert_close(enc.embed(tiles), ref(enc.preprocess(tiles)), rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=40))
def test_mid_rank_knots_equal_scipy(values):
    from scipy.stats import rankdata

    risk = np.asarray(values, dtype=float)
    x, c = _cdf_knots(risk)
    first = np.unique(risk, return_index=True)[1]
    np.testing.assert_array_equal(x, np.unique(risk))
    np.testing.assert_allclose(c, rankdata(risk, method="average")[first] / (risk.size + 1.0))


def test_uniform_subset_spreads_over_the_tissue():
    """A 40 x 40 grid cut to 100 tiles: each 8 x 8 block of the grid keeps 4 +- 1, not a prefix."""
    yy, xx = np.mgrid[0:40, 0:40]
    xy = np.stack([xx.ravel(), yy.ravel()], 1) * 896
    keep = uniform_subset(xy_lv0=xy, tile_lv0=896, max_tiles=100)
    assert len(keep) == 100 and len(set(keep.tolist())) == 100 and np.all(np.diff(keep) > 0)
    kept = xy[keep] // 896
    counts = np.zeros((5, 5), int)
    np.add.at(counts, (kept[:, 1] // 8, kept[:, 0] // 8), 1)
    assert counts.min() >= 3 and counts.max() <= 5, counts
    assert np.array_equal(uniform_subset(xy_lv0=xy, tile_lv0=896, max_tiles=5000), np.arange(1600))
