"""Clinical JSON -> 27-vector and RNA JSON -> gene vector, with every repair counted and reported.

Both encoders are fitted on training data, serialise to plain JSON, and ``transform`` one patient at
a time into an ``Encoded`` (the float32 vector plus a list of one-line warnings). Nothing is printed:
the caller decides whether a warning goes to a log, to stderr, or fails the run (``--strict``).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from survfusion.errors import UserError
from survfusion.limits import CLINICAL_RANGES, RNA_ABSOLUTE_MAX, RNA_MAX_FACTOR

# The outcome inside a clinical record (some copies of the release name the time the second way).
LABEL_FIELDS = ("Time_to_prog_or_FUend", "time_to_HG_recur_or_FUend", "progression")

# Valid ranges of the numeric clinical fields, from clinical sense and the training statistics of the
# schema (age 68.9 +- 9.0 years; 19.2 +- 9.3 BCG instillations). A value outside is treated as
# missing (the training mean), with a warning: -5 years or 1e30 instillations are typing errors, and
# standardised they would dominate the risk. Any other numeric field: the training mean +- 10 sd.


def _resource(name: str):
    return json.loads(resources.files("survfusion.resources").joinpath(name).read_text())


def reference_genes() -> list[str]:
    """The 19,359 gene symbols of the CHIMERA RNA files, in the model's (alphabetical) order."""
    return _resource("gene_order.json")


@functools.cache
def _reference_set() -> frozenset[str]:
    return frozenset(reference_genes())


def clinical_schema() -> dict:
    """Fields, categories and training statistics of the CHIMERA clinical JSON."""
    return _resource("clinical_schema.json")


@dataclass(frozen=True)
class Encoded:
    """One patient's model input and what had to be repaired to build it."""

    values: np.ndarray
    warnings: list[str] = field(default_factory=list)


def _as_number(value) -> float | None:
    """A finite float from a number or a numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return out if math.isfinite(out) else None


def _short(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: a warning quotes a value, never a whole file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_category(value) -> str | None:
    """Categories arrive as strings ("-1", "Yes"); accept ints (-1) and floats (-1.0) as their string."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and float(value).is_integer():
        return str(int(value))
    return None


class ClinicalEncoder:
    """Numeric fields standardised with training statistics, categorical fields one-hot.

    Output order: the numeric fields (schema order), then each categorical field's categories (schema
    order, categories as listed, i.e. sorted). With the CHIMERA schema that is 2 + 25 = 27 inputs.
    Repairs: a missing or non-numeric numeric field takes the training mean (0 after standardising);
    a missing or unknown category encodes as all zeros; label fields and unknown fields are ignored.
    """

    def __init__(self, numeric: Mapping[str, tuple[float, float]], categorical: Mapping[str, Sequence[str]]):
        self.numeric = {k: (float(m), float(s)) for k, (m, s) in numeric.items()}
        self.categorical = {k: list(v) for k, v in categorical.items()}
        for name, (_, std) in self.numeric.items():
            if not std > 0:
                raise UserError(f"clinical: field {name!r} has standard deviation {std}; cannot standardise")

    @property
    def dim(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.categorical.values())

    @property
    def feature_names(self) -> list[str]:
        return [*self.numeric, *(f"{k}={c}" for k, cats in self.categorical.items() for c in cats)]

    @classmethod
    def fit(cls, records: Iterable[Mapping], *, schema: Mapping | None = None) -> ClinicalEncoder:
        """Training means and (population) standard deviations; categories from the schema."""
        schema = schema or clinical_schema()
        records = list(records)
        if not records:
            raise UserError("clinical: no training records to fit on")
        numeric = {}
        for name in schema["numeric"]:
            vals = np.array([v for r in records if (v := _as_number(r.get(name))) is not None])
            if vals.size == 0:
                raise UserError(f"clinical: numeric field {name!r} has no usable value in the training set")
            numeric[name] = (float(vals.mean()), float(vals.std()) or 1.0)
        return cls(numeric, schema["categorical"])

    def transform(self, record: Mapping) -> Encoded:
        if not isinstance(record, Mapping):
            raise UserError(f"clinical: expected a JSON object, got {type(record).__name__}")
        out = np.zeros(self.dim, dtype=np.float32)
        warnings: list[str] = []
        for i, (name, (mean, std)) in enumerate(self.numeric.items()):
            value = _as_number(record.get(name))
            low, high = CLINICAL_RANGES.get(name, (mean - 10 * std, mean + 10 * std))
            if value is None:
                why = "missing" if name not in record else f"not a number ({_short(record[name])})"
                warnings.append(f"clinical: {name} {why}; using the training mean {mean:.4g}")
                value = mean
            elif not low <= value <= high:
                warnings.append(
                    f"clinical: {name}={value:.6g} outside its valid range [{low:g}, {high:g}]; "
                    f"using the training mean {mean:.4g}"
                )
                value = mean
            out[i] = (value - mean) / std
        offset = len(self.numeric)
        for name, cats in self.categorical.items():
            category = _as_category(record.get(name))
            if name not in record:
                warnings.append(f"clinical: {name} missing; encoded as all zeros")
            elif category not in cats:
                warnings.append(
                    f"clinical: {name}={_short(record[name])} is not a known category "
                    f"({', '.join(cats)}); encoded as all zeros"
                )
            else:
                out[offset + cats.index(category)] = 1.0
            offset += len(cats)
        labels = [k for k in LABEL_FIELDS if k in record]
        if labels:
            warnings.append(f"clinical: label field(s) ignored, never model inputs: {', '.join(labels)}")
        unknown = sorted(set(record) - set(self.numeric) - set(self.categorical) - set(LABEL_FIELDS))
        if unknown:
            warnings.append(f"clinical: {len(unknown)} unknown field(s) ignored: {', '.join(unknown)}")
        return Encoded(out, warnings)

    def to_dict(self) -> dict:
        # Lists, not mappings: the input order is the model's contract, and JSON writers may sort keys.
        return {
            "numeric": [{"field": k, "mean": m, "std": s} for k, (m, s) in self.numeric.items()],
            "categorical": [{"field": k, "categories": cats} for k, cats in self.categorical.items()],
            "feature_names": self.feature_names,
            "ignored_label_fields": list(LABEL_FIELDS),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ClinicalEncoder:
        try:
            numeric = {v["field"]: (v["mean"], v["std"]) for v in d["numeric"]}
            encoder = cls(numeric, {v["field"]: v["categories"] for v in d["categorical"]})
        except (KeyError, TypeError, AttributeError) as err:
            raise UserError(f"clinical encoder: malformed description ({err!r})") from None
        if "feature_names" in d and d["feature_names"] != encoder.feature_names:
            raise UserError("clinical encoder: the stored feature order does not match its fields")
        return encoder


class RnaVectorizer:
    """Gene-symbol -> expression object into a fixed-order vector.

    Repairs, each kind counted in one warning line: a missing gene, or a value that is not a finite
    number, becomes 0; a negative value becomes 0 (DESeq2-normalised expression is never negative); a
    value above ``RNA_MAX_FACTOR`` (100) times the gene's largest training value (``train_max``; at
    least 1) is clipped to that bound, or above ``RNA_ABSOLUTE_MAX`` when the vectorizer has no
    training maxima (bundles from before they were stored); genes outside the order are ignored.
    ``log1p`` (off by default, as in the paper) applies ``log(1 + x)`` after the repairs.

    ``projection`` (an option, fitted on the training patients by ``survfusion.training.design``):
    the gene vector ``x`` (after ``log1p``) becomes ``k`` principal-component scores
    ``z = components @ ((x - center) / scale)``, ``components`` ``(k, G)``, so ``dim`` is ``k``.
    """

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        *,
        log1p: bool = False,
        train_max: Sequence[float] | np.ndarray | None = None,
        projection: Mapping | None = None,
    ) -> None:
        self.genes = list(reference_genes() if genes is None else genes)
        if len(set(self.genes)) != len(self.genes):
            raise UserError("RNA: the gene order contains duplicates")
        self.log1p = bool(log1p)
        self._index = {g: i for i, g in enumerate(self.genes)}
        self.train_max = None if train_max is None else np.asarray(train_max, dtype=np.float64)
        if self.train_max is not None and (
            self.train_max.shape != (len(self.genes),) or not np.isfinite(self.train_max).all()
        ):
            raise UserError(f"RNA: train_max must be {len(self.genes)} finite numbers")
        self._bound = (
            np.full(len(self.genes), RNA_ABSOLUTE_MAX)
            if self.train_max is None
            else RNA_MAX_FACTOR * np.maximum(self.train_max, 1.0)
        )
        self.projection = None if projection is None else _check_projection(projection, len(self.genes))

    def with_train_max(self, raw: np.ndarray) -> RnaVectorizer:
        """This vectorizer with the per-gene maxima of ``raw`` (training rows x this order's genes)."""
        return RnaVectorizer(
            self.genes, log1p=self.log1p, train_max=np.asarray(raw, np.float64).max(axis=0),
            projection=self.projection,
        )  # fmt: skip

    def with_projection(self, projection: Mapping | None) -> RnaVectorizer:
        """This vectorizer followed by ``projection`` (``center``, ``scale``, ``components``)."""
        return RnaVectorizer(self.genes, log1p=self.log1p, train_max=self.train_max, projection=projection)

    @property
    def dim(self) -> int:
        return len(self.genes) if self.projection is None else len(self.projection["components"])

    def transform(self, expression: Mapping) -> Encoded:
        out, warnings, extra = self._repaired(expression)
        too_large = out > self._bound
        if too_large.any():
            basis = "100x the gene's largest training value" if self.train_max is not None else "1e7"
            warnings.append(f"RNA: {int(too_large.sum())} values above {basis}; clipped to that bound")
        return Encoded(self.finish(out[None])[0].astype(np.float32), warnings + extra)

    def repaired(self, expression: Mapping) -> tuple[np.ndarray, list[str]]:
        """The gene vector ``(G,)`` float64 before ``finish`` (missing, non-numeric and negative
        values set to 0) and a warning for each kind of repair."""
        out, warnings, extra = self._repaired(expression)
        return out, warnings + extra

    def _repaired(self, expression: Mapping) -> tuple[np.ndarray, list[str], list[str]]:
        if not isinstance(expression, Mapping):
            raise UserError(f"RNA: expected a JSON object gene -> value, got {type(expression).__name__}")
        n = len(self.genes)
        out = np.zeros(n, dtype=np.float64)
        found = bad = extra = negative = 0
        reference = _reference_set()
        for gene, value in expression.items():
            i = self._index.get(gene)
            if i is None:
                # A gene of the CHIMERA order that this model does not use (rna_top_genes) is expected.
                extra += gene not in reference
                continue
            found += 1
            number = _as_number(value)
            if number is None:
                bad += 1
                continue
            if number < 0:
                negative += 1
                number = 0.0
            out[i] = number
        warnings = []
        if found < n:
            warnings.append(
                f"RNA: {n - found} of {n} genes missing ({100 * (n - found) / n:.1f}%); filled with 0"
            )
        if bad:
            warnings.append(f"RNA: {bad} of {n} values not finite numbers (NaN, inf, text); set to 0")
        if negative:
            warnings.append(f"RNA: {negative} negative values set to 0 (normalised expression is >= 0)")
        ignored = [f"RNA: {extra} genes not in the CHIMERA gene order; ignored"] if extra else []
        return out, warnings, ignored

    def finish(self, repaired: np.ndarray) -> np.ndarray:
        """Repaired gene rows ``(P, G)`` -> model inputs ``(P, dim)`` float64: each value clipped to
        its bound, then ``log1p`` and the ``projection`` where set. ``transform`` is ``repaired``
        then ``finish``; a cohort's training matrix is made by the same two steps."""
        out = np.minimum(np.asarray(repaired, np.float64), self._bound)
        if self.log1p:
            out = np.log1p(out)
        if self.projection is not None:
            p = self.projection
            out = ((out - p["center"]) / p["scale"]) @ p["components"].T
        return out

    def usable_genes(self, expression: Mapping) -> int:
        """How many genes of the order carry a finite number (0 = the RNA input is unusable)."""
        return sum(1 for g, v in expression.items() if g in self._index and _as_number(v) is not None)

    def to_dict(self) -> dict:
        out = {"log1p": self.log1p, "genes": self.genes}
        if self.train_max is not None:
            out["train_max"] = self.train_max.tolist()
        if self.projection is not None:
            out["projection"] = {k: v.tolist() for k, v in self.projection.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> RnaVectorizer:
        try:
            return cls(
                d["genes"], log1p=d["log1p"], train_max=d.get("train_max"), projection=d.get("projection")
            )
        except (KeyError, TypeError) as err:
            raise UserError(f"RNA vectorizer: malformed description ({err!r})") from None


def _check_projection(p: Mapping, n_genes: int) -> dict[str, np.ndarray]:
    """``center`` and ``scale`` ``(G,)`` (scale > 0), ``components`` ``(k, G)``, all finite."""
    try:
        out = {k: np.asarray(p[k], np.float64) for k in ("center", "scale", "components")}
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"RNA projection: malformed ({err!r})") from None
    c = out["components"]
    if (
        out["center"].shape != (n_genes,)
        or out["scale"].shape != (n_genes,)
        or c.ndim != 2
        or c.shape[1] != n_genes
        or not 1 <= c.shape[0] <= n_genes
        or not all(np.isfinite(v).all() for v in out.values())
        or not (out["scale"] > 0).all()
    ):
        raise UserError(
            f"RNA projection: expected center, scale ({n_genes},) > 0 and components (k, {n_genes})"
        )
    return out
