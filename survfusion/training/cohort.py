"""Which slides to process: the cohort folder layout, an explicit CSV list, and sharding.

Cohort layout (shared by extract, train and evaluate)::

    COHORT/outcomes.csv            case_id, cohort (3A/3B), time_months, event
    COHORT/slides/<case_id>.tif    COHORT/masks/<case_id>.tif (or .tiff/.mha)
    COHORT/rna/<case_id>.json      COHORT/clinical/<case_id>.json

A ``--list`` CSV names the files explicitly: columns ``slide`` (required), ``mask`` and ``case_id``
(optional; the case id defaults to the slide's file name without its extension). Relative paths are
resolved against the CSV's folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from survfusion.errors import UserError
from survfusion.slides.reader import MASK_SUFFIXES, SLIDE_SUFFIXES

# The cohort layout, written once (dataset reads it, synth writes it).
OUTCOMES_FILE = "outcomes.csv"
ORACLE_FILE = "oracle.csv"  # synthetic cohorts: the planted log-hazard per case
SLIDES_DIR, MASKS_DIR, RNA_DIR, CLINICAL_DIR = "slides", "masks", "rna", "clinical"


@dataclass(frozen=True)
class SlideJob:
    case_id: str
    slide: Path
    mask: Path | None


def cohort_jobs(cohort: str | os.PathLike) -> list[SlideJob]:
    cohort = Path(cohort)
    slides_dir = cohort / SLIDES_DIR
    if not slides_dir.is_dir():
        raise UserError(f"cohort {cohort}: no slides/ folder (expected slides/<case_id>.tif)")
    jobs = []
    for slide in sorted(p for p in slides_dir.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES):
        masks = [cohort / MASKS_DIR / f"{slide.stem}{s}" for s in MASK_SUFFIXES]
        jobs.append(SlideJob(slide.stem, slide, next((m for m in masks if m.is_file()), None)))
    if not jobs:
        raise UserError(f"cohort {cohort}: slides/ holds no slide ({', '.join(SLIDE_SUFFIXES)})")
    return jobs


def list_jobs(csv_path: str | os.PathLike) -> list[SlideJob]:
    csv_path = Path(csv_path)
    base = csv_path.parent
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise UserError(f"slide list {csv_path}: {err.strerror}") from None
    if not rows or "slide" not in rows[0]:
        raise UserError(
            f"slide list {csv_path}: needs a header with a 'slide' column (and optional mask, case_id)"
        )
    jobs = []
    for row in rows:
        slide = base / row["slide"].strip()
        mask = (base / row["mask"].strip()) if (row.get("mask") or "").strip() else None
        jobs.append(SlideJob((row.get("case_id") or "").strip() or slide.stem, slide, mask))
    ids = [j.case_id for j in jobs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UserError(f"slide list {csv_path}: case ids repeat: {', '.join(dupes[:5])}")
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with ``0 <= i < n`` (e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected i/n such as 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard: need 0 <= i < n, got {text!r}")
    return i, n


def shard(jobs: list[SlideJob], index: int, count: int) -> list[SlideJob]:
    """Every ``count``-th job starting at ``index``: disjoint shards that cover all jobs."""
    return jobs[index::count]
