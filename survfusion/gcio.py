"""grand-challenge job I/O: find each socket's file, write the output atomically.

A job folder holds ``inputs.json`` (a list of socket values with ``interface.slug`` and
``interface.relative_path``) and the files themselves. Images live in a folder (the relative path)
holding one image file. When ``inputs.json`` is absent or does not name a socket, the documented
paths are tried, then a glob.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from survfusion.fileio import atomic_write_bytes

WSI_SLUG = "bladder-cancer-tissue-biopsy-whole-slide-image"
MASK_SLUG = "tissue-mask"
RNA_SLUG = "bulk-rna-seq-bladder-cancer"
CLINICAL_SLUG = "chimera-clinical-data-of-bladder-cancer-recurrence"
OUTPUT_FILE = "likelihood-of-bladder-cancer-recurrence.json"

# The documented locations, relative to the input folder (DESIGN.md, "The grand-challenge contract").
WSI_DIR = "images/bladder-cancer-tissue-biopsy-wsi"
MASK_DIR = "images/tissue-mask"
RNA_FILE = "bulk-rna-seq-bladder-cancer.json"
CLINICAL_FILE = "chimera-clinical-data-of-bladder-cancer-recurrence-patients.json"

# slug -> (documented relative path, glob used when neither inputs.json nor that path has it)
DEFAULT_PATHS = {
    WSI_SLUG: (WSI_DIR, "images/*wsi*/*"),
    MASK_SLUG: (MASK_DIR, "images/*mask*/*"),
    RNA_SLUG: (RNA_FILE, "*rna*.json"),
    CLINICAL_SLUG: (CLINICAL_FILE, "*clinical*.json"),
}
IMAGE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".mha", ".mhd")


@dataclass
class CaseFiles:
    wsi: Path | None
    mask: Path | None
    rna: Path | None
    clinical: Path | None
    notes: list[str] = field(default_factory=list)  # how each file was found, for the log


def _read_inputs_json(input_dir: Path, notes: list[str]) -> dict[str, str]:
    path = input_dir / "inputs.json"
    if not path.is_file():
        notes.append("inputs.json absent; using the documented paths")
        return {}
    try:
        items = json.loads(path.read_text())
        return {i["interface"]["slug"]: i["interface"]["relative_path"] for i in items}
    except (OSError, ValueError, KeyError, TypeError) as err:
        notes.append(f"inputs.json unreadable ({type(err).__name__}); using the documented paths")
        return {}


def _resolve(input_dir: Path, rel: str, is_image: bool) -> Path | None:
    path = input_dir / rel
    if path.is_file():
        return path
    if is_image and path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return images[0] if images else None
    return None


def find_case_files(input_dir: str | os.PathLike) -> CaseFiles:
    input_dir = Path(input_dir)
    notes: list[str] = []
    declared = _read_inputs_json(input_dir, notes)
    found: dict[str, Path | None] = {}
    for slug, (default_rel, pattern) in DEFAULT_PATHS.items():
        is_image = slug in (WSI_SLUG, MASK_SLUG)
        path = _resolve(input_dir, declared[slug], is_image) if slug in declared else None
        if path is None:
            path = _resolve(input_dir, default_rel, is_image)
        if path is None:
            matches = sorted(p for p in input_dir.glob(pattern) if p.is_file())
            if is_image:
                matches = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES]
            path = matches[0] if matches else None
            if path is not None:
                notes.append(f"{slug}: found by glob at {path.relative_to(input_dir)}")
        found[slug] = path
    return CaseFiles(found[WSI_SLUG], found[MASK_SLUG], found[RNA_SLUG], found[CLINICAL_SLUG], notes)


def format_months(months: float) -> bytes:
    """The output file's bytes: a bare JSON number at full float precision (never rounded: the
    challenge metric counts predicted times closer than 1e-8 as ties, so rounding would create them)."""
    value = float(months)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"refusing to write {months!r}: the output must be a finite number >= 0")
    return (json.dumps(value) + "\n").encode()


def write_output(output_dir: str | os.PathLike, months: float) -> Path:
    path = Path(output_dir) / OUTPUT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, format_months(months))
    return path
