"""Synthetic worlds with a known answer: where a cohort's planted log-hazard comes from.

Each world writes the log-hazard of patient ``i`` as a sum of named **terms** plus noise,
``eta_i = sum_t term_t(i) + N(0, NOISE_SD^2)``. A term reads one or two modalities (``TERM_SEES``),
so the oracle can say what a model that saw exactly those modalities could reach: the C-index of
the noise-free log-hazard, of each term alone, and of the terms each modality set sees
(``oracle_summary``). No model can know the noise, so the noise-free figure is the ceiling that
matters; the figure with the noise (``oracle_c_index``, as before) is only a description of the draw.

The worlds test the kit; they are not tuned to it. Their coefficients were fixed when they were
written, before any method was run on them, from two rules: each is plausible as a clinical effect
(a hazard ratio of at most ~4.5 per category, ~1.3-1.4 per 10 percentage points of a tissue class),
and the world's named modality carries most of the noise-free variance. The tissue fractions come
from one Dirichlet(1.5, 2.0, 1.0, 0.8) over tumour, stroma, lymphocytes, necrosis (means 0.28,
0.38, 0.19, 0.15; the tumour fraction has sd 0.18), the programme ``g`` is N(0, 1), and the noise
sd is 0.5 in every world.

- ``default``: today's world (unchanged since issue 6): a little tissue, a gene programme, their
  interaction, five clinical categories, a cohort shift.
- ``histology``: most of the signal in the tissue mix (tumour up, lymphocytes down, necrosis up).
- ``needle``: a rare fifth tile class (``budding``: small dense dark clusters) in ``NEEDLE_SHARE``
  of the patients, 3-8 % of their tiles, with a strong effect (hazard ratio e^1.5 = 4.5) whatever
  its share: averaging 64 tiles dilutes it ~20-fold, attention over tiles need not.
- ``clinical``: the clinical fields dominate (stage, grade, LVI, EORTC, BRS, variant, age).
- ``null``: no signal at all; only the noise orders the events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NOISE_SD = 0.5
NEEDLE_SHARE = 0.35  # of the patients carry the needle class (needle world only)
NEEDLE_FRACTION = (0.03, 0.08)  # of a carrier's tiles, uniform
# Which modalities each term needs to be known exactly ("cohort": the 3A/3B shift, visible in the
# slides' stain and in the RNA, not in the clinical JSON).
TERM_SEES = {
    "tissue": ("hist",),
    "needle": ("hist",),
    "rna": ("rna",),
    "cross": ("hist", "rna"),
    "clinical": ("clinical",),
    "cohort": ("hist", "rna"),
}
# The modality sets whose oracle oracle.json reports: a model that saw these and knew the terms.
SEEN_SETS = {
    "hist": ("hist",),
    "rna": ("rna",),
    "clinical": ("clinical",),
    "clinical+rna": ("clinical", "rna"),
    "clinical+rna+hist": ("clinical", "rna", "hist"),
}


@dataclass(frozen=True)
class Inputs:
    """What a term may read of one patient: tissue fractions (tumour, stroma, lymphocytes,
    necrosis, budding), the programme, the clinical record, the cohort."""

    mix: np.ndarray
    g: float
    rec: dict
    cohort: str


def _clinical_default(x: Inputs) -> float:
    r = x.rec
    return (0.4 * (r["stage"] == "T1HG") + 0.3 * (r["grade"] == "G3")) + (
        0.4 * (r["BRS"] == "BRS3") - 0.3 * (r["BRS"] == "BRS1") + 0.3 * (r["EORTC"] == "Highest risk")
    )


def _default(x: Inputs) -> dict[str, float]:
    tumour, lymph = x.mix[0], x.mix[2]
    return {
        "tissue": 1.2 * (tumour - 0.3),
        "rna": 0.6 * x.g,
        "cross": 1.2 * (lymph - 0.15) * x.g,
        "clinical": _clinical_default(x),
        "cohort": -0.3 * (x.cohort == "3B"),
    }


def _histology(x: Inputs) -> dict[str, float]:
    tumour, lymph, necrosis = x.mix[0], x.mix[2], x.mix[3]
    return {
        "tissue": 3.0 * (tumour - 0.3) - 2.5 * (lymph - 0.2) + 2.0 * (necrosis - 0.15),
        "rna": 0.2 * x.g,
        "clinical": 0.2 * (x.rec["stage"] == "T1HG"),
        "cohort": -0.3 * (x.cohort == "3B"),
    }


def _needle(x: Inputs) -> dict[str, float]:
    return {
        "needle": 1.5 * float(x.mix[4] > 0),
        "rna": 0.3 * x.g,
        "clinical": 0.3 * (x.rec["stage"] == "T1HG") + 0.3 * (x.rec["grade"] == "G3"),
        "cohort": -0.3 * (x.cohort == "3B"),
    }


def _clinical(x: Inputs) -> dict[str, float]:
    r = x.rec
    clinical = (
        0.8 * (r["stage"] == "T1HG")
        + 0.6 * (r["grade"] == "G3")
        + 0.7 * (r["LVI"] == "Yes")
        + 0.6 * (r["EORTC"] == "Highest risk")
        + 0.5 * (r["BRS"] == "BRS3")
        - 0.4 * (r["BRS"] == "BRS1")
        + 0.4 * (r["variant"] == "UCC + Variant")
        + 0.03 * (float(r["age"]) - 69.0)
    )
    return {
        "tissue": 0.5 * (x.mix[0] - 0.3),
        "rna": 0.2 * x.g,
        "clinical": clinical,
        "cohort": -0.3 * (x.cohort == "3B"),
    }


def _null(x: Inputs) -> dict[str, float]:
    return {}


@dataclass(frozen=True)
class World:
    name: str
    what: str
    formula: str
    terms: Callable[[Inputs], dict[str, float]]
    needle_share: float = 0.0


WORLDS = {
    w.name: w
    for w in (
        World(
            "default",
            "today's world: a little tissue, a gene programme and its interaction with lymphocytes, "
            "clinical categories, a cohort shift",
            """\
eta_i = 1.2 (tumour_i - 0.3)                 tissue: fraction of tumour-class tiles
      + 0.6 g_i                              a gene program (60 genes scaled by exp(0.8 g))
      + 1.2 (lymph_i - 0.15) g_i             cross-modal: lymphocyte-rich tissue matters with g
      + 0.4 [T1HG] + 0.3 [G3] + 0.4 [BRS3] - 0.3 [BRS1] + 0.3 [Highest risk]
      - 0.3 [cohort 3B]                      cohort shift (3B slides are also stained bluer)
      + N(0, 0.5)                            noise""",
            _default,
        ),
        World(
            "histology",
            "most of the signal in the tissue mix",
            """\
eta_i = 3.0 (tumour_i - 0.3) - 2.5 (lymph_i - 0.2) + 2.0 (necrosis_i - 0.15)   tissue
      + 0.2 g_i + 0.2 [T1HG] - 0.3 [cohort 3B]
      + N(0, 0.5)""",
            _histology,
        ),
        World(
            "needle",
            f"a rare tile class (budding) in {NEEDLE_SHARE:.0%} of the patients, 3-8% of their tiles, "
            "with a strong effect",
            """\
eta_i = 1.5 [budding tiles present]          needle: a rare class, 3-8% of a carrier's tiles
      + 0.3 g_i + 0.3 [T1HG] + 0.3 [G3] - 0.3 [cohort 3B]
      + N(0, 0.5)""",
            _needle,
            needle_share=NEEDLE_SHARE,
        ),
        World(
            "clinical",
            "the clinical fields dominate",
            """\
eta_i = 0.8 [T1HG] + 0.6 [G3] + 0.7 [LVI] + 0.6 [Highest risk] + 0.5 [BRS3] - 0.4 [BRS1]
      + 0.4 [UCC + Variant] + 0.03 (age - 69)                                   clinical
      + 0.5 (tumour_i - 0.3) + 0.2 g_i - 0.3 [cohort 3B]
      + N(0, 0.5)""",
            _clinical,
        ),
        World("null", "no signal at all: the noise alone orders the events", "eta_i = N(0, 0.5)", _null),
    )
}


def world(name: str) -> World:
    from survfusion.errors import UserError

    if name not in WORLDS:
        raise UserError(f"synth: unknown world {name!r}; valid: {', '.join(WORLDS)}")
    return WORLDS[name]


def oracle_summary(time: np.ndarray, event: np.ndarray, terms: list[dict[str, float]]) -> dict:
    """C-index of the noise-free log-hazard, of each term alone, and of the terms each modality set
    in ``SEEN_SETS`` sees (a term is seen when every modality it needs is in the set)."""
    from survfusion.nets.survival import concordance_index

    names = sorted({k for t in terms for k in t})
    table = {k: np.array([t.get(k, 0.0) for t in terms]) for k in names}
    total = sum(table.values(), np.zeros(len(terms)))
    seen = {}
    for label, mods in SEEN_SETS.items():
        parts = [table[k] for k in names if set(TERM_SEES[k]) <= set(mods)]
        seen[label] = concordance_index(time, event, sum(parts, np.zeros(len(terms))))
    return {
        "noise_free_c_index": concordance_index(time, event, total),
        "terms_c_index": {k: concordance_index(time, event, v) for k, v in table.items()},
        "seen_c_index": seen,
        "terms_sd": {k: float(v.std()) for k, v in table.items()},
    }
