"""The CHIMERA Task 3 release as downloaded, read as a cohort (no ``outcomes.csv`` to write).

The organisers' release (``v2/task3/`` of their bucket) is laid out per patient::

    RELEASE/data/<pid>/<pid>_HE.tif         the H&E slide (pyramidal TIFF)
    RELEASE/data/<pid>/<pid>_HE_mask.tif    its tissue mask (pyramidal, 0 = background, 1 = tissue)
    RELEASE/data/<pid>/<pid>_CD.json        clinical data, the outcome inside it
    RELEASE/data/<pid>/<pid>_RNA.json       bulk RNA-seq, gene symbol -> value
    RELEASE/data/task3_quality_control.csv  quality control (columns not published)
    RELEASE/features/features/<pid>_HE.pt         the organisers' tile features (import-features)
    RELEASE/features/coordinates/<pid>_HE.npy     their coordinates

``--cohort`` takes ``RELEASE`` or ``RELEASE/data``. The outcome is read from each ``<pid>_CD.json``:
``progression`` (0/1) and the time in months under ``Time_to_prog_or_FUend`` or, in some copies of
the release, ``time_to_HG_recur_or_FUend``. A case with neither key, or a value that is not a
number in range (``MAX_TIME_MONTHS``), is an error naming the case: a case is never dropped
silently. The cohort (3A/3B) is the id's prefix. The label fields stay in the clinical record
the loader keeps, and the clinical encoder never reads them (as for the kit's own layout).

**Quality control.** The CSV's columns are not published, so the rule reads what is there: the
column whose values are the case ids is the key, and a case is *flagged* when any other cell of
its row reads as a failure: one of ``FAIL_WORDS`` anywhere, or a true value (``TRUE_WORDS``) in a
column whose name contains one of ``FAIL_COLUMN_WORDS``. ``--qc report`` (the default) keeps every
case and prints one line per flagged case with the cells that flagged it; ``--qc exclude`` leaves
them out, with the same lines. A case the CSV does not list is kept, and said.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from survfusion.errors import UserError
from survfusion.fileio import read_json
from survfusion.serving.preprocess import LABEL_FIELDS

DATA_DIR = "data"
SLIDE_SUFFIX = "_HE.tif"
MASK_SUFFIX = "_HE_mask.tif"
CLINICAL_SUFFIX = "_CD.json"
RNA_SUFFIX = "_RNA.json"
QC_FILE = "task3_quality_control.csv"
FEATURES_DIR = "features/features"  # <pid>_HE.pt
COORDS_DIR = "features/coordinates"  # <pid>_HE.npy
TIME_KEYS, EVENT_KEY = LABEL_FIELDS[:2], LABEL_FIELDS[2]  # written once, where the container ignores them
MAX_TIME_MONTHS = 600.0  # 50 years of follow-up; the public cohort's longest is 202 months
COHORT_OF_ID = re.compile(r"^(3A|3B)")
QC_MODES = ("report", "exclude")
FAIL_WORDS = frozenset({"fail", "failed", "exclude", "excluded", "reject", "rejected", "unusable"})
FAIL_COLUMN_WORDS = ("exclu", "fail", "reject", "remove", "drop")
TRUE_WORDS = frozenset({"1", "yes", "true", "y", "x"})


@dataclass(frozen=True)
class ReleaseCase:
    case_id: str
    folder: Path

    @property
    def slide(self) -> Path:
        return self.folder / f"{self.case_id}{SLIDE_SUFFIX}"

    @property
    def mask(self) -> Path:
        return self.folder / f"{self.case_id}{MASK_SUFFIX}"

    @property
    def clinical(self) -> Path:
        return self.folder / f"{self.case_id}{CLINICAL_SUFFIX}"

    @property
    def rna(self) -> Path:
        return self.folder / f"{self.case_id}{RNA_SUFFIX}"


def release_data_dir(path: str | os.PathLike) -> Path | None:
    """The release's ``data/`` folder when ``path`` is a release (or its ``data/``), else None."""
    path = Path(path)
    for data in (path / DATA_DIR, path):
        if data.is_dir() and any(
            (d / f"{d.name}{CLINICAL_SUFFIX}").is_file() for d in data.iterdir() if d.is_dir()
        ):
            return data
    return None


def release_root(data: Path) -> Path:
    """The folder above ``data/`` (where ``features/`` and a synthetic release's oracle live)."""
    return data.parent if data.name == DATA_DIR else data


def release_cases(data: Path, *, say=None) -> list[ReleaseCase]:
    """Every patient folder of ``data`` with its clinical file; a folder without one is left out
    with a line (it carries no outcome)."""
    say = say or _say
    cases = []
    for d in sorted(p for p in data.iterdir() if p.is_dir()):
        case = ReleaseCase(d.name, d)
        if case.clinical.is_file():
            cases.append(case)
        else:
            say(f"release {data}: {d.name}/ has no {d.name}{CLINICAL_SUFFIX}; left out (no outcome)")
    return cases


_SAID: set[str] = set()


def _say(line: str) -> None:
    """A line to stderr, once per process (a cohort is read by several steps of one command)."""
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr)


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} is a boolean")
    if isinstance(value, int | float):
        x = float(value)
    elif isinstance(value, str) and len(value.strip()) <= 32:
        x = float(value.strip())
    else:
        raise ValueError(f"{what} is {type(value).__name__} {str(value)[:40]!r}, not a number")
    if not math.isfinite(x):
        raise ValueError(f"{what} is {x}")
    return x


def outcome_of(case_id: str, record) -> dict:
    """``{case_id, cohort, time_months, event}`` from a parsed ``<pid>_CD.json``; a one-line
    ``UserError`` naming the case when it cannot be read."""
    where = f"release case {case_id} ({case_id}{CLINICAL_SUFFIX})"
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object")
    key = next((k for k in TIME_KEYS if k in record), None)
    if key is None:
        raise UserError(f"{where}: no follow-up time ({' or '.join(TIME_KEYS)})")
    if EVENT_KEY not in record:
        raise UserError(f"{where}: no {EVENT_KEY} (0 censored, 1 recurrence)")
    try:
        time = _number(record[key], key)
        event = _number(record[EVENT_KEY], EVENT_KEY)
    except ValueError as err:
        raise UserError(f"{where}: {err}") from None
    if not 0.0 < time <= MAX_TIME_MONTHS:
        raise UserError(f"{where}: {key} = {time:g} months is outside (0, {MAX_TIME_MONTHS:g}]")
    if event not in (0.0, 1.0):
        raise UserError(f"{where}: {EVENT_KEY} = {event:g}, expected 0 or 1")
    m = COHORT_OF_ID.match(case_id)
    if m is None:
        raise UserError(f"{where}: the id does not start with 3A or 3B, so its cohort is unknown")
    return {"case_id": case_id, "cohort": m.group(1), "time_months": f"{time:g}", "event": str(int(event))}


@dataclass(frozen=True)
class QcFinding:
    flagged: dict[str, str]  # case id -> the cells that flagged it
    unlisted: list[str]  # cases the CSV does not name
    key_column: str


def read_qc(data: Path, case_ids: list[str]) -> QcFinding | None:
    """The quality-control CSV's verdict on ``case_ids`` by the module's rule; None without a CSV."""
    path = data / QC_FILE
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"quality control {path}: unreadable ({err})") from None
    if not rows or not rows[0]:
        raise UserError(f"quality control {path}: no header or no rows")
    wanted = set(case_ids)

    def key_of(value: str) -> str:
        v = value.strip()
        return v.removesuffix("_HE") if v.removesuffix("_HE") in wanted else v

    columns = list(rows[0])
    key = max(columns, key=lambda c: sum(key_of(str(r.get(c) or "")) in wanted for r in rows))
    if not any(key_of(str(r.get(key) or "")) in wanted for r in rows):
        raise UserError(
            f"quality control {path}: no column holds the case ids (columns {', '.join(columns)})"
        )
    flagged: dict[str, str] = {}
    for r in rows:
        cid = key_of(str(r.get(key) or ""))
        if cid not in wanted:
            continue
        cells = []
        for col in columns:
            if col == key:
                continue
            v = str(r.get(col) or "").strip().lower()
            if v in FAIL_WORDS or (v in TRUE_WORDS and any(w in col.lower() for w in FAIL_COLUMN_WORDS)):
                cells.append(f"{col}={r.get(col)!s}")
        if cells:
            flagged[cid] = ", ".join(cells)
    listed = {key_of(str(r.get(key) or "")) for r in rows}
    return QcFinding(flagged, [c for c in case_ids if c not in listed], key)


def release_outcomes(data: Path, *, qc: str = "report", say=None) -> tuple[list[dict], list[ReleaseCase]]:
    """The outcome rows and cases of a release, after the quality-control rule (``qc``)."""
    if qc not in QC_MODES:
        raise UserError(f"--qc must be one of {', '.join(QC_MODES)}, got {qc!r}")
    say = say or _say
    cases = release_cases(data, say=say)
    if not cases:
        raise UserError(f"release {data}: no patient folder with a {CLINICAL_SUFFIX} file")
    rows = [outcome_of(c.case_id, read_json(c.clinical, f"clinical {c.case_id}").value) for c in cases]
    finding = read_qc(data, [c.case_id for c in cases])
    if finding is not None:
        for cid, why in finding.flagged.items():
            verdict = (
                "left out (--qc exclude)"
                if qc == "exclude"
                else "kept (--qc report; --qc exclude leaves it out)"
            )
            say(f"quality control: {cid} flagged by {why}; {verdict}")
        if finding.unlisted:
            say(f"quality control: {len(finding.unlisted)} case(s) not in {QC_FILE}, kept: "
                f"{', '.join(finding.unlisted[:5])}{' ...' * (len(finding.unlisted) > 5)}")  # fmt: skip
        if qc == "exclude" and finding.flagged:
            keep = [i for i, c in enumerate(cases) if c.case_id not in finding.flagged]
            rows, cases = [rows[i] for i in keep], [cases[i] for i in keep]
    return rows, cases
