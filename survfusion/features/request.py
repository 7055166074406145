"""What a feature set is, and the settings of an extraction: typed, with their defaults written once.

- ``ExtractConfig``: the settings of one extraction. The tiling ones change the numbers and are the
  CLI's defaults; the runtime ones (batch size, threads) do not.
- ``FeatureRequest``: every setting that changes the numbers of a feature file, the encoder's
  identity and precision included. Stored in each feature file (attribute ``feature_request``), it is
  the cache check, what a cohort's files must share, what a bundle records, and what inference
  rebuilds its extraction from (``ExtractConfig.from_request``).

Light on purpose (no torch, no h5py): the command line reads its defaults from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from survfusion.errors import UserError
from survfusion.slides.geometry import DEFAULT_TARGET_SPACING_UM, DEFAULT_TILE_PX, DEFAULT_TOLERANCE

DEFAULT_MIN_TISSUE = 0.25
# The ExtractConfig settings that change a feature file's numbers: each is also a FeatureRequest field.
TILING_FIELDS = (
    "target_spacing_um",
    "tile_px",
    "min_tissue",
    "tolerance",
    "spacing_override_um",
    "max_tiles",
)


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction: the tiling ones (the defaults of the CLI, recorded in every feature
    file through ``FeatureRequest``) and the runtime ones (batch size, threads: no effect on the numbers).
    """

    target_spacing_um: float = DEFAULT_TARGET_SPACING_UM
    tile_px: int = DEFAULT_TILE_PX
    min_tissue: float = DEFAULT_MIN_TISSUE  # keep tiles with at least this tissue fraction
    tolerance: float = DEFAULT_TOLERANCE
    spacing_override_um: float | None = None  # instead of the slides' own level-0 spacing
    max_tiles: int | None = None  # keep a spatially uniform subset of at most this many tiles
    batch_size: int | None = None  # None: chosen by measurement for the device (encoders.auto_batch_size)
    read_threads: int = 4
    prefetch: int = 2

    @classmethod
    def from_request(cls, request: FeatureRequest, **runtime) -> ExtractConfig:
        """The tiling settings of ``request`` with the given runtime settings (batch size, threads)."""
        return cls(**{name: getattr(request, name) for name in TILING_FIELDS}, **runtime)

    def tiling(self) -> dict:
        """The settings that change the numbers (``TILING_FIELDS``), for a ``FeatureRequest``."""
        return {name: getattr(self, name) for name in TILING_FIELDS}


REQUEST_ATTR = "feature_request"
PRECISIONS = ("fp32", "fp16", "bf16")  # what a feature file records: a precision, resolved
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what a user may ask for
PRECISION_HELP = (
    "encoder precision: auto (fp16 below compute capability 8.0, bf16 from 8.0, fp32 on a CPU), "
    "fp32, fp16, bf16"
)


@dataclass(frozen=True)
class FeatureRequest:
    """Every setting that changes the numbers of a feature file; any difference is another feature set.

    Attributes:
        encoder: tile encoder name (``survfusion.features.encoders.ENCODERS``).
        weights_sha256: sha256 of the encoder weights file the features were made with.
        precision: the precision the encoder ran at, resolved (fp32, fp16 or bf16; never ``auto``).
        target_spacing_um: µm/px of the tiles.
        tile_px: side of a tile at ``target_spacing_um``.
        min_tissue: minimum tissue fraction of a kept tile.
        tolerance: relative spacing difference within which a pyramid level is read as it is.
        spacing_override_um: used instead of the slides' own level-0 spacing (None: the file's).
        max_tiles: a cap on the tiles per slide, a spatially uniform subset (None: every tile).
        source: where features made by another pipeline came from (``import-features``); None for
            this kit's ``extract``.
        unreproduced: what of an imported tiling this kit's extraction (so the container) would not
            reproduce, one reason each; ``package`` refuses a bundle whose features have any, unless
            told to accept them.
    """

    encoder: str
    weights_sha256: str
    precision: str
    target_spacing_um: float
    tile_px: int
    min_tissue: float
    tolerance: float
    spacing_override_um: float | None = None
    max_tiles: int | None = None
    source: str | None = None
    unreproduced: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"feature request: precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict:
        """Every field; ``source`` and ``unreproduced`` only when set, so a request of ``extract``
        reads (and hashes) as it did before imports existed."""
        d = asdict(self)
        d["unreproduced"] = list(self.unreproduced)
        for k in ("source", "unreproduced"):
            if not d[k]:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureRequest:
        """From ``to_dict`` output. Requests recorded before precision was part of them read as fp32
        (what those versions used on a CPU) only when ``d`` says nothing else; missing optional
        fields take their defaults."""
        if not isinstance(d, dict):
            raise UserError(f"feature request: expected an object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"feature request: unknown field(s) {', '.join(unknown)}")
        values = {"tolerance": DEFAULT_TOLERANCE, "precision": "fp32", **d}
        try:
            return cls(
                encoder=str(values["encoder"]),
                weights_sha256=str(values["weights_sha256"]),
                precision=str(values["precision"]),
                target_spacing_um=float(values["target_spacing_um"]),
                tile_px=int(values["tile_px"]),
                min_tissue=float(values["min_tissue"]),
                tolerance=float(values["tolerance"]),
                spacing_override_um=_optional(values.get("spacing_override_um"), float),
                max_tiles=_optional(values.get("max_tiles"), int),
                source=_optional(values.get("source"), str),
                unreproduced=tuple(str(r) for r in values.get("unreproduced") or ()),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"feature request: malformed ({type(err).__name__}: {err})") from None

    @classmethod
    def from_attrs(cls, attrs: dict) -> FeatureRequest | None:
        """The request stored in a feature file's attributes; None for files of other tools
        (CLAM, TRIDENT) or of versions that did not store one."""
        raw = attrs.get(REQUEST_ATTR)
        if raw is None:
            return None
        try:
            return cls.from_dict(json.loads(raw))
        except json.JSONDecodeError as err:
            raise UserError(f"feature request attribute is not JSON ({err})") from None

    def differences(self, other: FeatureRequest) -> list[str]:
        """``field: ours != theirs`` for every field that differs (floats to 1e-9 relative)."""
        a, b = asdict(self), asdict(other)
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if not _same(a[k], b[k])]


def _optional(value, kind):
    return None if value is None else kind(value)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b
