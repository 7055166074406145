"""The README's bad-input table as data: each row a change to the sample case, the extra arguments,
the exit code and what stderr must say. Run in-process (test_inference.py, any user) and through the
container contract harness (test_container_contract.py, root)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from survfusion.gcio import CLINICAL_FILE, MASK_DIR, RNA_FILE, WSI_DIR
from survfusion.tiffwrite import write_mask, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "test" / "input" / "interf0"
RNA = RNA_FILE
CLINICAL = CLINICAL_FILE


def world_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def case(scratch: Path, name: str, mutate=None) -> Path:
    """A copy of the sample case under ``scratch/cases/name``, changed by ``mutate``."""
    path = scratch / "cases" / name.replace(" ", "_").replace(":", "").replace(",", "")
    shutil.copytree(SAMPLE, path)
    if mutate:
        mutate(path)
    world_readable(path)
    return path


def wsi(path: Path) -> Path:
    return next((path / WSI_DIR).glob("*.tif"))


def mask(path: Path) -> Path:
    return next((path / MASK_DIR).glob("*.tif"))


def blank_slide(path: Path) -> None:
    write_pyramid(
        wsi(path), np.full((2688, 2688, 3), 243, np.uint8), spacing_um=0.25, tile_px=512, n_levels=3
    )
    write_mask(mask(path), np.zeros((168, 168), bool), spacing_um=4.0)


def unknown_clinical(path: Path) -> None:
    rec = json.loads((path / CLINICAL).read_text())
    rec["smoking"] = "Sometimes"
    del rec["age"]
    (path / CLINICAL).write_text(json.dumps(rec))


def corrupt_stored_tiles(path: Path) -> None:
    """Overwrite every stored tile's bytes with noise: the header still opens, no tile decodes."""
    import tifffile

    target = wsi(path)
    with tifffile.TiffFile(target) as tif:
        spans = [
            (o, c)
            for lvl in tif.series[0].levels
            for o, c in zip(lvl.keyframe.dataoffsets, lvl.keyframe.databytecounts, strict=True)
        ]
    data = bytearray(target.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, max(c for _, c in spans), dtype=np.uint8).tobytes()
    for offset, count in spans:
        data[offset : offset + count] = noise[:count]
    target.write_bytes(bytes(data))


# name, change to the sample case, extra arguments, exit code, what stderr must say
ROWS = [
    ("complete case", None, (), 0, []),
    (
        "no inputs.json: documented paths",
        lambda p: (p / "inputs.json").unlink(),
        (),
        0,
        ["inputs.json absent"],
    ),
    ("no RNA file", lambda p: (p / RNA).unlink(), (), 0, ["rna input replaced", "no RNA file"]),
    (
        "RNA without a usable gene",
        lambda p: (p / RNA).write_text('{"NOT_A_GENE": 3, "A1BG": "n/a"}'),
        (),
        0,
        ["rna input replaced", "no usable gene"],
    ),
    ("RNA not JSON", lambda p: (p / RNA).write_text("{{{"), (), 0, ["rna input replaced", "unreadable"]),
    (
        "no clinical file",
        lambda p: (p / CLINICAL).unlink(),
        (),
        0,
        ["clinical input replaced", "no clinical file"],
    ),
    (
        "clinical: unknown category, missing field",
        unknown_clinical,
        (),
        0,
        ["smoking='Sometimes' is not a known category", "age missing"],
    ),
    ("no WSI", lambda p: wsi(p).unlink(), (), 0, ["hist input replaced", "no WSI file"]),
    (
        "WSI unreadable",
        lambda p: wsi(p).write_bytes(b"II*\x00broken"),
        (),
        0,
        ["hist input replaced", "unreadable"],
    ),
    (
        "WSI whose stored tiles are damaged",
        corrupt_stored_tiles,
        (),
        0,
        ["hist input replaced", "cannot be decoded"],
    ),
    ("WSI without tissue", blank_slide, (), 0, ["hist input replaced", "no tissue tile"]),
    (
        "no tissue mask",
        lambda p: mask(p).unlink(),
        (),
        0,
        ["no tissue mask given", "Otsu"],
    ),
    (
        "empty tissue mask",
        lambda p: write_mask(mask(p), np.zeros((168, 168), bool), spacing_um=4.0),
        (),
        0,
        ["is empty", "Otsu"],
    ),
    (
        "all modalities unusable",
        lambda p: [wsi(p).unlink(), (p / RNA).unlink(), (p / CLINICAL).unlink()],
        (),
        1,
        ["no prediction possible"],
    ),
    ("--strict with a fallback", lambda p: (p / RNA).unlink(), ("--strict",), 1, ["--strict"]),
    ("--strict on a complete case", None, ("--strict",), 0, []),
]


def check(run, code: int, needles: list[str]) -> None:
    """``run`` has returncode, stdout, stderr and output (the output file's bytes or None)."""
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    for needle in needles:
        assert needle in run.stderr, (needle, run.stderr)
    if code == 0:
        value = json.loads(run.output)
        assert isinstance(value, float) and math.isfinite(value) and value >= 0
        assert "[survfusion] done" in run.stdout
    else:
        assert run.output is None
        assert run.stderr.strip().splitlines()[-1].startswith("[survfusion] error: ")
