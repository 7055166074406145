"""Evaluation of a bundle on a cohort: per-case table, metrics with bootstrap CI, the paper's figures
(KM curves by risk quartile with numbers at risk; C-index per epoch) and attention heatmaps; and the
side-by-side comparison of runs (the paper's Table 2).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from survfusion.bundle import load_bundle
from survfusion.cohort import cohort_jobs
from survfusion.dataset import load_cohort, read_oracle
from survfusion.errors import UserError
from survfusion.fileio import write_json
from survfusion.slide import open_slide
from survfusion.survival import concordance_bootstrap, concordance_index


def _case_indices(bundle, data, cases: str) -> np.ndarray:
    if cases == "all":
        return np.arange(len(data))
    split = bundle.config.get("split", {})
    if cases == "test":  # every patient of this cohort the bundle never trained or early-stopped on
        seen = set(split.get("train", [])) | set(split.get("val", []))
        idx = np.array([i for i, c in enumerate(data.case_ids) if c not in seen], dtype=np.int64)
        if idx.size == 0:
            raise UserError(
                "evaluate: every case of this cohort was used to train the bundle; pass another cohort"
            )
        return idx
    if cases == "val" and len(bundle.members) > 1:
        raise UserError(
            "evaluate: an ensemble has no validation split (every training patient was held out by one "
            "member: its out-of-fold C-index is in the bundle's metrics); use --cases test or all"
        )
    if cases not in split:
        raise UserError(f"evaluate: the bundle records no '{cases}' split; use --cases all")
    where = {c: i for i, c in enumerate(data.case_ids)}
    missing = [c for c in split[cases] if c not in where]
    if missing:
        raise UserError(
            f"evaluate: {len(missing)} {cases} case(s) of the bundle are not in this cohort, "
            f"e.g. {missing[0]}"
        )
    return np.array([where[c] for c in split[cases]])


def cohort_risks(bundle, data, idx: np.ndarray):
    """The bundle's risks of patients ``idx`` and their tile weights (averaged over members)."""
    bags, clinical = [data.bags[i] for i in idx], [data.clinical[i] for i in idx]
    member_risks, attention = bundle.member_risks(
        bags, clinical, [data.rna_doc(i) for i in idx], attention=True
    )
    return bundle.combine(member_risks), attention


def evaluate(
    bundle_dir,
    cohort,
    features,
    out,
    *,
    cases: str = "val",
    heatmaps: int = 3,
    heatmap_cases: list[str] | None = None,
) -> dict:
    """Score ``bundle_dir`` on ``cases`` of the cohort; heatmaps for ``heatmap_cases`` (case ids) or,
    by default, the ``heatmaps`` cases of highest and lowest risk."""
    bundle = load_bundle(bundle_dir)
    data = load_cohort(cohort, features)
    idx = _case_indices(bundle, data, cases)
    risk, attention = cohort_risks(bundle, data, idx)
    months = bundle.months(risk)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_cases(out / "cases.csv", data, idx, risk, months)
    metrics = {
        "cases": cases,
        **_scores(data, idx, risk, months, Path(cohort)),
        "model": bundle.model_name,
        "members": len(bundle.members),
        **_training_figures(bundle.metrics),
    }
    write_json(out / "metrics.json", metrics)
    t, e = data.time_months[idx], data.event[idx]
    plot_km_quartiles(t, e, risk, out / "km_risk_quartiles.png", title=f"{bundle.model_name}: {cases} cases")
    run = Path(bundle_dir).parent
    histories = sorted(run.glob("members/*/history.csv")) or [p for p in [run / "history.csv"] if p.is_file()]
    if len(histories) == 1:
        plot_history(histories[0], out / "c_index_per_epoch.png")
    elif histories:
        plot_member_histories(histories, out / "c_index_per_epoch.png")
    slides = {job.case_id: job.slide for job in cohort_jobs(cohort)}  # any slide suffix the cohort uses
    for k in _heatmap_choice(data, idx, risk, cases, heatmaps, heatmap_cases):
        slide = slides.get(data.case_ids[idx[k]])
        if slide is not None and len(attention[k]):
            plot_heatmap(
                slide,
                data.coords[idx[k]],
                data.tile_lv0[idx[k]],
                attention[k],
                out / f"heatmap_{data.case_ids[idx[k]]}.png",
                title=f"{data.case_ids[idx[k]]}: risk {risk[k]:.2f}, {months[k]:.0f} months",
            )
    return metrics


def _training_figures(trained: dict) -> dict:
    """What the bundle's training measured on its own patients, labelled as such: an ensemble's
    out-of-fold C-index, a single run's best-epoch validation C-index; each with its unselected twin."""
    if trained.get("ensemble"):
        keys = ("oof_c_index", "oof_c_index_ci95", "oof_c_index_last_epoch", "oof_note")
        return {"training": {k: trained[k] for k in keys if k in trained}}
    if "val_c_index" in trained:
        from survfusion.train import SELECTED_NOTE

        figures = {k: trained[k] for k in ("val_c_index", "val_c_index_last_epoch") if k in trained}
        return {"training": {**figures, "note": SELECTED_NOTE}}
    return {}


def _write_cases(path: Path, data, idx: np.ndarray, risk: np.ndarray, months: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "cohort", "time_months", "event", "risk", "predicted_months"])
        for k, i in enumerate(idx):
            row = [data.case_ids[i], data.cohort[i], data.time_months[i], int(data.event[i])]
            w.writerow([*row, f"{risk[k]:.6f}", f"{months[k]:.3f}"])


def _scores(data, idx: np.ndarray, risk: np.ndarray, months: np.ndarray, cohort: Path) -> dict:
    """The challenge's C-index of the predicted months with its bootstrap interval, the C-index of the
    risks, per cohort, and the oracle's where the cohort has one."""
    t, e = data.time_months[idx], data.event[idx]
    ci = concordance_bootstrap(t, e, -months, n_boot=1000, seed=0)
    scores = {
        "n": len(idx),
        "events": int(e.sum()),
        "c_index": ci.estimate,
        "c_index_ci95": [ci.low, ci.high],
        "c_index_risk": concordance_index(t, e, risk),
        "by_cohort": {
            c: {"n": int(m.sum()), "c_index": concordance_index(t[m], e[m], -months[m])}
            for c in sorted(set(data.cohort[idx].tolist()))
            if (m := data.cohort[idx] == c).sum() > 1
        },
    }
    oracle = read_oracle(cohort, data.case_ids)
    if oracle is not None and np.isfinite(oracle[idx]).all():
        scores["oracle_c_index"] = concordance_index(t, e, oracle[idx])
    return scores


def _heatmap_choice(data, idx, risk, cases: str, heatmaps: int, heatmap_cases) -> list[int]:
    """Positions in ``idx``: the named cases, else the highest- and lowest-risk ones."""
    if heatmap_cases:
        position = {data.case_ids[i]: k for k, i in enumerate(idx)}
        unknown = [c for c in heatmap_cases if c not in position]
        if unknown:
            raise UserError(f"evaluate: --heatmap-cases not among the {cases} cases: {', '.join(unknown)}")
        return [position[c] for c in heatmap_cases]
    order = np.argsort(-risk)
    return sorted(set(order[: (heatmaps + 1) // 2].tolist() + order[::-1][: heatmaps // 2].tolist()))


def plot_km_quartiles(time, event, risk, path: str | os.PathLike, *, title: str = "") -> None:
    """Kaplan-Meier curves of the risk quartiles with numbers at risk (the paper's Figure 4)."""
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    fig, ax = plt.subplots(figsize=(7, 5.5))
    edges = np.quantile(risk, [0.25, 0.5, 0.75])
    group = np.digitize(risk, edges)
    fitters = []
    for q, label in enumerate(["Q1 (lowest risk)", "Q2", "Q3", "Q4 (highest risk)"]):
        m = group == q
        if m.sum() == 0:
            continue
        kmf = KaplanMeierFitter(label=label).fit(time[m], event[m])
        kmf.plot_survival_function(ax=ax, ci_show=False)
        fitters.append(kmf)
    add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    ax.set_xlabel("months")
    ax.set_ylabel("recurrence-free probability")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _read_history(history_csv: str | os.PathLike) -> tuple[list[int], list[float], list[float]]:
    """Epochs, training and validation C-index of a run's history.csv."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epoch = [int(r["epoch"]) for r in rows]
    return epoch, [float(r["train_c_index"]) for r in rows], [float(r["val_c_index"]) for r in rows]


def plot_history(history_csv: str | os.PathLike, path: str | os.PathLike) -> None:
    """Train and validation C-index per epoch, best epoch marked (the paper's Figure 3)."""
    epoch, tr, va = _read_history(history_csv)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epoch, tr, label="train")
    ax.plot(epoch, va, label="validation")
    best = epoch[int(np.nanargmax(va))]
    ax.axvline(best, color="grey", ls="--", label=f"best epoch {best}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("C-index")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_member_histories(history_csvs: list[Path], path: str | os.PathLike) -> None:
    """Each ensemble member's validation C-index per epoch (on its own held-out fold), its best epoch
    marked: how much the epoch choice bends each fold's figure."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, csv_path in enumerate(history_csvs):
        epoch, _, va = _read_history(csv_path)
        (line,) = ax.plot(epoch, va, lw=1, alpha=0.8, label=csv_path.parent.name if k < 10 else None)
        best = int(np.nanargmax(va))
        ax.plot(epoch[best], va[best], "o", color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation C-index (own fold)")
    ax.set_title("ensemble members: dots mark the epoch each member kept")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(
    slide_path, coords_lv0: np.ndarray, tile_lv0: int, attention: np.ndarray, path, *, title: str = ""
) -> None:
    """Attention of each tile (relative to the bag's maximum) over the slide thumbnail."""
    with open_slide(slide_path) as slide:
        thumb, downsample = slide.thumbnail(1024)
    heat = np.full(thumb.shape[:2], np.nan)
    a = attention / attention.max()
    for (x, y), v in zip(coords_lv0, a, strict=True):
        x0, y0 = int(x / downsample), int(y / downsample)
        s = max(1, int(tile_lv0 / downsample))
        heat[y0 : y0 + s, x0 : x0 + s] = v
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(thumb)
    im = ax.imshow(heat, cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="attention (relative)")
    ax.set_title(title)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def compare_runs(runs: list[str | os.PathLike]) -> str:
    """Markdown: one row per finished run, then mean ± sd per model and gene count (the paper's Table 2);
    ensemble runs in a table of their own (their figure is out-of-fold, not a validation split)."""
    found = [
        (Path(r), json.loads((Path(r) / "metrics.json").read_text()))
        for r in runs
        if (Path(r) / "metrics.json").is_file()
    ]
    single = [(r, m) for r, m in found if not m.get("ensemble")]
    ensembles = [(r, m) for r, m in found if m.get("ensemble")]
    parts = [_single_tables(single)] if single else []
    if ensembles:
        parts.append(_ensemble_table(ensembles))
    return "\n\n".join(parts)


def _single_tables(done: list[tuple[Path, dict]]) -> str:
    lines = [
        "| run | model | genes | seed | validation C (months), best epoch [optimistic] | C (risk) | "
        "at the last epoch | oracle C | best | epochs | min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, m in done:
        lines.append(
            f"| {run.name} | {m['model']} | {m.get('rna_genes', '–')} | {m['seed']} | "
            f"{_fmt(m['val_c_index'])} | {_fmt(m['val_c_index_risk'])} | "
            f"{_fmt(m.get('val_c_index_last_epoch'))} | {_fmt(m.get('oracle_val_c_index'))} "
            f"| {m['best_epoch']} | {m['epochs_run']} | {m['seconds'] / 60:.1f} |"
        )
    lines += [
        "",
        "| model | genes | runs | validation C (months), mean ± sd | oracle C, mean | C / oracle | min/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys((m["model"], m.get("rna_genes")) for _, m in done):
        ms = [m for _, m in done if (m["model"], m.get("rna_genes")) == key]
        c = np.array([m["val_c_index"] for m in ms])
        sd = f" ± {c.std(ddof=1):.3f}" if len(c) > 1 else ""
        oracle = [m["oracle_val_c_index"] for m in ms if "oracle_val_c_index" in m]
        ratio = _fmt(float(c.mean() / np.mean(oracle))) if len(oracle) == len(ms) else "–"
        lines.append(
            f"| {key[0]} | {key[1]} | {len(ms)} | {c.mean():.3f}{sd} | "
            f"{_fmt(float(np.mean(oracle)) if oracle else None)} | {ratio} | "
            f"{np.mean([m['seconds'] for m in ms]) / 60:.1f} |"
        )
    return "\n".join(lines)


def _ensemble_table(ensembles: list[tuple[Path, dict]]) -> str:
    lines = [
        "| ensemble run | model | genes | members | out-of-fold C (months) [optimistic] | 95% CI | "
        "at the last epochs | oracle C | min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, m in ensembles:
        low, high = m["oof_c_index_ci95"]
        lines.append(
            f"| {run.name} | {m['model']} | {m.get('rna_genes', '–')} | {m['members']} | "
            f"{_fmt(m['oof_c_index'])} | {_fmt(low)}-{_fmt(high)} | {_fmt(m['oof_c_index_last_epoch'])} | "
            f"{_fmt(m.get('oracle_oof_c_index'))} | {m['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines)
