"""The bundle on disk: one directory with everything a prediction needs, checked on every load.

Layout::

    BUNDLE/manifest.json         format, model name, one entry per member (its folder, dims, the mean
                                 and sd of its training risks), calibration mode, training config
                                 (with the typed feature request as ``features``), metrics, software
                                 versions, sha256 of every file, and manifest_sha256 (over the
                                 canonical JSON of everything else)
    BUNDLE/calibration.json      RiskToTime.to_dict(): the mapping of the bundle's risk to months
    BUNDLE/member_00/weights.safetensors   the member's state dict (float32)
    BUNDLE/member_00/clinical.json         ClinicalEncoder.to_dict()
    BUNDLE/member_00/genes.json            RnaVectorizer.to_dict() (gene order, log1p, maxima)
    BUNDLE/member_00/embedding_means.json  training-mean embeddings (stand-ins for a missing input)
    BUNDLE/member_01/...

Format version 2 (one model, files at the top level, no member folders) still loads, as a bundle of
one member with ``mu = 0``, ``sd = 1``. Nothing is unpickled: JSON and safetensors only. Any mismatch
(a checksum, a missing file, dims that disagree between files) raises ``BundleError`` with one line
that names the file.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import survfusion
from survfusion.errors import BundleError, UserError
from survfusion.features.request import FeatureRequest
from survfusion.fileio import canonical_json, make_shareable, read_json, sha256_file, write_json
from survfusion.limits import MAX_ENSEMBLE_MEMBERS
from survfusion.nets.calibration import RiskToTime
from survfusion.nets.models import HIST_DIM, RNA_DIM, SurvivalModel, build_model, count_parameters
from survfusion.serving.bundle import COMBINATIONS, MODALITIES, Bundle, Member
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer

FORMAT = "survfusion-bundle"
# 4: a member may name its own model and the bundle its combination (a residual: "sum");
# 3: members in member_NN/ folders; 2: one model, files at the top level
FORMAT_VERSION = 4
READS_VERSIONS = (2, 3, 4)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CLINICAL = "clinical.json"
GENES = "genes.json"
CALIBRATION = "calibration.json"
MEANS = "embedding_means.json"
MEMBER_FILES = (WEIGHTS, CLINICAL, GENES)  # required in every member folder (MEANS optional)
_MEMBER_DIR = re.compile(r"member_\d{2,3}")


def _software() -> dict:
    import lifelines
    import safetensors
    import sksurv

    return {
        "survfusion": survfusion.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "lifelines": lifelines.__version__,
        "scikit-survival": sksurv.__version__,
    }


def member_dir(k: int) -> str:
    return f"member_{k:02d}"


def _save_member(member: Member, directory: Path, name: str) -> dict:
    """Write one member's files; return its manifest entry."""
    directory.mkdir()
    make_shareable(directory, directory=True)
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in member.model.state_dict().items()
    }
    save_file(state, str(directory / WEIGHTS), metadata={FORMAT: name})
    make_shareable(directory / WEIGHTS)
    write_json(directory / CLINICAL, member.clinical.to_dict())
    write_json(directory / GENES, member.rna.to_dict())
    if member.embedding_means is not None:
        write_json(
            directory / MEANS,
            {k: np.asarray(member.embedding_means[k], np.float64).tolist() for k in MODALITIES},
        )
    return {
        "dir": directory.name,
        "model": name,
        "dims": member.model.dims.to_dict(),
        "parameters": count_parameters(member.model),
        "risk_mean": float(member.risk_mean),
        "risk_sd": float(member.risk_sd),
        "clinical_features": member.clinical.feature_names,
        "rna_genes": member.rna.dim,
        "rna_log1p": member.rna.log1p,
        **member.info,
    }


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write ``bundle`` to ``directory`` (replaced as a whole, never half-written)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        make_shareable(tmp, directory=True)
        members = [
            _save_member(m, tmp / member_dir(k), m.name or bundle.model_name)
            for k, m in enumerate(bundle.members)
        ]
        write_json(tmp / CALIBRATION, bundle.calibration.to_dict())
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        first = bundle.members[0]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name": bundle.model_name,
                "dims": first.model.dims.to_dict(),
                "parameters": count_parameters(first.model),  # per member
            },
            "members": members,
            "combination": bundle.combination,
            "preprocessing": {  # of the first member; each member's is in its entry
                "clinical_features": first.clinical.feature_names,
                "rna_genes": first.rna.dim,
                "rna_log1p": first.rna.log1p,
            },
            "calibration": {"mode": bundle.calibration.mode},
            "training": _training_record(bundle),
            "metrics": bundle.metrics,
            "software": _software(),
            "files": {name: sha256_file(tmp / name) for name in files},
        }
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        write_json(tmp / MANIFEST, manifest)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    try:
        return hashlib.sha256(canonical_json(body)).hexdigest()
    except ValueError:  # NaN/inf slipped into the JSON: cannot be the manifest we wrote
        return "invalid"


def _read_json(path: Path):
    """A bundle file's JSON through the one bounded reader (``fileio.read_json``), as ``BundleError``s
    that name the file. Bundle files are ours, but a corrupt one must still fail in one line."""
    if not path.is_file():
        raise BundleError(f"bundle file {path}: missing")
    return read_json(path, "bundle", max_bytes=256 * 2**20, error=BundleError).value


def _training_record(bundle: Bundle) -> dict:
    """The manifest's ``training`` entry: the config, with the typed request as ``features``."""
    if bundle.request is None:
        return dict(bundle.config)
    return {**bundle.config, "features": bundle.request.to_dict()}


def _stored_request(training: dict) -> FeatureRequest | None:
    """The manifest's feature request, typed; None when absent or unreadable (``modeldir`` says
    how to get one when a model directory needs it)."""
    feats = training.get("features")
    if not isinstance(feats, dict):
        return None
    try:
        return FeatureRequest.from_dict(feats)
    except UserError:
        return None


def resolve_bundle_dir(path: str | os.PathLike) -> Path:
    """A bundle folder from what a user may pass: the bundle itself, or a run folder (``RUN``, whose
    ``RUN/bundle`` it is) or a model directory (``MODEL/bundle``)."""
    path = Path(path)
    if not (path / MANIFEST).is_file() and (path / "bundle" / MANIFEST).is_file():
        return path / "bundle"
    return path


def read_manifest(directory: str | Path) -> dict:
    """The checked manifest of a bundle (self-checksum, format, version)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"bundle {directory}: not a directory (expected {MANIFEST} and the model files)")
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"bundle file {path}: missing ({directory} is not a bundle: pass the bundle/ folder of a "
            "training run, or the run folder itself)"
        )
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle file {path}: not a {FORMAT} manifest")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise BundleError(f"bundle file {path}: checksum mismatch (the manifest was edited or is corrupt)")
    if manifest.get("format_version") not in READS_VERSIONS:
        raise BundleError(
            f"bundle file {path}: format version {manifest.get('format_version')}, "
            f"this survfusion reads {', '.join(map(str, READS_VERSIONS))}"
        )
    return manifest


def member_entries(manifest: dict, where: Path) -> list[dict]:
    """Each member's manifest entry; a version-2 bundle is one member in the bundle folder itself."""
    if manifest["format_version"] == 2:
        return [{"dir": ".", "dims": manifest["model"]["dims"], "risk_mean": 0.0, "risk_sd": 1.0}]
    entries = manifest.get("members")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ENSEMBLE_MEMBERS:
        raise BundleError(f"bundle file {where / MANIFEST}: expected 1 to {MAX_ENSEMBLE_MEMBERS} members")
    for e in entries:
        if not isinstance(e, dict) or not _MEMBER_DIR.fullmatch(str(e.get("dir"))):
            raise BundleError(f"bundle file {where / MANIFEST}: malformed member entry")
    if len({e["dir"] for e in entries}) != len(entries):
        raise BundleError(f"bundle file {where / MANIFEST}: a member folder is listed twice")
    return entries


def _verify_files(directory: Path, manifest: dict, entries: list[dict]) -> None:
    files = manifest["files"]
    required = [CALIBRATION] + [(Path(e["dir"]) / name).as_posix() for e in entries for name in MEMBER_FILES]
    for name in required:
        if name not in files:
            raise BundleError(f"bundle file {directory / MANIFEST}: lists no checksum for {name}")
    for name, expected in files.items():
        path = directory / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise BundleError(f"bundle file {directory / MANIFEST}: file name {name!r} leaves the bundle")
        if not path.is_file():
            raise BundleError(f"bundle file {path}: missing")
        try:
            got = sha256_file(path)
        except OSError as err:
            raise BundleError(f"bundle file {path}: cannot be read ({err.strerror})") from None
        if got != expected:
            raise BundleError(
                f"bundle file {path}: checksum mismatch (expected sha256 {expected[:16]}..., "
                f"got {got[:16]}...); the file is corrupt or was edited"
            )


def _load_weights(model: SurvivalModel, path: Path) -> None:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise BundleError(f"bundle file {path}: unreadable safetensors ({err})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise BundleError(
            f"bundle file {path}: weights do not fit the manifest's model; missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, wrong shape {shapes[:3]}"
        )
    model.load_state_dict(state, strict=True)


def _load_member(directory: Path, name: str, entry: dict, files: dict, device) -> Member:
    where = directory / entry["dir"]
    try:
        clinical = ClinicalEncoder.from_dict(_read_json(where / CLINICAL))
        rna = RnaVectorizer.from_dict(_read_json(where / GENES))
        dims = entry["dims"]
        name = str(entry.get("model", name))  # a version-3 member is the bundle's model
        model = build_model(name, **dims)
        info = {k: v for k, v in entry.items() if k in ("fold", "seed", "best_epoch")}
        stats = float(entry["risk_mean"]), float(entry["risk_sd"])
    except BundleError:
        raise
    except (UserError, KeyError, TypeError, ValueError) as err:
        raise BundleError(f"bundle {where}: inconsistent contents ({err})") from None
    if clinical.dim != dims["clinical_dim"]:
        raise BundleError(
            f"bundle file {where / CLINICAL}: encodes {clinical.dim} inputs, "
            f"the model expects clinical_dim={dims['clinical_dim']}"
        )
    if rna.dim != dims["rna_dim"]:
        raise BundleError(
            f"bundle file {where / GENES}: lists {rna.dim} genes, the model expects rna_dim={dims['rna_dim']}"
        )
    _load_weights(model, where / WEIGHTS)
    has_means = (Path(entry["dir"]) / MEANS).as_posix() in files
    means = _read_means(where / MEANS, model) if has_means else None
    try:
        return Member(model.to(device).eval(), clinical, rna, means, *stats, info=info, name=name)
    except UserError as err:
        raise BundleError(f"bundle file {directory / MANIFEST}: {err}") from None


def load_bundle(directory: str | Path, *, device: str | torch.device = "cpu") -> Bundle:
    """Load and verify a bundle; every member comes back in eval mode on ``device``."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    entries = member_entries(manifest, directory)
    _verify_files(directory, manifest, entries)
    try:
        name = manifest["model"]["name"]
        calibration = RiskToTime.from_dict(_read_json(directory / CALIBRATION))
    except BundleError:
        raise
    except (UserError, KeyError, TypeError) as err:
        raise BundleError(f"bundle {directory}: inconsistent contents ({err})") from None
    members = [_load_member(directory, name, e, manifest["files"], device) for e in entries]
    return Bundle(
        model_name=name,
        members=members,
        calibration=calibration,
        config=manifest.get("training", {}),
        request=_stored_request(manifest.get("training", {})),
        metrics=manifest.get("metrics", {}),
        combination=_combination(manifest, directory),
    )


def _combination(manifest: dict, directory: Path) -> str:
    value = manifest.get("combination", "mean")  # before version 4: always the mean
    if value not in COMBINATIONS:
        raise BundleError(f"bundle file {directory / MANIFEST}: unknown combination {str(value)[:40]!r}")
    return value


def _read_means(path: Path, model: SurvivalModel) -> dict[str, np.ndarray]:
    raw = _read_json(path)
    expected = {"hist": HIST_DIM, "rna": RNA_DIM, "clinical": model.dims.clinical_dim}
    try:
        means = {k: np.asarray(raw[k], dtype=np.float32) for k in MODALITIES}
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"bundle file {path}: malformed ({err})") from None
    for k, n in expected.items():
        if means[k].shape != (n,) or not np.isfinite(means[k]).all():
            raise BundleError(
                f"bundle file {path}: '{k}' must be {n} finite numbers, got shape {means[k].shape}"
            )
    return means
