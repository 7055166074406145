"""The evaluation's figures: Kaplan-Meier curves by risk quartile, C-index per epoch, attention heatmaps.

Each carries what a reader of a survival paper looks for: the KM figure has censoring marks, the
numbers at risk, n and events per group and the C-index with its 95% interval, on a y-axis from 0 to
1, and says when a group is too small to read; the epoch plots have whole-number epochs, the chance
line at 0.5 and the kept epoch; a heatmap shows the plain thumbnail beside the attention drawn over
the tissue tiles only, with the true outcome and the prediction in its title. matplotlib is
imported on first use (with the Agg backend), never at import time.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

SMALL_GROUP = 4  # a risk group with fewer patients than this is flagged on the KM figure
BACKGROUND_GREY = 215  # thumbnail pixels at least this bright (mean of RGB) are glass, not tissue


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def risk_quartiles(risk: np.ndarray) -> np.ndarray:
    """Each patient's risk quartile, 0 (lowest risk) to 3 (highest)."""
    return np.digitize(risk, np.quantile(risk, [0.25, 0.5, 0.75]))


def plot_km_quartiles(
    time, event, risk, path: str | os.PathLike, *, title: str = "", c_index: tuple[float, float, float] | None
) -> list[str]:
    """Kaplan-Meier curves of the risk quartiles (the paper's Figure 4), with censoring marks, the
    numbers at risk, n and events per group; ``c_index`` = (estimate, low, high) goes in the title.
    Returns the warnings it drew on the figure (groups under SMALL_GROUP patients)."""
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    plt = _plt()
    time, event = np.asarray(time, float), np.asarray(event, bool)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    group = risk_quartiles(np.asarray(risk, float))
    fitters, small = [], []
    for q, name in enumerate(["Q1 (lowest risk)", "Q2", "Q3", "Q4 (highest risk)"]):
        m = group == q
        if m.sum() == 0:
            continue
        if m.sum() < SMALL_GROUP:
            small.append(f"{name.split()[0]}: {m.sum()}")
        events = int(event[m].sum())
        label = f"{name}: n={m.sum()}, {events} event{'s' * (events != 1)}"
        kmf = KaplanMeierFitter(label=label).fit(time[m], event[m])
        kmf.plot_survival_function(
            ax=ax, ci_show=False, show_censors=True, censor_styles={"ms": 7, "marker": "|"}
        )
        fitters.append(kmf)
    add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("months")
    ax.set_ylabel("recurrence-free probability")
    head = f"n={len(time)}, {event.sum()} events"
    if c_index is not None:
        est, low, high = c_index
        head = f"C-index {est:.3f} (95% CI {low:.2f}-{high:.2f}), " + head
    ax.set_title(f"{title}\n{head}; | = censored", fontsize=10)
    warnings = []
    if small:
        warnings.append(
            f"groups under {SMALL_GROUP} patients ({', '.join(small)}): their curves are anecdotes"
        )
        ax.text(0.02, 0.04, warnings[-1], transform=ax.transAxes, fontsize=8, color="firebrick")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 0.08), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return warnings


def read_history(history_csv: str | os.PathLike) -> tuple[list[int], list[float], list[float]]:
    """Epochs, training and validation C-index of a run's history.csv."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epoch = [int(r["epoch"]) for r in rows]
    return epoch, [float(r["train_c_index"]) for r in rows], [float(r["val_c_index"]) for r in rows]


def _epoch_axes(ax, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.axhline(0.5, color="black", lw=0.8, ls=":", label="chance (0.5)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)


def plot_history(history_csv: str | os.PathLike, path: str | os.PathLike) -> None:
    """Train and validation C-index per epoch, the kept (best) epoch marked (the paper's Figure 3)."""
    plt = _plt()
    epoch, tr, va = read_history(history_csv)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epoch, tr, label="train")
    if np.isfinite(np.asarray(va, float)).any():
        ax.plot(epoch, va, label="validation")
        best = epoch[int(np.nanargmax(va))]
        ax.axvline(best, color="grey", ls="--", label=f"kept: epoch {best}")
        title = "C-index per epoch (the validation curve chose the kept epoch)"
    else:  # a fixed epoch count on every patient (the small-cohort recipe): nothing held out
        title = "training C-index per epoch (a fixed epoch count: no validation patients)"
    _epoch_axes(ax, "C-index")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_member_histories(history_csvs: list[Path], path: str | os.PathLike) -> None:
    """Each ensemble member's validation C-index per epoch (on its own held-out fold), its kept epoch
    marked: how much the epoch choice bends each fold's figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, csv_path in enumerate(history_csvs):
        epoch, _, va = read_history(csv_path)
        (line,) = ax.plot(epoch, va, lw=1, alpha=0.8, label=csv_path.parent.name if k < 10 else None)
        best = int(np.nanargmax(va))
        ax.plot(epoch[best], va[best], "o", color=line.get_color())
    _epoch_axes(ax, "validation C-index (own fold)")
    ax.set_title("ensemble members: dots mark the epoch each member kept", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def attention_grid(shape: tuple[int, int], coords_lv0, tile_lv0: int, downsample: float, attention):
    """The thumbnail-sized map of attention / its maximum over the slide's tiles; NaN off the tiles
    (so the overlay leaves background and unsampled tissue uncovered)."""
    heat = np.full(shape, np.nan)
    a = np.asarray(attention, float)
    a = a / a.max()
    side = max(1, round(tile_lv0 / downsample))
    for (x, y), v in zip(coords_lv0, a, strict=True):
        x0, y0 = int(x / downsample), int(y / downsample)
        heat[y0 : y0 + side, x0 : x0 + side] = v
    return heat


def plot_heatmap(
    slide_path, coords_lv0: np.ndarray, tile_lv0: int, attention: np.ndarray, path, *, title: str = ""
) -> None:
    """The slide thumbnail beside the same thumbnail with each tile's attention drawn over its tissue
    (scaled to the slide's own maximum: colours compare tiles within a slide, not across slides)."""
    from survfusion.slides.reader import open_slide

    plt = _plt()
    with open_slide(slide_path) as slide:
        thumb, downsample = slide.thumbnail(1024)
    heat = attention_grid(thumb.shape[:2], coords_lv0, tile_lv0, downsample, attention)
    heat[thumb[..., :3].mean(axis=-1) >= BACKGROUND_GREY] = np.nan  # colour the tissue, not the glass
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 6.2))
    left.imshow(thumb)
    left.set_title("H&E thumbnail", fontsize=10)
    right.imshow(thumb)
    im = right.imshow(heat, cmap="inferno", alpha=0.45, vmin=0, vmax=1, interpolation="nearest")
    right.set_title(f"attention over {len(coords_lv0)} tissue tiles", fontsize=10)
    for ax in (left, right):
        ax.axis("off")
    fig.colorbar(im, ax=right, fraction=0.046, label="attention / this slide's maximum")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
