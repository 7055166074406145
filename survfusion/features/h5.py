"""Feature files (HDF5), CLAM/TRIDENT compatible, with the provenance of every number in them.

Layout: ``features`` float32 ``(N, D)``; ``coords`` int64 ``(N, 2)`` = (x, y) level-0 pixels of
each tile's top-left corner; optionally ``tile_class`` int16 ``(N,)``, a label per tile indexing the
comma-separated names of the ``tile_classes`` attribute (synthetic features carry their planted
tissue class; a team may add its annotations), which ``explain`` uses to say whether the
highest-attention tiles are enriched for a class. File attributes record the encoder and its
weights' sha256, the spacing, tile sizes, level read, slide size, tissue threshold and package
version. Readers also take files written by CLAM or TRIDENT (``features`` possibly ``(1, N, D)``,
attributes on ``coords``).

What a feature set *is* (every setting that changes its numbers) is one typed ``FeatureRequest``,
stored in each file as the JSON attribute ``feature_request``. The same object is the cache check,
what the dataset requires all files to share, what a bundle records, and what inference rebuilds its
extraction from. A cached file is reused only when its request equals the new one; otherwise it is
refused with the differences named.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from survfusion.errors import UserError
from survfusion.features.request import FeatureRequest
from survfusion.fileio import make_shareable


class FeatureCacheMismatch(UserError):
    """An existing feature file was made with other settings than requested."""


@dataclass(frozen=True)
class FeatureFile:
    features: np.ndarray
    coords: np.ndarray
    attrs: dict

    @property
    def n_tiles(self) -> int:
        return int(self.features.shape[0])


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


TILE_CLASS = "tile_class"  # optional dataset: a class index per tile
TILE_CLASSES = "tile_classes"  # its names, comma-separated, as a file attribute
MAX_TILE_CLASSES = 256


def feature_path(folder: str | os.PathLike, case_id: str) -> Path:
    """Where a features folder keeps one case's file: ``<folder>/<case_id>.h5`` (every writer and
    reader of a folder goes through here)."""
    return Path(folder) / f"{case_id}.h5"


def write_features(
    path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    attrs: dict,
    tile_class: tuple[list[str], np.ndarray] | None = None,
) -> None:
    """Write atomically (temporary file in the same folder, then rename); ``tile_class`` = (names,
    a class index per tile) for the optional labels of the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if features.ndim != 2 or features.shape[0] != coords.shape[0]:
        raise ValueError(f"features {features.shape} and coords {coords.shape} disagree")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("features", data=features)
            dset = f.create_dataset("coords", data=coords)
            if tile_class is not None:
                names, labels = tile_class
                labels = np.asarray(labels, np.int64)  # checked before the narrowing cast
                fault = _label_fault(labels, len(features), len(names))
                if fault:
                    raise ValueError(f"tile_class: {fault}")
                f.create_dataset(TILE_CLASS, data=labels.astype(np.int16))
                f.attrs[TILE_CLASSES] = ",".join(names)
            for key, value in attrs.items():
                if value is not None:  # HDF5 has no None: an unset option is an absent attribute
                    f.attrs[key] = value
            # CLAM/TRIDENT readers look for these on the coords dataset.
            dset.attrs["patch_size"] = attrs.get("tile_px", 0)
            dset.attrs["patch_size_level0"] = attrs.get("tile_lv0", 0)
            dset.attrs["patch_level"] = attrs.get("level", 0)
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_features(path: str | os.PathLike) -> FeatureFile:
    """Features, coords and attributes from our files or CLAM/TRIDENT ones."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "features" not in f:
                raise UserError(f"feature file {path}: no 'features' dataset (keys: {', '.join(f.keys())})")
            features = np.asarray(f["features"][()], dtype=np.float32)
            coords = np.asarray(f["coords"][()]) if "coords" in f else np.zeros((0, 2), np.int64)
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if "coords" in f:
                attrs.update({f"coords.{k}": _plain(v) for k, v in f["coords"].attrs.items()})
    except OSError as err:
        raise UserError(f"feature file {path}: not readable HDF5 ({err})") from None
    if features.ndim == 3 and features.shape[0] == 1:  # some tools store (1, N, D)
        features = features[0]
    if features.ndim != 2:
        raise UserError(f"feature file {path}: features must be (N, D), got {features.shape}")
    coords = coords.reshape(-1, 2).astype(np.int64) if coords.size else np.zeros((len(features), 2), np.int64)
    if len(coords) != len(features):
        raise UserError(f"feature file {path}: {len(features)} features but {len(coords)} coords")
    return FeatureFile(features, coords, attrs)


def read_tile_classes(path: str | os.PathLike) -> tuple[list[str], np.ndarray] | None:
    """(class names, a class index per tile) of a feature file, or None when it has no labels;
    labels that disagree with the file's tiles or names are a one-line error."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        if TILE_CLASS not in f:
            return None
        d = f[TILE_CLASS]
        n = f["features"].shape[-2]
        names = str(_plain(f.attrs.get(TILE_CLASSES, ""))).split(",")
        if d.shape != (n,) or d.dtype.kind not in "iu" or not 1 <= len(names) <= MAX_TILE_CLASSES:
            raise UserError(
                f"feature file {path}: {TILE_CLASS} must be {n} integer labels with 1..{MAX_TILE_CLASSES} "
                f"names in '{TILE_CLASSES}', got {d.shape} {d.dtype} and {len(names)} names"
            )
        labels = np.asarray(d[()], np.int64)
    fault = _label_fault(labels, n, len(names))
    if fault:
        raise UserError(f"feature file {path}: {TILE_CLASS}: {fault}")
    return names, labels


def _label_fault(labels: np.ndarray, tiles: int, n_names: int) -> str | None:
    """What is wrong with per-tile class labels (None: nothing): the one rule the writer and the
    reader both hold."""
    if labels.shape != (tiles,):
        return f"{labels.shape} labels for {tiles} tiles"
    if labels.size and (labels.min() < 0 or labels.max() >= n_names):
        return f"labels outside 0..{n_names - 1}"
    return None


def cache_matches(path: str | os.PathLike, request: FeatureRequest) -> bool:
    """False if ``path`` does not exist; True if it was made with the same request; otherwise raises."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        with h5py.File(path, "r") as f:
            have = FeatureRequest.from_attrs({k: _plain(v) for k, v in f.attrs.items()})
    except (OSError, UserError) as err:
        raise FeatureCacheMismatch(f"feature file {path}: unreadable ({err}); delete it") from None
    if have is None:
        raise FeatureCacheMismatch(
            f"feature file {path} records no feature request (another tool or an older version); "
            "delete it or write to another --out"
        )
    diffs = have.differences(request)
    if diffs:
        raise FeatureCacheMismatch(
            f"feature file {path} was made with other settings (file vs requested: {'; '.join(diffs)}); "
            "delete it or write to another --out"
        )
    return True
