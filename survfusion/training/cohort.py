"""Which slides to process: the cohort folder layout, an explicit CSV list, and sharding.

Cohort layout (shared by extract, train and evaluate)::

    COHORT/outcomes.csv            case_id, cohort (3A/3B), time_months, event
    COHORT/slides/<case_id>.tif    COHORT/masks/<case_id>.tif (or .tiff/.mha)
    COHORT/rna/<case_id>.json      COHORT/clinical/<case_id>.json

or the CHIMERA release as downloaded (``survfusion.training.release``: ``data/<pid>/<pid>_HE.tif``,
``<pid>_HE_mask.tif``, ``<pid>_CD.json`` with the outcome inside, ``<pid>_RNA.json``), told apart by
``open_cohort``: a folder with ``outcomes.csv`` is the kit's layout, one with patient folders
holding ``<pid>_CD.json`` (itself or its ``data/``) is a release.

A ``--list`` CSV names the files explicitly: columns ``slide`` (required), ``mask`` and ``case_id``
(optional; the case id defaults to the slide's file name without its extension). Relative paths are
resolved against the CSV's folder.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from survfusion.errors import UserError
from survfusion.slides.reader import MASK_SUFFIXES, SLIDE_SUFFIXES

# The cohort layout, written once (dataset reads it, synth writes it).
OUTCOMES_FILE = "outcomes.csv"
ORACLE_FILE = "oracle.csv"  # synthetic cohorts: the planted log-hazard per case
SLIDES_DIR, MASKS_DIR, RNA_DIR, CLINICAL_DIR = "slides", "masks", "rna", "clinical"


@dataclass(frozen=True)
class CohortLayout:
    """Where a cohort's files are: the kit's layout or the release's (``kind``), rooted at ``root``
    (the folder oracle.csv and the features of a synthetic release live in)."""

    root: Path
    kind: str  # "kit" or "release"
    data: Path  # the kit's root, or the release's data/

    def rna_path(self, case_id: str) -> Path:
        if self.kind == "release":
            from survfusion.training.release import RNA_SUFFIX

            return self.data / case_id / f"{case_id}{RNA_SUFFIX}"
        return self.root / RNA_DIR / f"{case_id}.json"

    def clinical_path(self, case_id: str) -> Path:
        if self.kind == "release":
            from survfusion.training.release import CLINICAL_SUFFIX

            return self.data / case_id / f"{case_id}{CLINICAL_SUFFIX}"
        return self.root / CLINICAL_DIR / f"{case_id}.json"


def open_cohort(cohort: str | os.PathLike) -> CohortLayout:
    """The layout of ``cohort``: the kit's (``outcomes.csv``) or the release's (patient folders)."""
    from survfusion.training.release import release_data_dir, release_root

    cohort = Path(cohort)
    if (cohort / OUTCOMES_FILE).is_file():
        return CohortLayout(cohort, "kit", cohort)
    data = release_data_dir(cohort) if cohort.is_dir() else None
    if data is not None:
        return CohortLayout(release_root(data), "release", data)
    return CohortLayout(cohort, "kit", cohort)  # the kit's readers then say what is missing


@dataclass(frozen=True)
class SlideJob:
    case_id: str
    slide: Path
    mask: Path | None


def cohort_jobs(cohort: str | os.PathLike, *, qc: str = "report") -> list[SlideJob]:
    layout = open_cohort(cohort)
    if layout.kind == "release":
        from survfusion.training.release import release_outcomes

        cases = release_outcomes(layout.data, qc=qc)[1]
        jobs = [
            SlideJob(c.case_id, c.slide, c.mask if c.mask.is_file() else None)
            for c in cases
            if c.slide.is_file()
        ]
        lacking = [c.case_id for c in cases if not c.slide.is_file()]
        if lacking:
            print(
                f"release {layout.data}: {len(lacking)} case(s) without a slide, nothing to extract: "
                f"{', '.join(lacking[:5])}{' ...' * (len(lacking) > 5)}",
                file=sys.stderr,
            )
        if not jobs:
            raise UserError(f"release {layout.data}: no patient folder holds its slide")
        return jobs
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
