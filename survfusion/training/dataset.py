"""A cohort in memory: outcomes, tile features, clinical records and RNA, aligned by case id.

Reads either cohort layout of ``survfusion.training.cohort`` plus a features folder (``<case_id>.h5``).
Labels come from ``outcomes.csv``, or in a CHIMERA release from each case's clinical JSON
(``survfusion.training.release``); the clinical encoder never reads the label fields.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from survfusion.errors import UserError
from survfusion.features.h5 import feature_path, read_features
from survfusion.features.request import FeatureRequest
from survfusion.fileio import read_json
from survfusion.serving.preprocess import RnaVectorizer
from survfusion.training.cohort import ORACLE_FILE, OUTCOMES_FILE, open_cohort


@dataclass
class CohortData:
    case_ids: list[str]
    cohort: np.ndarray  # "3A" / "3B"
    time_months: np.ndarray
    event: np.ndarray  # bool
    bags: list[torch.Tensor]  # (n_i, D) float32 tile features
    coords: list[np.ndarray]  # (n_i, 2) level-0 top-left corners
    clinical: list[dict]  # raw clinical JSON records
    rna_paths: list[Path]
    tile_lv0: list[int]  # tile side in level-0 pixels, from each feature file (0 if unknown)
    feature_request: FeatureRequest | None  # what every feature file was made with; None: another tool's
    _rna_docs: dict[int, dict] = field(default_factory=dict, repr=False)  # parsed RNA files, read once
    _raw_rna: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.case_ids)

    def rna_doc(self, i: int):
        """Patient ``i``'s RNA JSON, parsed on first use and kept (an ensemble's members and every
        epoch's vectorizers read the same 19,359-gene files; parsing them is most of a run's set-up)."""
        if i not in self._rna_docs:
            self._rna_docs[i] = _read_json(self.rna_paths[i])
        return self._rna_docs[i]

    def raw_rna(self) -> np.ndarray:
        """``(N, 19359)`` float64: every patient's genes in the reference order, repaired as the
        container repairs them (``RnaVectorizer.repaired``), before any bound, log or projection;
        made once. A fitted vectorizer's ``finish`` of these columns is its ``transform``."""
        if self._raw_rna is None:
            vectorizer = RnaVectorizer()
            self._raw_rna = np.stack([vectorizer.repaired(self.rna_doc(i))[0] for i in range(len(self))])
        return self._raw_rna

    def rna_matrix(self, vectorizer: RnaVectorizer, idx=None) -> tuple[np.ndarray, list[str]]:
        """(N, G) float32 through ``vectorizer`` (rows ``idx``, default all) and the warnings."""
        idx = range(len(self)) if idx is None else idx
        rows, warnings = [], []
        for i in idx:
            case_id = self.case_ids[i]
            enc = vectorizer.transform(self.rna_doc(i))
            rows.append(enc.values)
            warnings += [f"{case_id}: {w}" for w in enc.warnings]
        return np.stack(rows), warnings


def _read_json(path: Path):
    """A cohort's RNA or clinical file, through the same bounded reader as the container's."""
    return read_json(path, f"{Path(path).parent.name} {Path(path).stem}").value


def read_outcomes(cohort: str | os.PathLike, *, qc: str = "report") -> list[dict]:
    """The outcome rows (case_id, cohort, time_months, event) of either layout
    (``cohort.open_cohort``): ``outcomes.csv``, or each case's clinical JSON in a release (after
    its quality-control rule ``qc``, ``survfusion.training.release``)."""
    layout = open_cohort(cohort)
    if layout.kind == "release":
        from survfusion.training.release import release_outcomes

        return release_outcomes(layout.data, qc=qc)[0]
    path = Path(cohort) / OUTCOMES_FILE
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise UserError(
            f"{path}: {err.strerror} (expected columns case_id, cohort, time_months, event)"
        ) from None
    need = {"case_id", "time_months", "event"}
    if not rows or not need <= set(rows[0]):
        raise UserError(f"{path}: needs columns case_id, time_months, event (and cohort)")
    return rows


def load_cohort(cohort: str | os.PathLike, features: str | os.PathLike, *, qc: str = "report") -> CohortData:
    cohort, features = Path(cohort), Path(features)
    layout = open_cohort(cohort)
    rows = read_outcomes(cohort, qc=qc)
    missing = [r["case_id"] for r in rows if not feature_path(features, r["case_id"]).is_file()]
    if missing:
        raise UserError(
            f"features {features}: no feature file for {len(missing)} case(s), e.g. "
            f"{', '.join(missing[:3])}; run `python -m survfusion extract` first"
        )
    bags, coords, tile_lv0, requests = [], [], [], {}
    for r in rows:
        f = read_features(feature_path(features, r["case_id"]))
        requests[r["case_id"]] = FeatureRequest.from_attrs(f.attrs)
        bags.append(torch.from_numpy(f.features))
        coords.append(f.coords)
        tile_lv0.append(int(f.attrs.get("tile_lv0", f.attrs.get("coords.patch_size_level0", 0))))
    distinct = {json.dumps(v and v.to_dict(), sort_keys=True) for v in requests.values()}
    if len(distinct) > 1:
        raise UserError(
            f"features {features}: the files were made with different settings ({len(distinct)} "
            f"kinds, e.g. {sorted(distinct)[:2]}); extract them again with one setting"
        )
    dims = {b.shape[1] for b in bags}
    if len(dims) > 1:
        raise UserError(f"features {features}: files disagree on the feature size ({sorted(dims)})")
    request = next(iter(requests.values()))
    if request is not None and dims:
        from survfusion.features.encoders import encoder_spec

        width = encoder_spec(request.encoder).embed_dim
        if dims != {width}:
            raise UserError(
                f"features {features}: {dims.pop()}-d tiles, but the files say {request.encoder!r}, "
                f"which embeds to {width}-d; the files were altered or made by another tool"
            )
    return CohortData(
        case_ids=[r["case_id"] for r in rows],
        cohort=np.array([r.get("cohort", "") for r in rows]),
        time_months=np.array([float(r["time_months"]) for r in rows]),
        event=np.array([str(r["event"]).strip() in ("1", "1.0", "True", "true") for r in rows]),
        bags=bags,
        coords=coords,
        clinical=[_read_json(layout.clinical_path(r["case_id"])) for r in rows],
        rna_paths=[layout.rna_path(r["case_id"]) for r in rows],
        tile_lv0=tile_lv0,
        feature_request=request,
    )


NOISE_FREE = "noise_free_log_hazard"


def read_oracle(cohort: Path, case_ids: list[str], column: str = "log_hazard") -> np.ndarray | None:
    """The synthetic cohort's planted log-hazard per case (oracle.csv; ``NOISE_FREE``: without its
    noise, which no model can know), or None for a real cohort or an oracle without that column."""
    path = open_cohort(cohort).root / ORACLE_FILE
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        return None
    table = {r["case_id"]: float(r[column]) for r in rows}
    return np.array([table.get(c, np.nan) for c in case_ids])


def stratified_split(strata: np.ndarray, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level split; within each stratum ``round(val_fraction * n)`` go to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for s in sorted(set(strata.tolist())):
        idx = rng.permutation(np.flatnonzero(strata == s))
        n_val = round(val_fraction * len(idx))
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(np.array(train, np.int64)), np.sort(np.array(val, np.int64))


def stratified_folds(strata: np.ndarray, *, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of each patient, dealt round-robin within each stratum after a shuffle."""
    if k < 2:
        raise UserError(f"--folds must be at least 2, got {k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(strata), dtype=np.int64)
    offset = 0
    for s in sorted(set(strata.tolist())):
        idx = rng.permutation(np.flatnonzero(strata == s))
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def strata(cohort, event) -> np.ndarray:
    """Cohort (3A/3B) x event of each patient: the splits keep both proportions."""
    return np.array([f"{c}|{int(e)}" for c, e in zip(cohort, event, strict=True)])


def strata_of(data: CohortData) -> np.ndarray:
    """``strata`` of a cohort's patients."""
    return strata(data.cohort, data.event)
