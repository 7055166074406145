"""Why a case got its number (``survfusion explain``): which modality, which tiles, which inputs.

**Modalities: exact Shapley values.** The bundle's risk is a function ``v(S)`` of the set ``S`` of
modalities (slide, RNA, clinical) the case brings; a modality outside ``S`` is replaced by its
**reference**, each member's training-mean embedding (the same stand-in the container uses for an
unusable input, ``Bundle.risks(replace=...)``). With three modalities all ``2^3 = 8`` values are
computed, and ``phi_i = sum over S without i of |S|! (2 - |S|)! / 3! (v(S + i) - v(S))``. They sum
to ``v(all) - v(none)``, the case's risk minus the reference risk, exactly (in float64 up to
rounding), and the summary prints both numbers.

**Tiles.** Each tile's attention (averaged over members) and its share of the slide's contribution,
``phi_slide * attention_n`` (an attribution in proportion to attention: attention pooling is a
weighted mean, but the networks after it are not linear, so this is a reading aid, not an exact
split). QuPath GeoJSON (``training.qupath``): one Feature per tile (level-0 pixels, ``objectType: "tile"``,
``measurements``, a ``classification`` with a name and a colour by attention decile) and the tissue
outline (the outline of the tiles' union, traced on their grid) as an annotation. Where the feature
file labels its tiles (``tile_class``, ``survfusion.features.h5``: synthetic features carry their
planted class), the explanation says for each class its share of the bag and of the top
``TOP_TILE_FRACTION`` of tiles by attention, and their ratio (the enrichment: 1 = attention blind to
the class).

**Inputs: integrated gradients.** For each member, the clinical vector and the RNA input are moved
along a straight path from a **baseline** to the case's values (``IG_STEPS`` midpoints), the
others held at the case's own; attribution = path-mean gradient x (value - baseline), so the
attributions of one modality sum to ``risk(case) - risk(case with that input at its baseline)``
up to the path's discretisation. The baseline is the **reference** of the Shapley values where it
lives in input space: for clinical data each member's training-mean clinical vector (the clinical
embedding is the vector itself, ``models.Embeddings``); for RNA the pool's centre where the bundle
projects RNA by PCA (then gene ``g`` gets ``u_g * (C^T grad_z)_g`` with
``u = (log1p(x) - center) / scale``, exactly the IG in gene space), the training mean of each gene a
linear bundle reads (``LinearCox``'s ``center``), else zero expression (a deep model's RNA
reference is an embedding, with no input it comes from). For a linear bundle the IG is exact:
``beta_j (x_j - mean_j) / sd_j`` on the standardised design, and the clinical fields' sum is the
clinical Shapley value. An ensemble's attribution is the members' in the bundle's combination
(linear in the member risks).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from survfusion.errors import UserError
from survfusion.fileio import write_json
from survfusion.nets.models import Embeddings, pad_bags
from survfusion.serving.bundle import MODALITIES, Bundle
from survfusion.serving.preprocess import RnaVectorizer
from survfusion.training.qupath import qupath_geojson

IG_STEPS = 32
TOP_TILE_FRACTION = 0.1  # the highest-attention tiles whose class mix is compared with the bag's
TOP_INPUTS = 15


def modality_shapley(
    bundle: Bundle, bag: torch.Tensor, clinical: Mapping, rna: Mapping, absent: tuple[str, ...] = ()
) -> dict:
    """Exact Shapley values of the three modalities for one case (module docstring); ``absent``:
    modalities the case does not bring (replaced by their reference in every evaluation, so their
    value is 0)."""
    if any(m.embedding_means is None for m in bundle.members):
        raise UserError(
            "explain: the bundle has no training means (an old bundle): no reference to explain against"
        )
    v: dict[frozenset, float] = {}
    for k in range(len(MODALITIES) + 1):
        for present in itertools.combinations(MODALITIES, k):
            replace = tuple(m for m in MODALITIES if m not in present or m in absent)
            v[frozenset(present)] = float(bundle.risks([bag], [clinical], [rna], replace=replace)[0])
    n = len(MODALITIES)
    phi = {}
    for i in MODALITIES:
        others = [m for m in MODALITIES if m != i]
        total = 0.0
        for k in range(n):
            for s in itertools.combinations(others, k):
                w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                total += w * (v[frozenset(s) | {i}] - v[frozenset(s)])
        phi[i] = total
    risk, ref = v[frozenset(MODALITIES)], v[frozenset()]
    return {"risk": risk, "reference_risk": ref, "shapley": phi, "shapley_sum": sum(phi.values())}


def cohort_modalities(bundle: Bundle, data, idx: np.ndarray, *, n_boot: int = 1000) -> dict | None:
    """Over the patients ``idx``: the C-index of the predicted months with each modality replaced by
    its reference (a modality ablation, percentile bootstrap 95% intervals) beside the full model's,
    and each modality's mean share of the case's absolute Shapley values; None for a bundle without
    training means. Eight batched passes over the patients (every subset of modalities)."""
    from survfusion.nets.survival import concordance_bootstrap

    if any(m.embedding_means is None for m in bundle.members):
        return None
    bags = [data.bags[i] for i in idx]
    clinical = [data.clinical[i] for i in idx]
    rna = [data.rna_doc(i) for i in idx]
    v = {}
    for k in range(len(MODALITIES) + 1):
        for present in itertools.combinations(MODALITIES, k):
            replace = tuple(m for m in MODALITIES if m not in present)
            v[frozenset(present)] = bundle.risks(bags, clinical, rna, replace=replace)
    n = len(MODALITIES)
    phi = {}
    for i in MODALITIES:
        others = [m for m in MODALITIES if m != i]
        phi[i] = sum(
            math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            * (v[frozenset(s) | {i}] - v[frozenset(s)])
            for k in range(n) for s in itertools.combinations(others, k)
        )  # fmt: skip
    t, e = data.time_months[idx], data.event[idx]

    def score(risk):
        ci = concordance_bootstrap(t, e, -bundle.months(risk), n_boot=n_boot)
        return {"c_index": ci.estimate, "ci95": [ci.low, ci.high]}

    total = np.sum([np.abs(phi[m]) for m in MODALITIES], axis=0)
    share = {m: float(np.mean(np.abs(phi[m]) / np.where(total > 0, total, 1.0))) for m in MODALITIES}
    return {
        "full": score(v[frozenset(MODALITIES)]),
        "replaced": {m: score(v[frozenset(MODALITIES) - {m}]) for m in MODALITIES},
        "mean_abs_shapley_share": share,
    }


def _member_weights(bundle: Bundle) -> np.ndarray:
    """``d risk / d member risk``: the combination is linear in the member risks."""
    if bundle.combination == "sum":
        return np.ones(len(bundle.members))
    sds = np.array([m.risk_sd for m in bundle.members])
    return sds.mean() / (len(bundle.members) * sds)


def _ig(model, bag, clin, genes, which: str, baseline: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Path-mean gradient of the risk w.r.t. input ``which`` from ``baseline`` to the case. The slide
    embedding depends on the tiles alone (``SurvivalModel.encode`` embeds each modality on its
    own), so it is computed once and only the moving input is embedded at each step."""
    feats, mask = pad_bags([bag])
    x = clin if which == "clinical" else genes
    grads = torch.zeros_like(x, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        slide = model.encode(feats, clin, genes, mask)
    one, one_mask = feats[:, :1], mask[:, :1]  # a stand-in bag: its slide embedding is discarded
    for a in (np.arange(IG_STEPS) + 0.5) / IG_STEPS:
        point = (baseline + float(a) * (x - baseline)).detach().requires_grad_(True)
        c, g = (point, genes) if which == "clinical" else (clin, point)
        moving = model.encode(one, c, g, one_mask)
        emb = Embeddings(slide.hist, moving.rna, moving.clinical, slide.attention)
        risk = model.fuse(emb).sum()
        # a model that ignores this input (ABMIL_Hist ignores both) has no path from it: gradient 0
        (grad,) = torch.autograd.grad(risk, point, allow_unused=True) if risk.requires_grad else (None,)
        if grad is not None:
            grads += grad.double()
    return (grads / IG_STEPS)[0].numpy(), (x - baseline)[0].double().numpy()


def _gene_space(vec: RnaVectorizer, rna: Mapping, avg_grad_z: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-gene IG of a PCA-projected RNA input (module docstring)."""
    p = vec.projection
    assert p is not None
    plain = RnaVectorizer(vec.genes, log1p=vec.log1p, train_max=vec.train_max)
    x = plain.finish(plain.repaired(rna)[0][None])[0]
    u = (x - p["center"]) / p["scale"]
    return vec.genes, u * (p["components"].T @ avg_grad_z)


def _clinical_baseline(member, clin: torch.Tensor) -> torch.Tensor:
    """The member's training-mean clinical vector (its Shapley reference), else zeros."""
    means = member.embedding_means
    if means is not None and np.shape(means["clinical"]) == (clin.shape[1],):
        return torch.as_tensor(np.asarray(means["clinical"]), dtype=clin.dtype)[None]
    return torch.zeros_like(clin)


def _rna_baseline(member, genes: torch.Tensor) -> torch.Tensor:
    """A linear bundle's gene means (``LinearCox``'s centre); else zeros, which is the pool's
    centre for a PCA projection and zero expression otherwise (module docstring)."""
    from survfusion.nets.linear import LinearCox

    if isinstance(member.model, LinearCox) and member.rna.projection is None:
        return member.model.rna_reference().to(genes.dtype)[None]
    return torch.zeros_like(genes)


def input_attributions(bundle: Bundle, bag: torch.Tensor, clinical: Mapping, rna: Mapping) -> dict:
    """Integrated gradients of the bundle's risk over clinical inputs and genes (module docstring)."""
    weights = _member_weights(bundle)
    clin_total: dict[str, float] = {}
    gene_total: dict[str, float] = {}
    for w, m in zip(weights, bundle.members, strict=True):
        clin, genes = m.inputs([clinical], [rna])
        grad_c, delta_c = _ig(m.model, bag, clin, genes, "clinical", _clinical_baseline(m, clin))
        for name, value in zip(m.clinical.feature_names, grad_c * delta_c, strict=True):
            field = name.split("=")[0]
            clin_total[field] = clin_total.get(field, 0.0) + w * float(value)
        grad_r, delta_r = _ig(m.model, bag, clin, genes, "rna", _rna_baseline(m, genes))
        if m.rna.projection is not None:
            names, values = _gene_space(m.rna, rna, grad_r)
        else:
            names, values = m.rna.genes, grad_r * delta_r
        for name, value in zip(names, values, strict=True):
            if value:
                gene_total[name] = gene_total.get(name, 0.0) + w * float(value)
    first = bundle.members[0]
    raw = dict(zip(first.rna.genes, first.rna.repaired(rna)[0].tolist(), strict=True))
    train_max = (
        dict(zip(first.rna.genes, first.rna.train_max.tolist(), strict=True))
        if first.rna.train_max is not None
        else {}
    )
    top_genes = sorted(gene_total.items(), key=lambda kv: -abs(kv[1]))[:TOP_INPUTS]
    numeric = first.clinical.numeric
    return {
        "clinical": [
            {"field": f, "attribution": a, "value": clinical.get(f),
             "training_mean_sd": list(numeric[f]) if f in numeric else None}
            for f, a in sorted(clin_total.items(), key=lambda kv: -abs(kv[1]))
        ],
        "genes": [{"gene": g, "attribution": a, "value": raw.get(g), "training_max": train_max.get(g)}
                  for g, a in top_genes],
        "clinical_sum": sum(clin_total.values()),
        "rna_sum": sum(gene_total.values()),
        "baseline": "the reference in input space: training-mean clinical vector; RNA: the pool's centre "
        "(PCA), a linear model's gene means, else zero expression (survfusion.training.explain)",
    }  # fmt: skip


def tile_table(bundle: Bundle, bag: torch.Tensor, clinical, rna, phi_hist: float):
    """Per tile: attention (members' mean), share of the slide's contribution, rank (1 = highest)."""
    _, att = bundle.member_risks([bag], [clinical], [rna], attention=True)
    a = np.asarray(att[0], np.float64) if att else np.zeros(0)
    order = np.argsort(-a, kind="stable")
    rank = np.empty(len(a), np.int64)
    rank[order] = np.arange(1, len(a) + 1)
    return a, phi_hist * a, rank


def class_enrichment(attention, labels, names, top_fraction: float = TOP_TILE_FRACTION) -> list[dict]:
    """Per tile class: its share of the bag, of the top ``top_fraction`` of tiles by attention (at
    least one tile; ties broken by tile order) and their ratio, most enriched first."""
    a = np.asarray(attention, np.float64)
    labels = np.asarray(labels, np.int64)
    if a.shape != labels.shape or not len(a):
        return []
    k = max(1, round(top_fraction * len(a)))
    top = labels[np.argsort(-a, kind="stable")[:k]]
    rows = []
    for c, name in enumerate(names):
        bag = float(np.mean(labels == c))
        if bag == 0:
            continue
        in_top = float(np.mean(top == c))
        rows.append(
            {"class": name, "bag_share": bag, "top_share": in_top, "enrichment": in_top / bag, "top_tiles": k}
        )
    return sorted(rows, key=lambda r: -r["enrichment"])


def explain_case(
    bundle: Bundle, data, i: int, out: Path, slide_path: Path | None = None,
    tile_classes: tuple[list[str], np.ndarray] | None = None,
) -> dict:  # fmt: skip
    """Every explanation of patient ``i`` of ``data`` into ``out`` (JSON, GeoJSON, PNG, Markdown)."""
    return explain_inputs(
        bundle, data.case_ids[i], data.bags[i], data.coords[i], int(data.tile_lv0[i]), data.clinical[i],
        data.rna_doc(i), out, slide_path, tile_classes=tile_classes,
    )  # fmt: skip


def explain_inputs(
    bundle: Bundle, case_id: str, bag, coords, tile_lv0: int, clinical, rna, out: Path,
    slide_path: Path | None = None, absent: tuple[str, ...] = (),
    tile_classes: tuple[list[str], np.ndarray] | None = None,
) -> dict:  # fmt: skip
    """``explain_case`` for a case given by its inputs (the container's ``Prediction.inputs``);
    ``tile_classes`` = (names, a label per tile) adds the class enrichment of the module docstring."""
    shap = modality_shapley(bundle, bag, clinical, rna, absent)
    months = float(bundle.months(np.array([shap["risk"]]))[0])
    att, share, rank = tile_table(bundle, bag, clinical, rna, shap["shapley"]["hist"])
    inputs = input_attributions(bundle, bag, clinical, rna)
    side = int(tile_lv0) or 224
    coords = np.asarray(coords).reshape(-1, 2)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    write_json(out / f"{case_id}.geojson", qupath_geojson(coords, side, att, share, rank))
    files["geojson"] = f"{case_id}.geojson"
    notes = []
    if tile_classes is not None and len(tile_classes[1]) != len(att):
        notes.append(f"tile classes not compared: {len(tile_classes[1])} labels for {len(att)} tiles")
    if slide_path is not None and len(att):
        try:
            from survfusion.training.figures import plot_heatmap
        except ImportError as err:  # the container's image has no matplotlib
            notes.append(f"no heatmap: {err}")
        else:
            title = f"{case_id}: predicted {months:.0f} months (risk {shap['risk']:+.3f})"
            plot_heatmap(slide_path, coords, side, att, out / f"{case_id}_heatmap.png", title=title)
            files["heatmap"] = f"{case_id}_heatmap.png"
    top = np.argsort(-att)[:10] if len(att) else np.zeros(0, np.int64)
    record = {
        "case_id": case_id, "predicted_months": months, **shap, "inputs": inputs, "absent": list(absent),
        "tiles": {"n": len(att), "top": [{"x": int(coords[k][0]), "y": int(coords[k][1]),
                                          "attention": float(att[k])} for k in top],
                  "classes": class_enrichment(att, tile_classes[1], tile_classes[0]) if tile_classes else []},
        "files": files, "notes": notes,
    }  # fmt: skip
    write_json(out / f"{case_id}.json", record)
    (out / f"{case_id}.md").write_text(_summary(record))
    return record


def _summary(r: dict) -> str:
    s = r["shapley"]
    lines = [
        f"# {r['case_id']}: predicted {r['predicted_months']:.1f} months",
        "",
        f"Risk {r['risk']:+.4f}; reference risk (every modality at its training mean) "
        f"{r['reference_risk']:+.4f}; "
        f"difference {r['risk'] - r['reference_risk']:+.4f} = the sum of the Shapley values below "
        f"({r['shapley_sum']:+.4f}).",
        "",
        "| modality | Shapley value (risk) |",
        "|---|---|",
        *[f"| {k} | {v:+.4f} |" for k, v in s.items()],
        "",
        "Top clinical fields (integrated gradients from the training-mean clinical vector):",
        "",
        "| field | attribution | value | training mean, sd |",
        "|---|---|---|---|",
        *[f"| {c['field']} | {c['attribution']:+.4f} | {c['value']} | {c['training_mean_sd'] or '–'} |"
          for c in r["inputs"]["clinical"][:8]],
        "",
        "Top genes:",
        "",
        "| gene | attribution | value | training max |",
        "|---|---|---|---|",
        *[f"| {g['gene']} | {g['attribution']:+.4f} | {g['value']:.4g} | "
          f"{'–' if g['training_max'] is None else format(g['training_max'], '.4g')} |"
          for g in r["inputs"]["genes"]],
        "",
        f"Tiles: {r['tiles']['n']}; QuPath: File > Import objects > {r['files']['geojson']}.",
    ]  # fmt: skip
    if r["tiles"]["classes"]:
        k = r["tiles"]["classes"][0]["top_tiles"]
        lines += ["", f"Tile classes in the top {k} tiles by attention against the whole bag (enrichment "
                  "= top share / bag share; 1 = attention blind to the class):", "",
                  "| class | top tiles | bag | enrichment |", "|---|---|---|---|",
                  *[f"| {c['class']} | {c['top_share']:.0%} | {c['bag_share']:.0%} | {c['enrichment']:.1f}x |"
                    for c in r["tiles"]["classes"]]]  # fmt: skip
    if "heatmap" in r["files"]:
        lines += ["", f"![attention]({r['files']['heatmap']})"]
    return "\n".join(lines) + "\n"
