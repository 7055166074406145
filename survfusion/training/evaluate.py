"""Evaluation of a bundle on a cohort: per-case table, metrics with bootstrap CI, the paper's figures
(``survfusion.training.figures``: KM curves by risk quartile, C-index per epoch, attention heatmaps); and the
side-by-side comparison of runs (the paper's Table 2).

Which patients are scored decides what the number means, and every report says it: patients the
bundle never saw give an honest estimate (``test``); a single run's validation patients chose its
best epoch (optimistic); the bundle's own training patients are in-sample (not an estimate of
anything). ``--cases auto`` picks the most honest set the cohort allows.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.fileio import write_json
from survfusion.nets.survival import concordance_bootstrap, concordance_index
from survfusion.serving.bundle_io import load_bundle, resolve_bundle_dir
from survfusion.training.cohort import cohort_jobs
from survfusion.training.dataset import load_cohort, read_oracle
from survfusion.training.figures import plot_heatmap, plot_history, plot_km_quartiles, plot_member_histories

CASE_CHOICES = ("auto", "train", "val", "test", "all")


@dataclass(frozen=True)
class CaseSet:
    """The scored patients (positions in the cohort), what they are, and how far to trust the score."""

    idx: np.ndarray
    cases: str  # the resolved choice: train, val, test or all
    label: str  # e.g. "10 validation patients of the run"
    trust: str  # "honest", "optimistic" or "in-sample", with why


def _seen(bundle) -> set[str]:
    split = bundle.config.get("split", {})
    return set(split.get("train", [])) | set(split.get("val", []))


def resolve_cases(bundle, data, cases: str) -> CaseSet:
    """``cases`` of the cohort for this bundle; ``auto``: a single run's validation split, else the
    patients the bundle never saw, else (a cohort it trained on whole) all of them, in-sample."""
    split, seen = bundle.config.get("split", {}), _seen(bundle)
    unseen = np.array([i for i, c in enumerate(data.case_ids) if c not in seen], dtype=np.int64)
    if cases == "auto":
        single = len(bundle.members) == 1 and split.get("val")
        cases = "val" if single else ("test" if unseen.size else "all")
    if cases == "test":
        if unseen.size == 0:
            raise UserError(
                "evaluate: every patient of this cohort trained the bundle (no test patient); pass a "
                "held-out cohort, or --cases all for an in-sample figure"
            )
        return CaseSet(unseen, "test", f"{unseen.size} patients the bundle never saw", "honest")
    if cases == "all":
        n_seen = sum(c in seen for c in data.case_ids)
        trust = "honest" if n_seen == 0 else (
            f"in-sample: {n_seen} of these {len(data)} patients trained or early-stopped the bundle; "
            "not an estimate for new patients"
        )  # fmt: skip
        return CaseSet(np.arange(len(data)), "all", f"all {len(data)} patients of the cohort", trust)
    if cases == "val" and len(bundle.members) > 1:
        raise UserError(
            "evaluate: an ensemble has no validation split (every training patient was held out by one "
            "member: its out-of-fold C-index is in the bundle's metrics); use --cases test, or all"
        )
    if not split.get(cases):
        raise UserError(f"evaluate: the bundle records no '{cases}' split; use --cases test or all")
    where = {c: i for i, c in enumerate(data.case_ids)}
    missing = [c for c in split[cases] if c not in where]
    if missing:
        raise UserError(
            f"evaluate: {len(missing)} {cases} case(s) of the bundle are not in this cohort, "
            f"e.g. {missing[0]}"
        )
    idx = np.array([where[c] for c in split[cases]])
    if cases == "val":
        why = "optimistic: the run's best epoch was chosen on these patients"
        return CaseSet(idx, "val", f"{idx.size} validation patients of the run", why)
    why = "in-sample: the bundle trained on these patients; not an estimate for new patients"
    return CaseSet(idx, "train", f"{idx.size} training patients of the run", why)


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
    cases: str = "auto",
    heatmaps: int = 3,
    heatmap_cases: list[str] | None = None,
    qc: str = "report",
) -> dict:
    """Score ``bundle_dir`` (a bundle, or a run folder holding one) on ``cases`` of the cohort;
    heatmaps for ``heatmap_cases`` (case ids) or, by default, the ``heatmaps`` cases of highest and
    lowest risk. The metrics say which patients were scored and how far to trust the score; ``files``
    lists what was written."""
    if cases not in CASE_CHOICES:
        raise UserError(f"evaluate: --cases {cases[:40]!r}; expected one of {', '.join(CASE_CHOICES)}")
    bundle_dir = resolve_bundle_dir(bundle_dir)
    bundle = load_bundle(bundle_dir)
    data = load_cohort(cohort, features, qc=qc)
    chosen = resolve_cases(bundle, data, cases)
    idx = chosen.idx
    risk, attention = cohort_risks(bundle, data, idx)
    months = bundle.months(risk)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"cases.csv": "one row per patient: true time and event, risk, predicted months"}
    _write_cases(out / "cases.csv", data, idx, risk, months)
    scores = _scores(data, idx, risk, months, Path(cohort))
    metrics = {
        "cases": chosen.cases,
        "scored": chosen.label,
        "trust": chosen.trust,
        **scores,
        "model": bundle.model_name,
        "members": len(bundle.members),
        **_training_figures(bundle.metrics),
    }
    from survfusion.training.explain import cohort_modalities

    if (modalities := cohort_modalities(bundle, data, idx)) is not None:
        metrics["modalities"] = modalities  # each modality replaced by its reference; Shapley shares
    t, e = data.time_months[idx], data.event[idx]
    ci = (scores["c_index"], *scores["c_index_ci95"])
    title = f"{bundle.model_name}: {chosen.label} ({chosen.trust.split(':')[0]})"
    metrics["figure_warnings"] = plot_km_quartiles(
        t, e, risk, out / "km_risk_quartiles.png", title=title, c_index=ci
    )
    files["km_risk_quartiles.png"] = "Kaplan-Meier curves of the four risk quartiles, numbers at risk"
    if _epoch_figure(Path(bundle_dir).parent, out / "c_index_per_epoch.png"):
        files["c_index_per_epoch.png"] = "training and validation C-index per epoch, the kept epoch marked"
    try:
        slides = {job.case_id: job.slide for job in cohort_jobs(cohort, qc=qc)}  # any slide suffix
    except UserError:  # a cohort without slides (features made elsewhere): no heatmaps
        slides = {}
    for k in _heatmap_choice(data, idx, risk, chosen.cases, heatmaps, heatmap_cases):
        name = _heatmap(slides, data, idx[k], attention[k], risk, k, months[k], out)
        if name:
            files[name] = "the slide beside its tiles' attention"
    metrics["files"] = files
    write_json(out / "metrics.json", metrics)
    return metrics


def _heatmap(slides: dict, data, i: int, attention, risk, k: int, months: float, out: Path) -> str | None:
    """Patient ``i``'s heatmap (position ``k`` among the scored ``risk``; ``slides``: case id -> slide
    path); its file name, or None when the cohort has no slide for it or the slide had no tile."""
    case_id = data.case_ids[i]
    slide = slides.get(case_id)
    if slide is None or not len(attention):
        return None
    outcome = "recurrence" if data.event[i] else "censored"
    rank = int((risk <= risk[k]).sum())
    title = (
        f"{case_id}: {outcome} at {data.time_months[i]:.0f} months; predicted {months:.0f} months "
        f"(risk rank {rank} of {len(risk)}, 1 = lowest)"
    )
    name = f"heatmap_{case_id}.png"
    plot_heatmap(slide, data.coords[i], data.tile_lv0[i], attention, out / name, title=title)
    return name


def _epoch_figure(run: Path, path: Path) -> bool:
    """The run's C-index per epoch (each member's for an ensemble), if the run's records are there."""
    histories = sorted(run.glob("members/*/history.csv")) or [p for p in [run / "history.csv"] if p.is_file()]
    if len(histories) == 1:
        plot_history(histories[0], path)
    elif histories:
        plot_member_histories(histories, path)
    return bool(histories)


def summary_lines(metrics: dict, out: str | os.PathLike) -> list[str]:
    """What a person reads at the end of ``evaluate``: the score, what it means, the files."""
    low, high = metrics["c_index_ci95"]
    oracle = f"; the oracle's {metrics['oracle_c_index']:.3f}" if "oracle_c_index" in metrics else ""
    lines = [
        f"evaluate: {metrics['model']} ({metrics['members']} member{'s' * (metrics['members'] > 1)}) on "
        f"{metrics['scored']} ({metrics['events']} events)",
        f"evaluate: C-index of the predicted months {metrics['c_index']:.3f} (95% CI {low:.2f}-{high:.2f}), "
        f"of the risks {metrics['c_index_risk']:.3f}{oracle}",
        f"evaluate: {metrics['trust']}",
    ]
    trained = metrics.get("training", {})
    if "oof_c_index" in trained:
        lines.append(
            f"evaluate: the bundle's out-of-fold C-index from training: {trained['oof_c_index']:.3f} "
            f"(each patient scored by the members that did not train on it; the epoch was chosen on it)"
        )
    if "modalities" in metrics:
        mod = metrics["modalities"]
        parts = [
            f"{m} {r['c_index']:.3f} ({r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}), "
            f"{mod['mean_abs_shapley_share'][m]:.0%} of |Shapley|"
            for m, r in mod["replaced"].items()
        ]
        said = "evaluate: C-index with each modality replaced by its training mean: "
        lines.append(said + "; ".join(parts))
    lines += [f"evaluate: warning: {w}" for w in metrics.get("figure_warnings", [])]
    width = max(len(name) for name in metrics["files"])
    lines.append(f"evaluate: wrote {out}/")
    lines += [f"  {name:<{width}}  {what}" for name, what in metrics["files"].items()]
    lines.append(f"  {'metrics.json':<{width}}  every figure above as JSON")
    return lines


def _training_figures(trained: dict) -> dict:
    """What the bundle's training measured on its own patients, labelled as such: an ensemble's
    out-of-fold C-index, a single run's best-epoch validation C-index; each with its unselected twin."""
    if trained.get("ensemble"):
        keys = ("oof_c_index", "oof_c_index_ci95", "oof_c_index_last_epoch", "oof_note")
        return {"training": {k: trained[k] for k in keys if k in trained}}
    if "val_c_index" in trained:
        from survfusion.training.config import SELECTED_NOTE

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
