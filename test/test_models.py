"""Model contract: the paper's parameter counts, gradients, permutation and padding invariance."""

import numpy as np
import pytest
import torch

from survfusion.errors import UserError
from survfusion.nets.models import GatedAttentionMIL, build_model, count_parameters, model_names

PAPER = ["ABMIL_Surv", "ABMIL_Surv_PG", "ABMIL_Surv_PG_Res"]
ALL = model_names()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ABMIL_Surv", 41_552_413), ("ABMIL_Surv_PG", 41_645_954), ("ABMIL_Surv_PG_Res", 41_731_586)],
)
def test_parameter_counts_match_the_paper(name, expected):
    assert count_parameters(build_model(name)) == expected


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UserError) as err:
        build_model("ABMIL_Nope")
    for name in PAPER:
        assert name in str(err.value)
    assert set(PAPER) <= set(model_names())


def _batch(dims, b=3, n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, dims["feat_dim"], generator=g)
    clin = torch.randn(b, dims["clinical_dim"], generator=g)
    rna = torch.rand(b, dims["rna_dim"], generator=g) * 5
    return feats, clin, rna


def _shift_invariant(model) -> dict[str, torch.nn.Module]:
    """Parameters whose gradient is zero in exact arithmetic: the attention score's bias adds one
    constant to every tile's score of a bag, which the softmax over the bag cancels, so
    ``dL/db = sum_n dL/ds_n = 0``. Maps each to its score layer (whose output is ``s``)."""
    return {
        f"{prefix}.attn_score.bias": mod.attn_score
        for prefix, mod in model.named_modules()
        if isinstance(mod, GatedAttentionMIL)
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_every_parameter_gets_a_gradient(name, dtype, small_dims):
    """Every parameter gets a finite, non-zero gradient, except those that are zero in exact
    arithmetic (``_shift_invariant``): these are zero up to rounding, checked in float64."""
    model = build_model(name, **small_dims).train().to(dtype)
    invariant = _shift_invariant(model)
    kept: list[torch.Tensor] = []  # each score layer's output s, to read dL/ds after backward

    def keep(_module, _inputs, out: torch.Tensor) -> None:
        out.retain_grad()
        kept.append(out)

    for layer in invariant.values():
        layer.register_forward_hook(keep)
    feats, clin, rna = (t.to(dtype) for t in _batch(small_dims))
    risk = model(feats, clin, rna)
    assert risk.shape == (3,)
    assert torch.isfinite(risk).all()
    (risk * torch.tensor([1.0, -2.0, 0.5], dtype=dtype)).sum().backward()
    terms = {pname: out.grad.abs().sum() for pname, out in zip(invariant, kept, strict=True)}
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if pname not in invariant:
            assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"
        elif dtype == torch.float64:
            # sum_n dL/ds_n of B*N terms: rounding leaves at most ~B*N*eps of their absolute sum
            # (27 * 1.1e-16 = 3e-15 here); 1e-10 is a margin of 3e4, and zero is the truth.
            assert p.grad.abs().sum() <= 1e-10 * terms[pname], f"{pname}: {p.grad} is not ~0"


@pytest.mark.parametrize("name", ALL)
def test_tile_order_does_not_change_risk(name, small_dims):
    model = build_model(name, **small_dims).eval()
    feats, clin, rna = _batch(small_dims)
    perm = torch.randperm(feats.shape[1])
    with torch.no_grad():
        r1, a1 = model(feats, clin, rna, return_attention=True)
        r2, a2 = model(feats[:, perm], clin, rna, return_attention=True)
    torch.testing.assert_close(r1, r2, rtol=0, atol=1e-6)
    torch.testing.assert_close(a1[:, perm], a2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_padded_batch_equals_each_bag_alone(name, small_dims):
    model = build_model(name, **small_dims).eval()
    sizes = [7, 50, 1]
    bags = [torch.randn(n, small_dims["feat_dim"]) for n in sizes]
    _, clin, rna = _batch(small_dims, b=3)
    padded = torch.full((3, 50, small_dims["feat_dim"]), float("nan"))  # garbage in the padding
    mask = torch.zeros(3, 50, dtype=torch.bool)
    for i, bag in enumerate(bags):
        padded[i, : len(bag)] = bag
        mask[i, : len(bag)] = True
    with torch.no_grad():
        risk, attn = model(padded, clin, rna, mask, return_attention=True)
        for i, bag in enumerate(bags):
            alone, attn_alone = model(bag[None], clin[i : i + 1], rna[i : i + 1], return_attention=True)
            torch.testing.assert_close(risk[i : i + 1], alone, rtol=0, atol=1e-6)
            torch.testing.assert_close(attn[i, : len(bag)], attn_alone[0], rtol=0, atol=1e-6)
    assert (attn[~mask] == 0).all()
    expected = 1.0 if "hist" in model.uses else 0.0  # models without histology attend to nothing
    torch.testing.assert_close(attn.sum(1), torch.full((3,), expected))


def test_empty_bag_gives_finite_risk_and_zero_attention(small_dims):
    model = build_model("ABMIL_Surv_PG", **small_dims).eval()
    feats, clin, rna = _batch(small_dims, b=2)
    mask = torch.tensor([[True] * 9, [False] * 9])
    risk, attn = model(feats, clin, rna, mask, return_attention=True)
    assert torch.isfinite(risk).all()
    assert (attn[1] == 0).all()


def test_wrong_shapes_say_what_was_expected(small_dims):
    model = build_model("ABMIL_Surv_PG", **small_dims)
    feats, clin, rna = _batch(small_dims)
    with pytest.raises(ValueError, match=r"rna: expected \(3, 40\)"):
        model(feats, clin, rna[:, :10])
    with pytest.raises(ValueError, match="features: expected"):
        model(feats[0], clin, rna)


def test_comparators_and_ablations_are_registered():
    assert {"LMF", "HFBSurv", "ABMIL_Hist", "RNA_Clin", "Clin_only"} <= set(ALL)


@pytest.mark.parametrize(
    ("name", "unused"), [("ABMIL_Hist", "rna"), ("RNA_Clin", "features"), ("Clin_only", "rna")]
)
def test_ablations_ignore_the_modalities_they_do_not_use(name, unused, small_dims):
    model = build_model(name, **small_dims).eval()
    feats, clin, rna = _batch(small_dims)
    inputs = {"features": feats, "clinical": clin, "rna": rna}
    other = dict(inputs, **{unused: torch.randn_like(inputs[unused])})
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs), model(**other))


def test_batched_risks_equal_one_patient_at_a_time(small_dims):
    """The one risk helper: any batch size gives each patient's own forward; ``replace`` swaps in
    an embedding exactly as encode-then-fuse would."""
    from survfusion.nets.models import Embeddings, batched_risks

    model = build_model("ABMIL_Surv_PG", **small_dims).eval()
    g = torch.Generator().manual_seed(3)
    bags = [torch.randn(n, small_dims["feat_dim"], generator=g) for n in (5, 1, 9, 0)]
    clinical = torch.randn(4, 27, generator=g)
    rna = torch.rand(4, small_dims["rna_dim"], generator=g)
    with torch.no_grad():
        alone = [float(model(b[None], clinical[i : i + 1], rna[i : i + 1])) if len(b) else None
                 for i, b in enumerate(bags)]  # fmt: skip
    for batch_size in (1, 3, 16):
        got = batched_risks(model, bags, clinical, rna, batch_size=batch_size)
        np.testing.assert_allclose(got[:3], alone[:3], rtol=1e-5, atol=1e-6)
    mean_rna = torch.randn(128, generator=g)
    got = batched_risks(model, bags[:1], clinical[:1], rna[:1], replace={"rna": mean_rna})
    with torch.no_grad():
        emb = model.encode(bags[0][None], clinical[:1], rna[:1])
        want = model.fuse(Embeddings(emb.hist, mean_rna[None], emb.clinical, emb.attention))
    assert got[0] == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_zeroes_a_fraction_p_scales_the_rest_and_is_reproducible(p):
    """Properties of inverted dropout that hold exactly (scale, gradient, eval identity, seed) or
    with a binomial tolerance (the zeroed fraction of 10^6 elements: sd <= 5e-4, 6 sd allowed)."""
    from survfusion.nets.dropout import Dropout

    d = Dropout(p)
    x = torch.ones(1000, 1000, requires_grad=True)
    torch.manual_seed(3)
    y = d(x)
    zero = y == 0
    assert abs(zero.double().mean().item() - p) < 6 * 5e-4
    assert torch.equal(y[~zero], torch.full_like(y[~zero], 1.0 / (1.0 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x is the mask times the scale
    torch.manual_seed(3)
    assert torch.equal(d(x), y)
    assert torch.equal(d.eval()(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x)) and Dropout(0.0)(x) is x
    with pytest.raises(ValueError):
        Dropout(1.5)
