"""The organisers' published tile features as this kit's feature files (``import-features``).

The CHIMERA release ships ``features/features/<pid>_HE.pt`` (a tensor ``(N, D)``) with
``features/coordinates/<pid>_HE.npy`` (a structured array: ``x, y`` level-0 pixels,
``tile_size_resized, tile_level, resize_factor, tile_size_lv0, target_spacing``). Each pair becomes
``<pid>.h5`` (``survfusion.features.h5``).

Nothing is trusted before it is checked: a ``.npy`` header (shape, dtype, fields) is read and
checked against ``survfusion.limits`` before its array; a ``.pt`` file's size and the uncompressed
size of every record in its archive are checked before ``torch.load(weights_only=True)``, which
refuses anything but tensors and plain containers, and the result must be one plain float tensor
whose rows equal the coordinates'. Every file is written to a hidden folder first and moved into
place only when all pairs passed: an error leaves nothing partial.

The ``FeatureRequest`` of the imported files says where they came from (``source``) and the tiling
their coordinates imply (spacing, tile size, the cap), and lists under ``unreproduced`` what this
kit's extraction, hence the container, would do differently: the tissue rule when it is not
stated, a grid that is not extract's, a cap reached (the organisers' subset rule is theirs), weights
that were not named. ``package`` refuses such a bundle unless told to accept it knowingly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import survfusion
from survfusion.errors import UserError
from survfusion.features.h5 import feature_path, write_features
from survfusion.features.request import DEFAULT_MIN_TISSUE, PRECISIONS, REQUEST_ATTR, FeatureRequest
from survfusion.fileio import canonical_json, sha256_file
from survfusion.limits import MAX_IMPORT_BYTES, MAX_IMPORT_TILES, MAX_IMPORT_WIDTH
from survfusion.slides.geometry import DEFAULT_TOLERANCE

COORD_FIELDS = (
    "x",
    "y",
    "tile_size_resized",
    "tile_level",
    "resize_factor",
    "tile_size_lv0",
    "target_spacing",
)
TILING_FIELDS = ("tile_size_resized", "tile_level", "resize_factor", "tile_size_lv0", "target_spacing")
ORGANISERS_MAX_TILES = 3000  # their baseline's cap on tiles per slide
UNKNOWN_WEIGHTS = "unknown"
SOURCE = "CHIMERA organisers' features"


class ImportedFeaturesError(UserError):
    """An imported pair is not what the format promises."""


@dataclass(frozen=True)
class Pair:
    case_id: str
    pt: Path
    npy: Path


def find_pairs(features: Path, coordinates: Path) -> list[Pair]:
    """Every ``<pid>_HE.pt`` with its ``<pid>_HE.npy``; a ``.pt`` without coordinates is an error."""
    if not features.is_dir():
        raise ImportedFeaturesError(f"import-features: {features} is not a folder of <pid>_HE.pt files")
    pairs = []
    for pt in sorted(features.glob("*.pt")):
        npy = coordinates / f"{pt.stem}.npy"
        if not npy.is_file():
            raise ImportedFeaturesError(f"import-features: {pt.name} has no coordinates {npy}")
        pairs.append(Pair(pt.stem.removesuffix("_HE"), pt, npy))
    if not pairs:
        raise ImportedFeaturesError(f"import-features: {features} holds no .pt file")
    return pairs


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, nothing else read."""
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise ImportedFeaturesError(f"{path.name}: {size:,} bytes exceed the limit of {MAX_IMPORT_BYTES:,}")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy version {version}")
    except (ValueError, OSError) as err:
        raise ImportedFeaturesError(f"{path.name}: not a .npy array ({err})") from None
    if dtype.hasobject:
        raise ImportedFeaturesError(f"{path.name}: holds Python objects (a pickle), not plain numbers")
    missing = [k for k in COORD_FIELDS if dtype.names is None or k not in dtype.names]
    if missing:
        raise ImportedFeaturesError(
            f"{path.name}: coordinates need fields {', '.join(COORD_FIELDS)}; missing {', '.join(missing)}"
        )
    if len(shape) != 1 or fortran:
        raise ImportedFeaturesError(f"{path.name}: coordinates must be one row per tile, got shape {shape}")
    if shape[0] > MAX_IMPORT_TILES:
        raise ImportedFeaturesError(
            f"{path.name}: {shape[0]:,} tiles exceed the limit of {MAX_IMPORT_TILES:,}"
        )
    return shape, dtype


def load_tensor(path: Path, rows: int, width: int) -> np.ndarray:
    """The ``(rows, width)`` float tensor of a ``.pt`` file as float32, checked as the module says."""
    import torch

    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise ImportedFeaturesError(f"{path.name}: {size:,} bytes exceed the limit of {MAX_IMPORT_BYTES:,}")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                stored = sum(i.file_size for i in z.infolist())
        except zipfile.BadZipFile as err:
            raise ImportedFeaturesError(f"{path.name}: damaged archive ({err})") from None
        if stored > MAX_IMPORT_BYTES:
            raise ImportedFeaturesError(
                f"{path.name}: its records unpack to {stored:,} bytes, over {MAX_IMPORT_BYTES:,}"
            )
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ImportedFeaturesError(f"{path.name}: not a plain tensor file ({first})") from None
    if not isinstance(value, torch.Tensor):
        raise ImportedFeaturesError(f"{path.name}: holds a {type(value).__name__}, not a plain (N, D) tensor")
    if value.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ImportedFeaturesError(f"{path.name}: dtype {value.dtype}, expected a float tensor")
    if value.ndim != 2:
        raise ImportedFeaturesError(f"{path.name}: shape {tuple(value.shape)}, expected (tiles, {width})")
    n, d = value.shape
    if n != rows:
        raise ImportedFeaturesError(f"{path.name}: {n} rows but its coordinates have {rows} tiles")
    if d != width:
        raise ImportedFeaturesError(
            f"{path.name}: {d}-d embeddings, but the encoder named embeds to {width}-d"
        )
    x = value.to(torch.float32).numpy()
    if not np.isfinite(x).all():
        raise ImportedFeaturesError(f"{path.name}: holds non-finite values")
    return x


def _tiling(path: Path, coords: np.ndarray) -> dict:
    out = {}
    for k in TILING_FIELDS:
        values = np.unique(coords[k])
        if len(values) > 1:
            raise ImportedFeaturesError(f"{path.name}: {k} varies between tiles ({values[:4].tolist()})")
        out[k] = values[0].item() if len(values) else None
    if (coords["x"] < 0).any() or (coords["y"] < 0).any():
        raise ImportedFeaturesError(f"{path.name}: negative coordinates")
    return out


def import_features(
    features: str | os.PathLike,
    coordinates: str | os.PathLike,
    out: str | os.PathLike,
    *,
    encoder: str,
    weights: str | os.PathLike | None = None,
    precision: str = "fp32",
    min_tissue: float | None = None,
    max_tiles: int | None = ORGANISERS_MAX_TILES,
    progress=None,
) -> FeatureRequest:
    """Convert every pair (``find_pairs``) into ``out/<pid>.h5``; returns their common request."""
    from survfusion.features.encoders import encoder_spec

    if precision not in PRECISIONS:
        raise UserError(f"import-features: --precision must be one of {', '.join(PRECISIONS)}")
    spec = encoder_spec(encoder)
    width = spec.embed_dim
    if width > MAX_IMPORT_WIDTH:
        raise UserError(f"import-features: {encoder} is {width}-d, over the limit of {MAX_IMPORT_WIDTH}")
    features, coordinates, out = Path(features), Path(coordinates), Path(out)
    pairs = find_pairs(features, coordinates)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".import-"))
    try:
        tiling, off_grid, most = None, [], 0
        for pair in pairs:
            (rows,), _ = npy_header(pair.npy)
            x = load_tensor(pair.pt, rows, width)
            coords = np.load(pair.npy, allow_pickle=False)
            here = _tiling(pair.npy, coords)
            if tiling is None:
                tiling = here
            elif rows and here != tiling and tiling.get("tile_size_lv0") is not None:
                raise ImportedFeaturesError(
                    f"{pair.npy.name}: tiling {here} differs from the other files' {tiling}"
                )
            lv0 = int(here["tile_size_lv0"] or 0)
            if lv0 <= 0 and rows:
                raise ImportedFeaturesError(f"{pair.npy.name}: tile_size_lv0 must be positive")
            if rows and ((coords["x"] % lv0).any() or (coords["y"] % lv0).any()):
                off_grid.append(pair.case_id)
            most = max(most, rows)
            attrs = {
                "encoder": spec.name,
                "precision": precision,
                "embed_dim": width,
                "target_spacing_um": float(here["target_spacing"]),
                "tile_px": int(here["tile_size_resized"]),
                "tile_lv0": lv0,
                "imported_from": pair.pt.name,
                "imported_tiling": canonical_json(here).decode(),
                "survfusion_version": survfusion.__version__,
            }
            xy = (
                np.stack([coords["x"], coords["y"]], 1).astype(np.int64)
                if rows
                else np.zeros((0, 2), np.int64)
            )
            write_features(feature_path(staging, pair.case_id), x, xy, attrs)  # the request is added below
            del x, coords
            if progress:
                progress(pair.case_id)
        assert tiling is not None
        unreproduced = []
        if weights is None:
            unreproduced.append(
                "the encoder weights that made them are not named (import-features --encoder-weights)"
            )
        if min_tissue is None:
            unreproduced.append(
                f"the organisers' tissue rule is not published; extract keeps tiles with "
                f">= {DEFAULT_MIN_TISSUE:.0%} "
                "tissue in the mask (import-features --min-tissue states it)"
            )
        if off_grid:
            unreproduced.append(
                f"{len(off_grid)} file(s) (e.g. {off_grid[0]}) have tiles off extract's grid of "
                f"{int(tiling['tile_size_lv0'])} level-0 px from (0, 0)"
            )
        if max_tiles is not None and most >= max_tiles:
            unreproduced.append(
                f"some slides reached the cap of {max_tiles:,} tiles: the organisers chose that "
                "subset by their "
                "rule, extract takes a spatially uniform one"
            )
        request = FeatureRequest(
            encoder=spec.name,
            weights_sha256=sha256_file(weights) if weights else UNKNOWN_WEIGHTS,
            precision=precision,
            target_spacing_um=float(tiling["target_spacing"]),
            tile_px=int(tiling["tile_size_resized"]),
            min_tissue=DEFAULT_MIN_TISSUE if min_tissue is None else float(min_tissue),
            tolerance=DEFAULT_TOLERANCE,
            max_tiles=max_tiles,
            source=f"{SOURCE}: {features.name}/ + {coordinates.name}/",
            unreproduced=tuple(unreproduced),
        )
        import h5py

        for pair in pairs:
            with h5py.File(feature_path(staging, pair.case_id), "r+") as f:
                f.attrs[REQUEST_ATTR] = canonical_json(request.to_dict()).decode()
                f.attrs["weights_sha256"] = request.weights_sha256
        for pair in pairs:
            os.replace(feature_path(staging, pair.case_id), feature_path(out, pair.case_id))
        return request
    finally:
        shutil.rmtree(staging, ignore_errors=True)
