"""The model directory: what grand-challenge mounts at ``/opt/ml/model`` (``model/`` here).

Layout::

    MODEL/bundle/                    the survival bundle (survfusion.serving.bundle); its training config
                                     records the ``FeatureRequest`` its features were made with
    MODEL/encoder/weights.safetensors  the tile encoder's weights (UNI: converted once from the
                                     user's pytorch_model.bin by ``package``; nothing is unpickled
                                     in the container)
    MODEL/encoder/encoder.json       encoder name, source file name and its sha256 (what the feature
                                     files record), sha256 of weights.safetensors

A directory written before encoder.json existed (one weights file in ``encoder/``) still loads.
Every check that ties the bundle to its encoder happens in ``load_model``: a mismatch is a
``BundleError`` naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from survfusion.errors import BundleError, UserError
from survfusion.features.encoders import encoder_spec
from survfusion.features.request import ExtractConfig, FeatureRequest
from survfusion.features.tile_encoder import TileEncoder
from survfusion.features.weights import convert_to_safetensors
from survfusion.fileio import make_shareable, sha256_file, write_json
from survfusion.serving.bundle import Bundle
from survfusion.serving.bundle_io import load_bundle

BUNDLE_DIR = "bundle"
ENCODER_DIR = "encoder"
ENCODER_WEIGHTS = "weights.safetensors"
ENCODER_META = "encoder.json"
WEIGHT_SUFFIXES = (".bin", ".pth", ".pt", ".safetensors")
HOW_TO_MAKE = (
    "make one with 'python -m survfusion package --run RUN --encoder-weights W' (./demo.sh makes a demo "
    "one in model/); on grand-challenge it is the uploaded model tarball (./export.sh), extracted"
)


def check_model_dir(model_dir: str | os.PathLike) -> None:
    """A model directory exists and holds bundle/, else one ``BundleError`` that says how to make one."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise BundleError(f"model directory {model_dir} does not exist; {HOW_TO_MAKE}")
    if not (model_dir / BUNDLE_DIR).is_dir():
        raise BundleError(
            f"model directory {model_dir}: {BUNDLE_DIR}/ is not a directory (expected {BUNDLE_DIR}/ and "
            f"{ENCODER_DIR}/); {HOW_TO_MAKE}"
        )


@dataclass
class Model:
    """A loaded model directory: the bundle, its tile encoder, and the extraction it was trained on."""

    bundle: Bundle
    encoder: TileEncoder
    request: FeatureRequest
    extract: ExtractConfig
    encoder_file_sha256: str | None = None  # from encoder.json (None: a directory without one)

    def check_encoder(self) -> None:
        """The encoder's weights are the ones the bundle's features were made with (sha256; the hash
        runs in the background while the model loads, so this waits for it)."""
        expected = self.request.weights_sha256
        if self.encoder.weights_sha256 != expected:
            raise BundleError(
                f"model: {self.encoder.weights_path.name} is not the encoder the bundle was trained with "
                f"(sha256 {self.encoder.weights_sha256[:12]}..., expected {expected[:12]}...)"
            )
        meta_sha = self.encoder_file_sha256
        if meta_sha and self.encoder.file_sha256 != meta_sha:
            raise BundleError(
                f"model: {self.encoder.weights_path} checksum mismatch (expected sha256 {meta_sha[:12]}..., "
                f"got {self.encoder.file_sha256[:12]}...); the file is corrupt or was edited"
            )

    def precision_note(self) -> str | None:
        """A line for the log when this run embeds at another precision than the training features."""
        if self.encoder.precision != self.request.precision:
            return (
                f"embedding at {self.encoder.precision}, the bundle's training features were made at "
                f"{self.request.precision}; small differences in the embeddings are expected"
            )
        return None


def bundle_request(bundle: Bundle, where: Path) -> FeatureRequest:
    """The ``FeatureRequest`` a bundle was trained on, or a ``BundleError`` saying how to get one."""
    if bundle.request is not None:
        return bundle.request
    feats = bundle.config.get("features")
    if isinstance(feats, dict) and feats.get("encoder"):
        try:
            FeatureRequest.from_dict(feats)
        except UserError as err:  # recorded, but not a request this version reads: say why
            raise BundleError(f"bundle {where}: {err}") from None
    raise BundleError(
        f"bundle {where}: records no feature-extraction settings (encoder, spacing); retrain it with "
        "`python -m survfusion train` on features made by `python -m survfusion extract`"
    )


def check_width(bundle: Bundle, request: FeatureRequest, where: Path) -> None:
    """Every member that reads the slide takes the width ``request.encoder`` embeds to, else one
    ``BundleError`` naming both: features of one encoder never meet a model trained on another's."""
    width = encoder_spec(request.encoder).embed_dim
    for i, member in enumerate(bundle.members):
        feat_dim = member.model.dims.feat_dim
        if "hist" in member.model.uses and feat_dim != width:
            raise BundleError(
                f"bundle {where}: member {i} takes {feat_dim}-d tile features, but its feature request "
                f"names {request.encoder!r}, which embeds to {width}-d; the bundle and its encoder disagree"
            )


def _encoder_files(enc_dir: Path, model_dir: Path) -> tuple[Path, dict]:
    """The weights file and its encoder.json (empty for a directory written by an older version)."""
    meta_path = enc_dir / ENCODER_META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            return enc_dir / meta["weights"], meta
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise BundleError(f"model file {meta_path}: malformed ({type(err).__name__})") from None
    weights = sorted(p for p in enc_dir.glob("*") if p.suffix in WEIGHT_SUFFIXES) if enc_dir.is_dir() else []
    if len(weights) != 1:
        raise BundleError(
            f"model {model_dir}: expected one tile-encoder weights file in {ENCODER_DIR}/ "
            f"(UNI: pytorch_model.bin), found {len(weights)}"
        )
    return weights[0], {}


def load_model(
    model_dir: str | os.PathLike,
    *,
    device: str = "auto",
    precision: str = "auto",
    cast_weights: bool = False,
    batch_size: int | None = None,
) -> Model:
    """The bundle and its tile encoder, with every check that ties them together."""
    check_model_dir(model_dir)
    model_dir = Path(model_dir)
    bundle = load_bundle(model_dir / BUNDLE_DIR)
    request = bundle_request(bundle, model_dir / BUNDLE_DIR)
    check_width(bundle, request, model_dir / BUNDLE_DIR)
    weights, meta = _encoder_files(model_dir / ENCODER_DIR, model_dir)
    if meta and meta.get("encoder") != request.encoder:
        raise BundleError(
            f"model file {model_dir / ENCODER_DIR / ENCODER_META}: encoder {meta.get('encoder')!r}, "
            f"the bundle was trained on {request.encoder!r} features"
        )
    encoder = TileEncoder(
        request.encoder,
        weights,
        device=device,
        precision=precision,
        cast_weights=cast_weights,
        source_sha256=meta.get("source_sha256"),
    )
    extract = ExtractConfig.from_request(request, batch_size=batch_size)
    return Model(bundle, encoder, request, extract, meta.get("sha256"))


def write_model_dir(
    out: str | os.PathLike,
    bundle_dir: str | os.PathLike,
    encoder_weights: str | os.PathLike,
    *,
    accept_imported_tiling: bool = False,
) -> Path:
    """Assemble a model directory (the grand-challenge model tarball's content) from a trained bundle
    and the tile encoder's weights (converted to safetensors); checked by loading it back. A bundle
    trained on imported features whose tiling the container would not reproduce
    (``FeatureRequest.unreproduced``) is refused, with every reason, unless
    ``accept_imported_tiling``."""
    out, encoder_weights = Path(out), Path(encoder_weights)
    bundle = load_bundle(Path(bundle_dir))
    request = bundle_request(bundle, Path(bundle_dir))
    check_width(bundle, request, Path(bundle_dir))
    if request.unreproduced and not accept_imported_tiling:
        raise BundleError(
            f"package: the bundle was trained on imported features ({request.source}) that the container "
            f"would not embed alike: {'; '.join(request.unreproduced)}. The container tiles at "
            f"{request.target_spacing_um:g} µm/px, {request.tile_px} px, cap {request.max_tiles}, "
            "with this kit's "
            "tissue rule; pass --accept-imported-tiling to package it knowingly"
        )
    if request.unreproduced:
        print(f"package: accepted knowingly: {'; '.join(request.unreproduced)}", file=sys.stderr)
    if request.weights_sha256 == "unknown":
        raise BundleError(
            "package: the imported features do not record which encoder weights made them, so the "
            "container's embeddings cannot be checked against them; import them again with --encoder-weights"
        )
    source_sha = sha256_file(encoder_weights)
    if source_sha != request.weights_sha256:
        raise BundleError(
            f"package: {encoder_weights} is not the encoder the bundle was trained with (sha256 "
            f"{source_sha[:12]}..., the features record {request.weights_sha256[:12]}...)"
        )
    for sub in (BUNDLE_DIR, ENCODER_DIR):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    shutil.copytree(bundle_dir, out / BUNDLE_DIR)
    (out / ENCODER_DIR).mkdir(parents=True)
    digest = convert_to_safetensors(request.encoder, encoder_weights, out / ENCODER_DIR / ENCODER_WEIGHTS)
    write_json(
        out / ENCODER_DIR / ENCODER_META,
        {
            "encoder": request.encoder,
            "weights": ENCODER_WEIGHTS,
            "sha256": digest,
            "source": encoder_weights.name,
            "source_sha256": source_sha,
        },
    )
    for path in [out, *out.rglob("*")]:  # the container's non-root user must read everything
        make_shareable(path, directory=path.is_dir())
    load_model(out, device="cpu").check_encoder()
    return out
