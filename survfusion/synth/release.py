"""A synthetic cohort in the CHIMERA release's layout (``synth --layout release``): where each
file goes, the quality-control CSV, and the organisers' ``.pt`` + ``.npy`` feature pairs, made as
their format implies (``survfusion.training.release`` reads them; ``import-features`` converts the
pairs)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from survfusion.training import release as r
from survfusion.training.cohort import CLINICAL_DIR, MASKS_DIR, RNA_DIR, SLIDES_DIR

LAYOUTS = ("kit", "release")
QC_FAILS = 2  # cases a synthetic release's quality-control CSV marks as failed (its columns are invented)


def case_paths(out: Path, case_id: str, layout: str) -> dict[str, Path]:
    """Where ``case_id``'s slide, mask, RNA and clinical files go in ``layout``: the kit's folders,
    or the release's ``data/<pid>/<pid>_HE.tif ...``."""
    if layout == "release":
        d = out / r.DATA_DIR / case_id
        return {
            "slide": d / f"{case_id}{r.SLIDE_SUFFIX}",
            "mask": d / f"{case_id}{r.MASK_SUFFIX}",
            "rna": d / f"{case_id}{r.RNA_SUFFIX}",
            "clinical": d / f"{case_id}{r.CLINICAL_SUFFIX}",
        }
    return {
        "slide": out / SLIDES_DIR / f"{case_id}.tif",
        "mask": out / MASKS_DIR / f"{case_id}.tif",
        "rna": out / RNA_DIR / f"{case_id}.json",
        "clinical": out / CLINICAL_DIR / f"{case_id}.json",
    }


def write_qc_csv(out: Path, case_ids: list[str], seed: int) -> Path:
    """``data/task3_quality_control.csv`` with invented columns ``case_id, qc_status, comment`` (the
    real ones are not published), ``QC_FAILS`` cases failed."""
    fails = {case_ids[k] for k in np.random.default_rng(seed + 11).choice(len(case_ids), QC_FAILS, False)}
    path = out / r.DATA_DIR / r.QC_FILE
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "qc_status", "comment"])
        w.writerows([c, "fail" if c in fails else "pass", "blurred" if c in fails else ""] for c in case_ids)
    return path


RELEASE_COORDS_DTYPE = np.dtype(
    [
        ("x", "<i8"),
        ("y", "<i8"),
        ("tile_size_resized", "<i8"),
        ("tile_level", "<i8"),
        ("resize_factor", "<f8"),
        ("tile_size_lv0", "<i8"),
        ("target_spacing", "<f8"),
    ]
)


# The organisers' baseline tiling (their published features): 224-px tiles at 0.5 µm/px read from
# 0.25 µm/px level 0, so 448 level-0 pixels a side.
RELEASE_SPACING_UM, RELEASE_TILE_PX, RELEASE_SLIDE_SPACING_UM = 0.5, 224, 0.25
