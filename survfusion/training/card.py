"""A cohort's data card (``survfusion cohort-card``): what the data holds and what the container
will meet, from file headers and the small JSON files, never from slide pixels.

Per cohort (3A/3B/all): patients, events, follow-up (median by the reverse Kaplan–Meier estimate:
censoring treated as the event, so the median potential follow-up), Kaplan–Meier curves (the
figure). Per clinical field: missing and out-of-schema values. RNA: coverage of the 19,359-gene
order, the value range and what the numbers look like (``rna_kind``) with the config that suits
them. Slides: size, levels and µm/px from the TIFF header; masks: value coding (read from the mask's
smallest pyramid level) and resolution. Which cases lack a modality. Every warning the container's
preprocessing gives a case (``ClinicalEncoder``/``RnaVectorizer`` with the schema's statistics,
the slide and mask checks) is listed, so it is seen here before it is seen in a job log.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.fileio import read_json, write_json
from survfusion.nets.survival import kaplan_meier
from survfusion.serving.preprocess import LABEL_FIELDS, ClinicalEncoder, RnaVectorizer, clinical_schema
from survfusion.training.cohort import SlideJob, cohort_jobs, open_cohort
from survfusion.training.dataset import read_outcomes

CARD_MD, CARD_JSON, CARD_PNG = "card.md", "card.json", "card.png"


def reverse_km_median(time: np.ndarray, event: np.ndarray) -> float:
    """Median follow-up by the reverse Kaplan–Meier estimate (censorings are its events)."""
    return kaplan_meier(time, ~np.asarray(event, bool)).median()


def rna_kind(values: np.ndarray) -> tuple[str, str]:
    """What pooled RNA values look like, and the config for it: ``(verdict, advice)``.

    Raw counts are non-negative integers reaching the thousands; DESeq2-normalised values are
    non-negative, mostly non-integer, also reaching the thousands; log-scale values stay below
    about 25 (log2 of a million is 20) or go negative."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "no finite value", "check the files"
    top = float(np.quantile(v, 0.999))
    integer = float(np.mean(v == np.round(v)))
    if v.min() < 0 or top < 25:
        return "log-scale values (negative or below ~25)", "rna_log1p: false (they are logs already)"
    nonzero = v[v != 0]
    if nonzero.size and float(np.mean(nonzero == np.round(nonzero))) > 0.99:
        return (
            "raw counts (non-negative integers)",
            "rna_log1p: true; normalise (DESeq2) as the challenge does",
        )
    return (
        f"DESeq2-like normalised values ({integer:.0%} integers, 99.9th percentile {top:,.0f})",
        "rna_log1p: true (configs/synthetic-2048.json); the paper fed them raw",
    )


def _slide_header(job: SlideJob) -> tuple[dict, list[str]]:
    from survfusion.slides.reader import open_slide

    try:
        with open_slide(job.slide) as s:
            return {
                "width": s.dimensions[0], "height": s.dimensions[1], "levels": len(s.levels),
                "spacing_um": round(float(s.spacing_um), 4),
            }, []  # fmt: skip
    except (UserError, OSError, ValueError) as err:
        return {}, [f"slide: {err}"]


def _mask_header(job: SlideJob, slide: dict) -> tuple[dict, list[str]]:
    import tifffile

    if job.mask is None:
        return {}, ["tissue mask: none; the container finds tissue by Otsu's threshold"]
    try:
        with tifffile.TiffFile(job.mask) as tif:
            levels = tif.series[0].levels
            smallest = levels[-1]
            if np.prod(smallest.shape[:2], dtype=np.float64) > 2**26:
                return {"width": int(levels[0].shape[1])}, [
                    "tissue mask: its smallest level is too large to read"
                ]
            values = np.unique(smallest.asarray())
            w = int(levels[0].shape[1])
    except (OSError, ValueError, IndexError) as err:
        return {}, [f"tissue mask: unreadable ({err})"]
    out = {"width": w, "levels": len(levels), "values": [v.item() for v in values[:8]]}
    if slide.get("width"):
        out["downsample"] = round(slide["width"] / w, 3)
    warn = []
    if len(values) > 2:
        warn.append(f"tissue mask: {len(values)} distinct values (a binary mask has 2); non-zero is tissue")
    if values.size and values.max() == 0:
        warn.append("tissue mask: no tissue pixel")
    return out, warn


def _case_warnings(record, rna, clin_enc: ClinicalEncoder, rna_vec: RnaVectorizer) -> list[str]:
    out = []
    if record is not None:
        out += [w for w in clin_enc.transform(record).warnings if "label field" not in w]
    if rna is not None:
        out += rna_vec.transform(rna).warnings
    return out


def _figure(path: Path, time, event, cohort) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in [*sorted(set(cohort.tolist())), "all"]:
        m = np.ones(len(time), bool) if name == "all" else cohort == name
        km = kaplan_meier(time[m], event[m])
        label = f"{name} (n={int(m.sum())}, {int(event[m].sum())} events)"
        ax.step(km.time_months, km.survival, where="post", label=label, lw=2 if name == "all" else 1.3)
    ax.set(
        xlabel="months",
        ylabel="free of high-grade recurrence",
        ylim=(0, 1.02),
        title="Kaplan–Meier by cohort",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_card(cohort: str | os.PathLike, out: str | os.PathLike, *, qc: str = "report") -> list[Path]:
    """``card.md``, ``card.json`` and ``card.png`` for ``cohort`` in ``out``."""
    layout = open_cohort(cohort)
    rows = read_outcomes(cohort, qc=qc)
    ids = [r["case_id"] for r in rows]
    time = np.array([float(r["time_months"]) for r in rows])
    event = np.array([str(r["event"]).strip() in ("1", "1.0", "True", "true") for r in rows])
    group = np.array([r.get("cohort", "") or "?" for r in rows])
    schema = clinical_schema()
    clin_enc = ClinicalEncoder(
        {k: (v["train_mean"], v["train_std"]) for k, v in schema["numeric"].items()}, schema["categorical"]
    )
    rna_vec = RnaVectorizer()
    try:
        jobs = {j.case_id: j for j in cohort_jobs(cohort, qc=qc)}
    except UserError:
        jobs = {}
    fields = [*schema["numeric"], *schema["categorical"]]
    missing: Counter[str] = Counter()
    off_schema: Counter[str] = Counter()
    examples: dict[str, Counter] = {f: Counter() for f in fields}
    lacks: dict[str, list[str]] = {"slide": [], "mask": [], "rna": [], "clinical": []}
    coverage, samples, warnings, slides, masks = [], [], {}, {}, {}
    rng = np.random.default_rng(0)
    for cid in ids:
        cp, rp = layout.clinical_path(cid), layout.rna_path(cid)
        record = read_json(cp, f"clinical {cid}").value if cp.is_file() else None
        rna = read_json(rp, f"RNA {cid}").value if rp.is_file() else None
        if record is None:
            lacks["clinical"].append(cid)
        if rna is None:
            lacks["rna"].append(cid)
        for f in fields if isinstance(record, dict) else []:
            v = record.get(f)  # type: ignore[attr-defined]
            if v is None or str(v).strip() in ("", "-1"):
                missing[f] += 1
            elif f in schema["categorical"] and str(v).strip() not in schema["categorical"][f]:
                off_schema[f] += 1
                examples[f][str(v)[:30]] += 1
        if isinstance(rna, dict):
            vec, _ = rna_vec.repaired(rna)
            coverage.append(rna_vec.usable_genes(rna) / len(rna_vec.genes))
            samples.append(rng.choice(vec, 200, replace=False))
        case_warn = _case_warnings(record, rna, clin_enc, rna_vec) if isinstance(record, dict) else []
        job = jobs.get(cid)
        if job is None:
            lacks["slide"].append(cid)
        else:
            slides[cid], w1 = _slide_header(job)
            masks[cid], w2 = _mask_header(job, slides[cid])
            if job.mask is None:
                lacks["mask"].append(cid)
            case_warn += w1 + w2
        if case_warn:
            warnings[cid] = case_warn
    pooled = np.concatenate(samples) if samples else np.zeros(0)
    kind, advice = rna_kind(pooled)
    per_cohort = {}
    for name in [*sorted(set(group.tolist())), "all"]:
        m = np.ones(len(ids), bool) if name == "all" else group == name
        per_cohort[name] = {
            "patients": int(m.sum()), "events": int(event[m].sum()),
            "median_follow_up_months": reverse_km_median(time[m], event[m]),
            "time_range_months": [float(time[m].min()), float(time[m].max())],
        }  # fmt: skip
    qc_finding = None
    if layout.kind == "release":
        from survfusion.training.release import read_qc, release_cases

        qc_finding = read_qc(layout.data, [c.case_id for c in release_cases(layout.data)])
    card = {
        "cohort": str(cohort), "layout": layout.kind, "per_cohort": per_cohort,
        "quality_control": None if qc_finding is None else {
            "flagged": qc_finding.flagged, "unlisted": qc_finding.unlisted,
            "key_column": qc_finding.key_column,
            "mode": qc,
        },
        "clinical": {f: {"missing": missing[f], "out_of_schema": off_schema[f],
                         "examples": dict(examples[f].most_common(3))} for f in fields},
        "rna": {"files": len(coverage), "gene_coverage_min": min(coverage, default=0.0),
                "gene_coverage_median": float(np.median(coverage)) if coverage else 0.0,
                "value_min": float(pooled.min()) if pooled.size else None,
                "value_median": float(np.median(pooled)) if pooled.size else None,
                "value_max_sampled": float(pooled.max()) if pooled.size else None, "looks_like": kind,
                "config": advice},
        "slides": slides, "masks": masks, "lacks": lacks, "warnings": warnings,
        "label_fields": list(LABEL_FIELDS),
    }  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CARD_JSON, card)
    _figure(out / CARD_PNG, time, event, group)
    (out / CARD_MD).write_text(_markdown(card))
    return [out / CARD_MD, out / CARD_JSON, out / CARD_PNG]


def _markdown(card: dict) -> str:
    lines = [
        f"# Data card: {card['cohort']} ({card['layout']} layout)",
        "",
        f"![Kaplan–Meier by cohort]({CARD_PNG})",
        "",
    ]
    lines += ["| cohort | patients | events | median follow-up (reverse KM, months) | time range (months) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, c in card["per_cohort"].items():
        lo, hi = c["time_range_months"]
        lines.append(
            f"| {name} | {c['patients']} | {c['events']} | {c['median_follow_up_months']:.1f} | "
            f"{lo:g}–{hi:g} |"
        )
    q = card["quality_control"]
    if q is not None:
        lines += ["", "## Quality control (task3_quality_control.csv)", ""]
        lines += [f"- {cid}: {why}" for cid, why in q["flagged"].items()] or ["No case flagged."]
        verdict = "left out" if q["mode"] == "exclude" else "kept (--qc exclude leaves them out)"
        lines += ["", f"Flagged cases are {verdict}; {len(q['unlisted'])} case(s) are not in the CSV."]
    lines += ["", "## Clinical fields", "",
              "| field | missing (absent, empty or -1) | out of schema | e.g. |",
              "|---|---|---|---|"]  # fmt: skip
    for f, c in card["clinical"].items():
        eg = ", ".join(f"{k!r} x{v}" for k, v in c["examples"].items()) or "–"
        lines.append(f"| {f} | {c['missing']} | {c['out_of_schema']} | {eg} |")
    r = card["rna"]
    lines += ["", "## RNA", ""]
    if r["files"]:
        lines += [
            f"{r['files']} files; coverage of the 19,359-gene order: median {r['gene_coverage_median']:.1%}, "
            f"lowest {r['gene_coverage_min']:.1%}. Values (a sample of 200 per case): "
            f"min {r['value_min']:.3g}, "
            f"median {r['value_median']:.3g}, max {r['value_max_sampled']:.3g}.",
            "",
            f"They look like **{r['looks_like']}**; config: `{r['config']}`.",
        ]
    else:
        lines.append("No RNA file.")
    lines += ["", "## Slides and masks", ""]
    if card["slides"]:
        sl = [s for s in card["slides"].values() if s]
        w = [s["width"] for s in sl]
        lines.append(
            f"{len(sl)} slides read from their headers: width {min(w):,}–{max(w):,} px, levels "
            f"{sorted({s['levels'] for s in sl})}, µm/px {sorted({s['spacing_um'] for s in sl})}."
            if sl
            else "No slide could be opened."
        )
        ms = [m for m in card["masks"].values() if m.get("values") is not None]
        if ms:
            codes = Counter(str(m["values"]) for m in ms)
            ds = sorted({m.get("downsample") for m in ms if m.get("downsample")})
            lines.append(f"Masks: values {dict(codes)}; downsample against the slide {ds}.")
    else:
        lines.append("No slide in this cohort.")
    lines += ["", "## Cases lacking a modality", ""]
    lacks = {k: v for k, v in card["lacks"].items() if v}
    lines += [f"- {k}: {len(v)} ({', '.join(v[:8])}{' ...' * (len(v) > 8)})" for k, v in lacks.items()] or [
        "None."
    ]
    lines += ["", "## What the container will warn about", ""]
    if card["warnings"]:
        counts = Counter(w.split(";")[0] for ws in card["warnings"].values() for w in ws)
        lines += [f"{len(card['warnings'])} case(s) get a warning; the kinds:", ""]
        lines += [f"- {k} (x{v})" for k, v in counts.most_common(20)]
        lines += ["", "Per case: card.json, `warnings`."]
    else:
        lines.append("No case gets a warning.")
    lines += ["", f"Label fields ({', '.join(card['label_fields'])}) never reach a model."]
    return "\n".join(lines) + "\n"
