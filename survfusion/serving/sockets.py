"""grand-challenge job I/O: find each socket's file, write the output atomically.

A job folder holds ``inputs.json`` (a list of socket values with ``interface.slug`` and
``interface.relative_path``) and the files themselves. Images live in a folder (the relative path)
holding one image file. When ``inputs.json`` is absent or does not name a socket, the documented
paths are tried, then a glob.

Nothing is read outside the input folder: every path, with its symlinks resolved, must stay inside
it; a path that leaves it is refused with a warning (and the documented path tried). A socket folder
with several images is resolved by name (a mask whose name starts with the slide's is its pair), with
a warning. Warnings here are input problems (``--strict`` fails on them); notes only inform.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from survfusion.errors import UserError
from survfusion.fileio import atomic_write_bytes, read_json
from survfusion.limits import MAX_PATH_CHARS
from survfusion.slides.reader import MASK_SUFFIXES, SLIDE_SUFFIXES

WSI_SLUG = "bladder-cancer-tissue-biopsy-whole-slide-image"
MASK_SLUG = "tissue-mask"
RNA_SLUG = "bulk-rna-seq-bladder-cancer"
CLINICAL_SLUG = "chimera-clinical-data-of-bladder-cancer-recurrence"
OUTPUT_FILE = "likelihood-of-bladder-cancer-recurrence.json"

# The documented locations, relative to the input folder (docs/DESIGN.md, "The grand-challenge contract").
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
IMAGE_SUFFIXES = tuple(dict.fromkeys((*SLIDE_SUFFIXES, *MASK_SUFFIXES)))  # a slide or a mask


@dataclass
class CaseFiles:
    wsi: Path | None
    mask: Path | None
    rna: Path | None
    clinical: Path | None
    notes: list[str] = field(default_factory=list)  # how each file was found, for the log
    warnings: list[str] = field(default_factory=list)  # ambiguity or a refused path: --strict fails


def _read_inputs_json(input_dir: Path, notes: list[str], warnings: list[str]) -> dict[str, str]:
    """slug -> relative path for every well-formed entry of inputs.json; anything else is skipped
    with a warning (a nested value, a missing or non-string path, one longer than MAX_PATH_CHARS)."""
    path = input_dir / "inputs.json"
    if not path.is_file():
        notes.append("inputs.json absent; using the documented paths")
        return {}
    try:
        items = read_json(path, "inputs.json").value
    except UserError as err:
        warnings.append(f"{err}; using the documented paths")
        return {}
    if not isinstance(items, list):
        warnings.append("inputs.json is not a list of socket values; using the documented paths")
        return {}
    declared: dict[str, str] = {}
    skipped = 0
    for item in items:
        interface = item.get("interface") if isinstance(item, dict) else None
        slug = interface.get("slug") if isinstance(interface, dict) else None
        rel = interface.get("relative_path") if isinstance(interface, dict) else None
        if (
            isinstance(slug, str)
            and isinstance(rel, str)
            and 0 < len(rel) <= MAX_PATH_CHARS
            and "\0" not in rel
        ):
            declared.setdefault(slug, rel)
        else:
            skipped += 1
    if skipped:
        warnings.append(
            f"inputs.json: {skipped} entr{'y' if skipped == 1 else 'ies'} without a usable slug and relative "
            f"path (a string of at most {MAX_PATH_CHARS} characters) ignored"
        )
    return declared


def _inside(input_dir: Path, path: Path) -> bool:
    """``path``, with every symlink resolved, lies inside ``input_dir`` (resolved too)."""
    try:
        return path.resolve().is_relative_to(input_dir.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unresolvable name
        return False


def _images(folder: Path, input_dir: Path, warnings: list[str]) -> list[Path]:
    """The image files of a socket folder, by name; any that links outside the input is refused."""
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    outside = [p for p in found if not _inside(input_dir, p)]
    for p in outside:
        warnings.append(f"{p.relative_to(input_dir)} links outside the input folder; refused")
    return [p for p in found if p not in outside]


def _resolve(input_dir: Path, rel: str, is_image: bool, warnings: list[str]) -> list[Path]:
    """The candidate files at ``rel`` (a file, or an image socket's folder), confined to the input."""
    path = input_dir / rel
    if not _inside(input_dir, path):
        warnings.append(f"{rel[:80]!r} leads outside the input folder; refused")
        return []
    if path.is_file():
        return [path]
    if is_image and path.is_dir():
        return _images(path, input_dir, warnings)
    return []


def _candidates(input_dir: Path, slug: str, declared: dict, notes: list, warnings: list) -> list[Path]:
    default_rel, pattern = DEFAULT_PATHS[slug]
    is_image = slug in (WSI_SLUG, MASK_SLUG)
    if slug in declared:
        found = _resolve(input_dir, declared[slug], is_image, warnings)
        if found:
            return found
        if declared[slug] != default_rel:
            notes.append(f"{slug}: nothing usable at inputs.json's path; trying {default_rel}")
    found = _resolve(input_dir, default_rel, is_image, warnings)
    if found:
        return found
    matches = sorted(p for p in input_dir.glob(pattern) if p.is_file() and _inside(input_dir, p))
    if is_image:
        matches = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES]
    if matches:
        notes.append(f"{slug}: found by glob at {matches[0].relative_to(input_dir)}")
    return matches[:1]


def _pick_pair(wsis: list[Path], masks: list[Path], input_dir: Path, warnings: list[str]):
    """One slide and its mask. Several slides: the first by name. Several masks: the one whose name
    starts with the slide's (without extension), else the first by name. Each choice is warned."""
    wsi = wsis[0] if wsis else None
    if wsi is not None and len(wsis) > 1:
        where = wsi.parent.relative_to(input_dir)
        warnings.append(f"{len(wsis)} slides in {where}; using {wsi.name} (the first by name)")
    if len(masks) <= 1:
        return wsi, (masks[0] if masks else None)
    paired = [m for m in masks if wsi is not None and m.stem.startswith(wsi.stem)]
    mask = paired[0] if paired else masks[0]
    why = (
        f"its name matches the slide {paired[0].name}"
        if paired
        else "the first by name: none matches the slide"
    )
    warnings.append(f"{len(masks)} masks in {mask.parent.relative_to(input_dir)}; using {mask.name} ({why})")
    return wsi, mask


def find_case_files(input_dir: str | os.PathLike) -> CaseFiles:
    """Each socket's file in a job folder; a folder that does not exist, or holds none of the WSI,
    RNA and clinical files, is a ``UserError`` at once (before any model loads)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist (or is not a folder)")
    notes: list[str] = []
    warnings: list[str] = []
    declared = _read_inputs_json(input_dir, notes, warnings)
    found = {slug: _candidates(input_dir, slug, declared, notes, warnings) for slug in DEFAULT_PATHS}
    wsi, mask = _pick_pair(found[WSI_SLUG], found[MASK_SLUG], input_dir, warnings)
    first = {slug: (paths[0] if paths else None) for slug, paths in found.items()}
    unique = list(dict.fromkeys(warnings))  # a refused file seen through two paths is said once
    if wsi is None and first[RNA_SLUG] is None and first[CLINICAL_SLUG] is None:
        raise UserError(
            f"no prediction possible: input folder {input_dir} holds no WSI, RNA or clinical file "
            f"(expected {WSI_DIR}/*.tif, {RNA_FILE}, {CLINICAL_FILE}, or inputs.json naming them)"
        )
    return CaseFiles(wsi, mask, first[RNA_SLUG], first[CLINICAL_SLUG], notes, unique)


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
