"""One case, end to end: slide -> tiles -> encoder -> model -> months, with per-modality fallbacks.

Rules (README, "Bad or missing input"): a modality whose *input* is missing or unusable (a
``UserError``, or an ``OSError`` reading its file) is replaced by its training-mean embedding, with
one warning that says what and why; the case fails only when no modality is usable. ``strict`` turns
every such warning into a failure. Faults of the device or the program (CUDA errors, out of memory,
non-finite embeddings in fp32, bugs) are never taken for a bad input: they propagate and the job
fails. Faults the encoder worked around (a smaller batch after CUDA out of memory, an fp32 recompute)
are logged as warnings but are not input problems, so ``strict`` does not fail on them.

The model directory is ``survfusion.serving.modeldir``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from survfusion.errors import UserError
from survfusion.features.extract import embed_slide
from survfusion.fileio import read_json
from survfusion.serving.modeldir import Model
from survfusion.serving.sockets import CaseFiles


class StrictModeError(UserError):
    """A fallback happened while --strict was set."""


@dataclass
class Prediction:
    months: float
    risk: float
    replaced: dict[str, str] = field(default_factory=dict)  # modality -> why it was replaced
    warnings: list[str] = field(default_factory=list)
    # what the risk was computed from (bag, coords, tile_lv0, clinical, rna): for an opt-in explanation
    inputs: dict = field(default_factory=dict, repr=False)


Log = Callable[[str], None]


def _read_json(path: Path | None, what: str, case: _Case):
    """The file's JSON value (``fileio.read_json``: bounded size, depth and numbers); a key repeated
    within the object keeps its first value, with a warning that counts them."""
    if path is None:
        raise UserError(f"no {what} file")
    doc = read_json(path, what)
    if doc.duplicate_keys:
        case.warn(
            f"{what}: {doc.duplicate_keys} repeated key(s) (e.g. {', '.join(doc.duplicate_examples)}); "
            "the first value of each was used"
        )
    return doc.value


class _Case:
    """Collects each modality's input or the reason it is unusable, and every warning."""

    def __init__(self, strict: bool, warn: Log) -> None:
        self.strict, self._warn = strict, warn
        self.replaced: dict[str, str] = {}
        self.warnings: list[str] = []
        self.tiles: tuple[np.ndarray, int] = (np.zeros((0, 2), np.int64), 0)  # coords, tile side (level 0)

    def warn(self, message: str) -> None:
        """An input problem worked around: fails under --strict."""
        if self.strict:
            raise StrictModeError(f"--strict: {message}")
        self.note(message)

    def note(self, message: str) -> None:
        """Something the log must show that is not an input problem (--strict does not fail on it)."""
        self.warnings.append(message)
        self._warn(message)


def _histology(files: CaseFiles, model: Model, case: _Case, log: Log):
    if files.wsi is None:
        raise UserError("no WSI file")
    t0 = time.perf_counter()
    try:
        res = embed_slide(files.wsi, files.mask, model.encoder, model.extract)
    except (UserError, OSError) as err:  # the input's fault only: see the module docstring
        raise UserError(
            f"WSI {files.wsi.name} unreadable ({str(err).splitlines()[0] if str(err) else err!r})"
        ) from None
    for note in res.notes:
        case.note(note)
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
    case.tiles = (res.coords_lv0, int(res.attrs["tile_lv0"]))
    return torch.from_numpy(res.features)[None]


def _rna(files: CaseFiles, model: Model, case: _Case):
    expression = _read_json(files.rna, "RNA", case)
    if not isinstance(expression, dict):
        raise UserError(f"RNA file is a JSON {type(expression).__name__}, not an object gene -> value")
    members = model.bundle.members
    if any(m.rna.usable_genes(expression) == 0 for m in members):
        raise UserError("RNA file has no usable gene (no known symbol with a finite value)")
    _warn_once([m.rna.transform(expression).warnings for m in members], case)
    return expression


def _clinical(files: CaseFiles, model: Model, case: _Case):
    record = _read_json(files.clinical, "clinical", case)
    if not isinstance(record, dict):
        raise UserError(f"clinical file is a JSON {type(record).__name__}, not an object")
    _warn_once([m.clinical.transform(record).warnings for m in model.bundle.members], case)
    return record


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def merge_member_warnings(per_member: list[list[str]]) -> list[str]:
    """One line per problem for all members of a bundle. Each member preprocesses the input with its
    own training statistics, so the same problem can carry different counts (``145 values above``,
    ``152 values above``): lines that differ only in their numbers are one problem, said once with
    each differing number as a range (``145-152``), and ``(k of K members)`` when not all have it."""
    groups: dict[str, list[list[str]]] = {}
    for warnings in per_member:
        for w in dict.fromkeys(warnings):
            groups.setdefault(_NUMBER.sub("#", w), []).append(_NUMBER.findall(w))
    merged = []
    for template, numbers in groups.items():
        parts = template.split("#")
        line = parts[0]
        for i, part in enumerate(parts[1:]):
            values = sorted({n[i] for n in numbers}, key=float)
            line += (values[0] if len(values) == 1 else f"{values[0]}-{values[-1]}") + part
        if len(per_member) > 1 and len(numbers) < len(per_member):
            line += f" ({len(numbers)} of {len(per_member)} members)"
        merged.append(line)
    return merged


def _warn_once(per_member: list[list[str]], case: _Case) -> None:
    """Each problem of the members' preprocessing once (``merge_member_warnings``)."""
    for w in merge_member_warnings(per_member):
        case.warn(w)


def predict_case(
    files: CaseFiles, model: Model, *, strict: bool = False, log: Log = print, warn: Log = print
) -> Prediction:
    case = _Case(strict, warn)
    for message in files.warnings:  # which file was taken, or refused, is an input problem too
        case.warn(message)
    if (note := model.precision_note()) is not None:
        case.note(note)
    inputs: dict = {}
    stages: dict[str, Callable[[], object]] = {
        "hist": lambda: _histology(files, model, case, log),
        "rna": lambda: _rna(files, model, case),
        "clinical": lambda: _clinical(files, model, case),
    }
    if not any("hist" in m.model.uses for m in model.bundle.members):
        del stages["hist"]  # a model that does not look at the slide (LinearCox): no minutes of UNI
        log("slide    not used by this model; not embedded")
    for name, stage in stages.items():
        try:
            inputs[name] = stage()
        except StrictModeError:
            raise
        except UserError as err:
            case.replaced[name] = str(err)
    # The encoder's sha256 is computed in the background while the model loads and the slide is
    # embedded (1.2 GB for UNI: about a second); checked before any number leaves this function.
    model.check_encoder()
    if set(stages) <= set(case.replaced):  # every modality the model uses is unusable
        raise UserError("no prediction possible: " + "; ".join(case.replaced.values()))
    t0 = time.perf_counter()
    risk = _risk(model, inputs, case)
    members = len(model.bundle.members)
    log(
        f"model    {time.perf_counter() - t0:7.2f} s  {model.bundle.model_name}, "
        f"{members} member{'s' * (members > 1)}, risk {risk:.4f}"
    )
    t0 = time.perf_counter()
    months = float(model.bundle.months(np.array([risk]))[0])
    log(f"calibrate{time.perf_counter() - t0:7.2f} s  {model.bundle.calibration.mode}: {months:.2f} months")
    feat_dim = model.bundle.members[0].model.dims.feat_dim
    coords, tile_lv0 = case.tiles
    used = {
        "bag": inputs["hist"][0] if "hist" in inputs else torch.zeros(0, feat_dim),
        "coords": coords, "tile_lv0": tile_lv0, "clinical": inputs.get("clinical", {}),
        "rna": inputs.get("rna", {}), "replaced": tuple(case.replaced),
    }  # fmt: skip
    return Prediction(months, risk, case.replaced, case.warnings, used)


def _risk(model: Model, inputs: dict, case: _Case) -> float:
    """The bundle's risk: one forward per member on the one embedded slide (``Bundle.risks``)."""
    bundle = model.bundle
    for name, why in case.replaced.items():
        if any(m.embedding_means is None for m in bundle.members):
            raise UserError(f"{why}, and the bundle has no training means to stand in for it")
        case.warn(f"{name} input replaced by its training-mean embedding: {why}")
    feat_dim = bundle.members[0].model.dims.feat_dim
    bag = inputs["hist"][0] if "hist" in inputs else torch.zeros(0, feat_dim)
    clinical, rna = inputs.get("clinical", {}), inputs.get("rna", {})
    return float(bundle.risks([bag], [clinical], [rna], replace=tuple(case.replaced))[0])
