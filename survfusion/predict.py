"""One case, end to end: slide -> tiles -> encoder -> model -> months, with per-modality fallbacks.

The model directory (``/opt/ml/model`` on grand-challenge, ``model/`` here)::

    MODEL/bundle/     the survival bundle (survfusion.bundle), including the training mean of each
                      modality's embedding and the feature-extraction settings it was trained on
    MODEL/encoder/    the tile encoder's weights (UNI: the user's pytorch_model.bin)

Rules (README, "Bad or missing input"): a modality that is missing or unusable is replaced by its
training-mean embedding, with one warning that says what and why; the case fails only when no
modality is usable. ``strict`` turns every warning into a failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from survfusion.bundle import Bundle, load_bundle
from survfusion.encoders import TileEncoder
from survfusion.errors import BundleError, UserError
from survfusion.extract import ExtractConfig, embed_slide
from survfusion.fileio import make_shareable
from survfusion.gcio import CaseFiles
from survfusion.models import Embeddings

BUNDLE_DIR = "bundle"
ENCODER_DIR = "encoder"
WEIGHT_SUFFIXES = (".bin", ".pth", ".pt", ".safetensors")


class StrictModeError(UserError):
    """A fallback happened while --strict was set."""


@dataclass
class Model:
    bundle: Bundle
    encoder: TileEncoder
    extract: ExtractConfig


def load_model(model_dir: str | os.PathLike, *, device: str = "auto", precision: str = "auto") -> Model:
    """The bundle and its tile encoder, with every check that ties them together."""
    model_dir = Path(model_dir)
    bundle = load_bundle(model_dir / BUNDLE_DIR)
    feats = bundle.config.get("features")
    if not isinstance(feats, dict) or not feats.get("encoder"):
        raise BundleError(
            f"bundle {model_dir / BUNDLE_DIR}: records no feature-extraction settings (encoder, "
            "spacing); retrain it with `python -m survfusion train`"
        )
    enc_dir = model_dir / ENCODER_DIR
    weights = sorted(p for p in enc_dir.glob("*") if p.suffix in WEIGHT_SUFFIXES) if enc_dir.is_dir() else []
    if len(weights) != 1:
        raise BundleError(
            f"model {model_dir}: expected one tile-encoder weights file in {ENCODER_DIR}/ "
            f"(UNI: pytorch_model.bin), found {len(weights)}"
        )
    encoder = TileEncoder(feats["encoder"], weights[0], device=device, precision=precision)
    if feats.get("weights_sha256") and encoder.weights_sha256 != feats["weights_sha256"]:
        raise BundleError(
            f"model {model_dir}: {weights[0].name} is not the encoder the bundle was trained with "
            f"(sha256 {encoder.weights_sha256[:12]}..., expected {feats['weights_sha256'][:12]}...)"
        )
    cfg = ExtractConfig(
        target_spacing_um=float(feats["target_spacing_um"]),
        tile_px=int(feats["tile_px"]),
        min_tissue=float(feats["min_tissue"]),
    )
    return Model(bundle, encoder, cfg)


@dataclass
class Prediction:
    months: float
    risk: float
    replaced: dict[str, str] = field(default_factory=dict)  # modality -> why it was replaced
    warnings: list[str] = field(default_factory=list)


Log = Callable[[str], None]


def _read_json(path: Path | None, what: str):
    if path is None:
        raise UserError(f"no {what} file")
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{what} file {Path(path).name} unreadable ({type(err).__name__})") from None


class _Case:
    """Collects each modality's input or the reason it is unusable, and every warning."""

    def __init__(self, strict: bool, warn: Log) -> None:
        self.strict, self._warn = strict, warn
        self.replaced: dict[str, str] = {}
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        if self.strict:
            raise StrictModeError(f"--strict: {message}")
        self.warnings.append(message)
        self._warn(message)


def _histology(files: CaseFiles, model: Model, case: _Case, log: Log):
    if files.wsi is None:
        raise UserError("no WSI file")
    t0 = time.perf_counter()
    try:
        res = embed_slide(files.wsi, files.mask, model.encoder, model.extract)
    except (UserError, OSError, ValueError, RuntimeError, MemoryError) as err:
        raise UserError(
            f"WSI {files.wsi.name} unreadable ({str(err).splitlines()[0] if str(err) else err!r})"
        ) from None
    for w in res.warnings:
        case.warn(w)
    s, n = res.seconds, len(res.features)
    log(f"open     {s['open']:7.2f} s  {files.wsi.name}")
    log(
        f"tissue   {s['tissue']:7.2f} s  {res.attrs['tissue_source']}, level {res.attrs['level']} at "
        f"{res.attrs['spacing_um']:.3f} µm/px"
    )
    log(
        f"embed    {s['embed']:7.2f} s  {n} tiles, {n / max(s['embed'], 1e-9):.1f} tiles/s on "
        f"{model.encoder.device} ({model.encoder.precision}); total {time.perf_counter() - t0:.2f} s"
    )
    if n == 0:
        raise UserError(f"WSI {files.wsi.name} has no tissue tile")
    return torch.from_numpy(res.features)[None]


def _rna(files: CaseFiles, model: Model, case: _Case):
    expression = _read_json(files.rna, "RNA")
    if not isinstance(expression, dict):
        raise UserError(f"RNA file is a JSON {type(expression).__name__}, not an object gene -> value")
    if model.bundle.rna.usable_genes(expression) == 0:
        raise UserError("RNA file has no usable gene (no known symbol with a finite value)")
    enc = model.bundle.rna.transform(expression)
    for w in enc.warnings:
        case.warn(w)
    return torch.from_numpy(enc.values)[None]


def _clinical(files: CaseFiles, model: Model, case: _Case):
    record = _read_json(files.clinical, "clinical")
    if not isinstance(record, dict):
        raise UserError(f"clinical file is a JSON {type(record).__name__}, not an object")
    enc = model.bundle.clinical.transform(record)
    for w in enc.warnings:
        case.warn(w)
    return torch.from_numpy(enc.values)[None]


def predict_case(
    files: CaseFiles, model: Model, *, strict: bool = False, log: Log = print, warn: Log = print
) -> Prediction:
    case = _Case(strict, warn)
    inputs = {}
    for name, stage in (("hist", _histology), ("rna", _rna), ("clinical", _clinical)):
        try:
            inputs[name] = stage(files, model, case, log) if name == "hist" else stage(files, model, case)
        except StrictModeError:
            raise
        except UserError as err:
            case.replaced[name] = str(err)
    if len(case.replaced) == 3:
        raise UserError("no prediction possible: " + "; ".join(case.replaced.values()))
    t0 = time.perf_counter()
    risk = _risk(model, inputs, case)
    log(f"model    {time.perf_counter() - t0:7.2f} s  {model.bundle.model_name}, risk {risk:.4f}")
    t0 = time.perf_counter()
    months = float(model.bundle.months(np.array([risk]))[0])
    log(f"calibrate{time.perf_counter() - t0:7.2f} s  {model.bundle.calibration.mode}: {months:.2f} months")
    return Prediction(months, risk, case.replaced, case.warnings)


def _risk(model: Model, inputs: dict, case: _Case) -> float:
    bundle, dims = model.bundle, model.bundle.model.dims
    means = bundle.embedding_means
    for name, why in case.replaced.items():
        if means is None:
            raise UserError(f"{why}, and the bundle has no training means to stand in for it")
        case.warn(f"{name} input replaced by its training-mean embedding: {why}")
    feats = inputs.get("hist", torch.zeros(1, 1, dims.feat_dim))
    mask = (
        torch.ones(feats.shape[:2], dtype=torch.bool)
        if "hist" in inputs
        else torch.zeros(1, 1, dtype=torch.bool)
    )
    clinical = inputs.get("clinical", torch.zeros(1, dims.clinical_dim))
    rna = inputs.get("rna", torch.zeros(1, dims.rna_dim))
    net = bundle.model.eval()
    with torch.inference_mode():
        emb = net.encode(feats, clinical, rna, mask)
        parts = {"hist": emb.hist, "rna": emb.rna, "clinical": emb.clinical}
        for name in case.replaced:
            parts[name] = torch.from_numpy(means[name]).to(parts[name].dtype)[None]
        risk = net.fuse(Embeddings(parts["hist"], parts["rna"], parts["clinical"], emb.attention))
    return float(risk.double()[0])


def write_model_dir(
    out: str | os.PathLike, bundle_dir: str | os.PathLike, encoder_weights: str | os.PathLike
) -> Path:
    """Assemble a model directory (the grand-challenge model tarball's content) from a trained bundle
    and the tile encoder's weights; checked by loading it back."""
    import shutil

    out = Path(out)
    for sub in (BUNDLE_DIR, ENCODER_DIR):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    shutil.copytree(bundle_dir, out / BUNDLE_DIR)
    (out / ENCODER_DIR).mkdir(parents=True)
    shutil.copy2(encoder_weights, out / ENCODER_DIR / Path(encoder_weights).name)
    for path in [out, *out.rglob("*")]:  # the container's non-root user must read everything
        make_shareable(path, directory=path.is_dir())
    load_model(out, device="cpu")
    return out
