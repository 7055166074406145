"""The model bundle: one directory with everything a prediction needs, checked on every load.

Layout::

    BUNDLE/manifest.json         format, model name and dims, preprocessing, calibration mode,
                                 training config, metrics, software versions, sha256 of each file,
                                 and manifest_sha256 (over the canonical JSON of everything else)
    BUNDLE/weights.safetensors   the model's state dict (float32)
    BUNDLE/clinical.json         ClinicalEncoder.to_dict()
    BUNDLE/genes.json            RnaVectorizer.to_dict() (gene order, log1p)
    BUNDLE/calibration.json      RiskToTime.to_dict()

Nothing is unpickled: JSON and safetensors only. Any mismatch (a checksum, a missing file, dims
that disagree between files) raises ``BundleError`` with one line that names the file.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import survfusion
from survfusion.calibration import RiskToTime
from survfusion.errors import BundleError, UserError
from survfusion.fileio import canonical_json, make_shareable, read_json, sha256_file, write_json
from survfusion.models import HIST_DIM, RNA_DIM, SurvivalModel, batched_risks, build_model, count_parameters
from survfusion.preprocess import ClinicalEncoder, RnaVectorizer

FORMAT = "survfusion-bundle"
FORMAT_VERSION = 2  # 2: clinical.json stores ordered lists (1 relied on key order)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CLINICAL = "clinical.json"
GENES = "genes.json"
CALIBRATION = "calibration.json"
MEANS = "embedding_means.json"
REQUIRED_FILES = (WEIGHTS, CLINICAL, GENES, CALIBRATION)
MODALITIES = ("hist", "rna", "clinical")


@dataclass
class Bundle:
    """A trained model with its preprocessing and calibration."""

    model_name: str
    model: SurvivalModel
    clinical: ClinicalEncoder
    rna: RnaVectorizer
    calibration: RiskToTime
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    embedding_means: dict[str, np.ndarray] | None = None

    def risks(self, bags: list[torch.Tensor], clinical: torch.Tensor, rna: torch.Tensor) -> np.ndarray:
        """Risks ``(P,)`` of patients given as tile-feature bags and their encoded clinical and RNA
        rows (``models.batched_risks``)."""
        return batched_risks(self.model, bags, clinical, rna)

    def months(self, risk) -> np.ndarray:
        return self.calibration.predict(risk)


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


def save_bundle(bundle: Bundle, directory: str | Path) -> Path:
    """Write ``bundle`` to ``directory`` (replaced as a whole, never half-written)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        make_shareable(tmp, directory=True)
        state = {
            k: v.detach().to("cpu", torch.float32).contiguous() for k, v in bundle.model.state_dict().items()
        }
        save_file(state, str(tmp / WEIGHTS), metadata={FORMAT: bundle.model_name})
        make_shareable(tmp / WEIGHTS)
        write_json(tmp / CLINICAL, bundle.clinical.to_dict())
        write_json(tmp / GENES, bundle.rna.to_dict())
        write_json(tmp / CALIBRATION, bundle.calibration.to_dict())
        files = list(REQUIRED_FILES)
        if bundle.embedding_means is not None:
            write_json(
                tmp / MEANS,
                {k: np.asarray(bundle.embedding_means[k], np.float64).tolist() for k in MODALITIES},
            )
            files.append(MEANS)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {
                "name": bundle.model_name,
                "dims": bundle.model.dims.to_dict(),
                "parameters": count_parameters(bundle.model),
            },
            "preprocessing": {
                "clinical_features": bundle.clinical.feature_names,
                "rna_genes": bundle.rna.dim,
                "rna_log1p": bundle.rna.log1p,
            },
            "calibration": {"mode": bundle.calibration.mode},
            "training": bundle.config,
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


def read_manifest(directory: str | Path) -> dict:
    """The checked manifest of a bundle (self-checksum, format, version)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BundleError(f"bundle {directory}: not a directory (expected {MANIFEST} and the model files)")
    path = directory / MANIFEST
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle file {path}: not a {FORMAT} manifest")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise BundleError(f"bundle file {path}: checksum mismatch (the manifest was edited or is corrupt)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle file {path}: format version {manifest.get('format_version')}, "
            f"this survfusion reads {FORMAT_VERSION}"
        )
    return manifest


def _verify_files(directory: Path, files: dict) -> None:
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleError(f"bundle file {directory / MANIFEST}: lists no checksum for {name}")
    for name, expected in files.items():
        path = directory / name
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


def load_bundle(directory: str | Path, *, device: str | torch.device = "cpu") -> Bundle:
    """Load and verify a bundle; the model comes back in eval mode on ``device``."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    _verify_files(directory, manifest["files"])
    try:
        clinical = ClinicalEncoder.from_dict(_read_json(directory / CLINICAL))
        rna = RnaVectorizer.from_dict(_read_json(directory / GENES))
        calibration = RiskToTime.from_dict(_read_json(directory / CALIBRATION))
        name, dims = manifest["model"]["name"], manifest["model"]["dims"]
        model = build_model(name, **dims)
    except BundleError:
        raise
    except (UserError, KeyError, TypeError) as err:
        raise BundleError(f"bundle {directory}: inconsistent contents ({err})") from None
    if clinical.dim != dims["clinical_dim"]:
        raise BundleError(
            f"bundle file {directory / CLINICAL}: encodes {clinical.dim} inputs, "
            f"the model expects clinical_dim={dims['clinical_dim']}"
        )
    if rna.dim != dims["rna_dim"]:
        raise BundleError(
            f"bundle file {directory / GENES}: lists {rna.dim} genes, "
            f"the model expects rna_dim={dims['rna_dim']}"
        )
    _load_weights(model, directory / WEIGHTS)
    means = _read_means(directory / MEANS, model) if MEANS in manifest["files"] else None
    return Bundle(
        model_name=name,
        model=model.to(device).eval(),
        clinical=clinical,
        rna=rna,
        calibration=calibration,
        config=manifest.get("training", {}),
        metrics=manifest.get("metrics", {}),
        embedding_means=means,
    )


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
