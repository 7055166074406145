"""A synthetic CHIMERA Task 3 cohort in the real file formats, with a known planted signal.

``write_cohort(out, patients=176, seed=0)`` writes the cohort layout (see ``survfusion.training.cohort``):
pyramidal JPEG TIFFs at 0.25 µm/px, binary masks at 1/16 of the slide's resolution (0/255 or 0/1),
RNA JSON over the 19,359 real gene symbols with DESeq2-like magnitudes, clinical JSON with the
schema's fields and categories (label fields included, as in the real files), ``outcomes.csv``,
and the oracle (``oracle.csv``, ``oracle.json``).

The planted log-hazard of patient i is its world's formula (``survfusion.synth.worlds``: ``default``,
``histology``, ``needle``, ``clinical``, ``null``), a sum of named terms plus noise, all written to
oracle.csv per patient and summarised in oracle.json (the noise-free C-index and each term's).

Times follow a Weibull proportional-hazards model, ``S(t) = exp(-(t / lam)^0.6 exp(eta))`` (events
early), censored by a uniform follow-up over 5-200 months, with ``lam`` solved so that the event rate
is 0.36 as in the real cohort.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from survfusion.errors import UserError
from survfusion.serving.preprocess import clinical_schema, reference_genes
from survfusion.serving.sockets import (
    CLINICAL_FILE,
    CLINICAL_SLUG,
    MASK_DIR,
    MASK_SLUG,
    RNA_FILE,
    RNA_SLUG,
    WSI_DIR,
    WSI_SLUG,
)
from survfusion.slides.tiffwrite import write_mask, write_pyramid
from survfusion.synth.release import LAYOUTS, case_paths, write_qc_csv
from survfusion.synth.worlds import NEEDLE_FRACTION, NOISE_SD, Inputs, oracle_summary
from survfusion.synth.worlds import world as world_spec
from survfusion.training.cohort import (
    ORACLE_FILE,
    OUTCOMES_FILE,
)
from survfusion.training.dataset import NOISE_FREE

SPACING_UM = 0.25
CELL_PX = 896  # one 224-px tile at 1.0 µm/px: tissue classes come in grid-aligned cells
MASK_DOWNSAMPLE = 16
# The fifth class (budding) is drawn in the needle world only; elsewhere its fraction is 0.
CLASSES = ("tumour", "stroma", "lymphocytes", "necrosis", "budding")
N_PROGRAM_GENES = 60
EVENT_RATE = 0.36
WEIBULL_SHAPE = 0.6


@dataclass(frozen=True)
class Patient:
    case_id: str
    cohort: str
    mix: np.ndarray  # fraction of each tissue class (CLASSES)
    program: float
    clinical: dict
    log_hazard: float  # the sum of ``terms`` and the noise
    terms: dict[str, float]  # the world's named terms (survfusion.synth.worlds), without the noise
    time_months: float
    event: bool
    seed: int


def _clinical(rng: np.random.Generator) -> dict:
    def pick(values, p):
        return str(rng.choice(values, p=p))

    stage = pick(["T1HG", "TaHG"], [0.6, 0.4])
    rec = {
        "age": str(int(np.clip(rng.normal(69, 9), 35, 95))),
        "sex": pick(["Male", "Female"], [0.8, 0.2]),
        "smoking": pick(["-1", "No", "Yes"], [0.3, 0.3, 0.4]),
        "tumor": "Primary",
        "stage": stage,
        "substage": pick(["T1e", "T1m", "-1"], [0.45, 0.45, 0.1]) if stage == "T1HG" else "-1",
        "grade": pick(["G3", "G2"], [0.7, 0.3]),
        "reTUR": pick(["Yes", "No"], [0.5, 0.5]),
        "LVI": pick(["-1", "No", "Yes"], [0.3, 0.6, 0.1]),
        "variant": pick(["UCC", "UCC + Variant"], [0.85, 0.15]),
        "EORTC": pick(["High risk", "Highest risk"], [0.6, 0.4]),
        "no_instillations": str(int(np.clip(rng.normal(19, 9), 0, 40))),
        "BRS": pick(["BRS1", "BRS2", "BRS3"], [0.3, 0.4, 0.3]),
    }
    schema = clinical_schema()["categorical"]
    assert all(rec[k] in cats for k, cats in schema.items())  # the generator stays inside the schema
    return rec


def _outcomes(eta: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Weibull PH event times with a scale solved for the target event rate; uniform follow-up."""
    e = rng.exponential(size=eta.size)
    follow_up = rng.uniform(5.0, 200.0, eta.size)
    base = (e * np.exp(-eta)) ** (1.0 / WEIBULL_SHAPE)  # event time for scale lam = 1

    def rate(log_lam):
        return np.mean(np.exp(log_lam) * base <= follow_up)

    lo, hi = -10.0, 15.0
    for _ in range(80):  # bisection: the event rate falls as the scale grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate(mid) > EVENT_RATE else (lo, mid)
    event_time = np.exp((lo + hi) / 2) * base
    event = event_time <= follow_up
    time = np.round(np.maximum(np.where(event, event_time, follow_up), 1.0), 1)
    return time, event


def _with_needle(mixes: np.ndarray, share: float, seed: int) -> np.ndarray:
    """The tissue mixes with the budding class appended: 0 for everyone, or (needle world) a
    fraction ``NEEDLE_FRACTION`` of the tiles of a ``share`` of the patients, taken evenly from the
    other classes. Its own random stream, so the other draws of a seed stay as they were."""
    out = np.concatenate([mixes, np.zeros((len(mixes), 1))], axis=1)
    if share > 0:
        rng = np.random.default_rng([seed, 7])
        carrier = rng.random(len(mixes)) < share
        frac = rng.uniform(*NEEDLE_FRACTION, len(mixes))
        out[carrier, :4] *= (1 - frac[carrier])[:, None]
        out[carrier, 4] = frac[carrier]
    return out


def make_patients(n: int, seed: int, world: str = "default") -> list[Patient]:
    """Patients with ids like 3A_001 / 3B_001 in the real cohort's proportion (125 : 51), their
    log-hazard from ``world`` (``survfusion.synth.worlds``)."""
    spec = world_spec(world)
    rng = np.random.default_rng(seed)
    n_3a = round(n * 125 / 176) if n > 1 else 1
    ids = [("3A", f"3A_{i + 1:03d}") for i in range(n_3a)] + [
        ("3B", f"3B_{i + 1:03d}") for i in range(n - n_3a)
    ]
    mixes = _with_needle(rng.dirichlet([1.5, 2.0, 1.0, 0.8], size=n), spec.needle_share, seed)
    programs = rng.normal(size=n)
    records = [_clinical(rng) for _ in range(n)]
    terms = [
        spec.terms(Inputs(m, g, r, c)) for m, g, r, (c, _) in zip(mixes, programs, records, ids, strict=True)
    ]
    eta = np.array([float(sum(t.values(), 0.0)) for t in terms])
    eta += rng.normal(0.0, NOISE_SD, n)
    time, event = _outcomes(eta, rng)
    seeds = rng.integers(0, 2**31, n)
    return [
        Patient(
            cid,
            c,
            mixes[i],
            float(programs[i]),
            records[i],
            float(eta[i]),
            {k: float(v) for k, v in terms[i].items()},
            float(time[i]),
            bool(event[i]),
            int(seeds[i]),
        )
        for i, (c, cid) in enumerate(ids)
    ]


def _swatch(cls: int, rng: np.random.Generator, stain: np.ndarray) -> np.ndarray:
    """One CELL_PX square of a tissue class: colour, nuclei-like dots, fibres, noise."""
    yy, xx = np.mgrid[0:CELL_PX, 0:CELL_PX].astype(np.float32)
    base, dots, fibre, noise = [
        ((110, 55, 150), 0.012, 0.0, 14),  # tumour: purple, dense large nuclei
        ((225, 150, 185), 0.002, 25.0, 8),  # stroma: pink with fibres
        ((200, 120, 175), 0.03, 0.0, 10),  # lymphocytes: pink with many small dark dots
        ((215, 190, 195), 0.0, 0.0, 20),  # necrosis: pale, mottled
        ((80, 35, 120), 0.05, 0.0, 12),  # budding: dark blue-purple, packed with nuclei
    ][cls]
    img = np.empty((CELL_PX, CELL_PX, 3), np.float32)
    img[:] = np.asarray(base, np.float32) * stain
    if fibre:
        angle = rng.uniform(0, np.pi)
        img += fibre * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 6.0)[..., None]
    if dots:
        k = int(dots * CELL_PX * CELL_PX / 40)
        radius = 7 if cls == 0 else 3
        cy, cx = rng.integers(0, CELL_PX, (2, k))
        dot = np.zeros((CELL_PX, CELL_PX), bool)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dy * dy + dx * dx <= radius * radius:
                    dot[np.clip(cy + dy, 0, CELL_PX - 1), np.clip(cx + dx, 0, CELL_PX - 1)] = True
        img[dot] = np.asarray((60, 30, 110), np.float32) * stain
    img += rng.normal(0, noise, (CELL_PX, CELL_PX, 1))
    return img.clip(0, 255).astype(np.uint8)


def _tissue_blob(size: int, rng: np.random.Generator, scale: int) -> np.ndarray:
    """A wobbly ellipse covering most of the slide, at ``size // scale`` resolution."""
    n = size // scale
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n - 0.5
    angle = np.arctan2(yy, xx)
    wobble = 1 + sum(rng.uniform(0, 0.06) * np.sin(k * angle + rng.uniform(0, 6.3)) for k in range(2, 6))
    radius = np.hypot(yy / 0.46, xx / 0.44)
    return radius < wobble


def render_slide(patient: Patient, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 RGB image and the tissue blob at 1/MASK_DOWNSAMPLE resolution."""
    rng = np.random.default_rng(patient.seed)
    stain = np.array([0.92, 0.97, 1.06], np.float32) if patient.cohort == "3B" else np.ones(3, np.float32)
    swatches = [[_swatch(c, rng, stain) for _ in range(2)] for c in range(4)]
    if patient.mix[4] > 0:  # from a stream of its own: the slides of the other worlds are unchanged
        needle_rng = np.random.default_rng([patient.seed, 11])
        swatches.append([_swatch(4, needle_rng, stain) for _ in range(2)])
    cells = size // CELL_PX
    blob = _tissue_blob(size, rng, MASK_DOWNSAMPLE)
    blob[cells * CELL_PX // MASK_DOWNSAMPLE :, :] = False  # tissue only where cells are drawn
    blob[:, cells * CELL_PX // MASK_DOWNSAMPLE :] = False
    image = np.full((size, size, 3), 243, np.uint8)
    classes = rng.choice(len(CLASSES), size=(cells, cells), p=patient.mix)
    m = CELL_PX // MASK_DOWNSAMPLE
    for cy in range(cells):
        for cx in range(cells):
            sw = np.rot90(swatches[classes[cy, cx]][rng.integers(2)], int(rng.integers(4)))
            inside = blob[cy * m : (cy + 1) * m, cx * m : (cx + 1) * m]
            if not inside.any():
                continue
            cell = image[cy * CELL_PX : (cy + 1) * CELL_PX, cx * CELL_PX : (cx + 1) * CELL_PX]
            if inside.all():
                cell[:] = sw
            else:  # the tissue edge runs through this cell
                keep = np.repeat(np.repeat(inside, MASK_DOWNSAMPLE, 0), MASK_DOWNSAMPLE, 1)
                cell[keep] = sw[keep]
    return image, blob


RNA_WORLD_SEED = 1  # one synthetic "laboratory" for every cohort and sample case (see _rna_baseline)


def _rna_baseline() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each gene's expression level and the genes of the hidden programme: a property of the synthetic
    world, not of a cohort's seed, so that every cohort and sample case look like data from one lab
    (a model trained on one cohort sees another's RNA on its own scale). The world's seed is the one
    seed-0 cohorts always had, so they are unchanged."""
    rng = np.random.default_rng(RNA_WORLD_SEED)
    genes = reference_genes()
    mu = rng.normal(4.0, 2.0, len(genes))  # log-expression level of each gene
    program = rng.choice(len(genes), N_PROGRAM_GENES, replace=False)
    return genes, mu, program


def rna_values(patient: Patient, genes, mu, program) -> dict[str, float]:
    rng = np.random.default_rng(patient.seed + 7)
    log_expr = mu + rng.normal(0.0, 0.35, mu.size) + (0.1 if patient.cohort == "3B" else 0.0)
    log_expr[program] += 0.8 * patient.program
    values = np.expm1(np.clip(log_expr, 0, None))
    values[(mu < 1.5) & (rng.random(mu.size) < 0.3)] = 0.0  # dropouts among lowly expressed genes
    return dict(zip(genes, np.round(values, 3).tolist(), strict=True))


def patient_rna(patient: Patient) -> dict[str, float]:
    """A patient's RNA file content (gene -> DESeq2-like value) in the synthetic world."""
    return rna_values(patient, *_rna_baseline())


def _labelled(patient: Patient) -> dict:
    return {
        **patient.clinical,
        "Time_to_prog_or_FUend": f"{patient.time_months:g}",
        "progression": str(int(patient.event)),
    }


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _write_slide_files(
    patient: Patient, size: int, slide_path: Path, mask_path: Path, mask_value: int
) -> None:
    image, blob = render_slide(patient, size)
    slide_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    levels = 1
    while size >> levels >= 1024:
        levels += 1
    # At least three levels, so that even a small slide has its 1.0 µm/px (10x) level like real ones.
    write_pyramid(slide_path, image, spacing_um=SPACING_UM, tile_px=512, quality=85, n_levels=max(3, levels))
    write_mask(mask_path, blob, spacing_um=SPACING_UM * MASK_DOWNSAMPLE, value=mask_value)


def _cohort_worker(args) -> str:
    patient, size, out, mask_value, layout = args
    paths = case_paths(out, patient.case_id, layout)
    _write_slide_files(patient, size, paths["slide"], paths["mask"], mask_value)
    return patient.case_id


def write_cohort(
    out: str | os.PathLike,
    *,
    patients: int = 176,
    seed: int = 0,
    slide_px: int = 8192,
    workers: int | None = None,
    progress=None,
    world: str = "default",
    slides: bool = True,
    layout: str = "kit",
) -> dict:
    """Write the whole cohort of ``world``; returns the oracle summary (also in ``oracle.json``).
    ``slides=False`` leaves out the slides and masks (a cohort for ``synth-features`` alone).
    ``layout="release"`` writes the CHIMERA release's layout instead of the kit's: per patient
    folders, the outcome inside ``<pid>_CD.json`` (no ``outcomes.csv``), masks of 0/1, and
    ``data/task3_quality_control.csv`` (invented columns ``case_id, qc_status, comment``: the real
    ones are not published) failing ``QC_FAILS`` cases; oracle.csv/json stay at the top."""
    if layout not in LAYOUTS:
        raise UserError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    out = Path(out)
    if slide_px % MASK_DOWNSAMPLE or slide_px < CELL_PX:
        raise UserError(
            f"--slide-px must be a multiple of {MASK_DOWNSAMPLE} and >= {CELL_PX}, got {slide_px}"
        )
    pts = make_patients(patients, seed, world)
    genes, mu, program = _rna_baseline()
    for p in pts:
        paths = case_paths(out, p.case_id, layout)
        _write_json(paths["rna"], rna_values(p, genes, mu, program))
        _write_json(paths["clinical"], _labelled(p))
    if layout == "kit":
        with open(out / OUTCOMES_FILE, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "cohort", "time_months", "event"])
            w.writerows([p.case_id, p.cohort, p.time_months, int(p.event)] for p in pts)
    else:
        write_qc_csv(out, [p.case_id for p in pts], seed)
    _write_oracle_csv(out / ORACLE_FILE, pts)
    # the release's masks are 0/1; the kit's synthetic ones alternate 0/255 and 0/1 (both occur)
    value = (lambda i: 1) if layout == "release" else (lambda i: 255 if i % 2 == 0 else 1)
    jobs = [(p, slide_px, out, value(i), layout) for i, p in enumerate(pts)] if slides else []
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for case_id in pool.map(_cohort_worker, jobs):
                if progress:
                    progress(case_id)
    else:
        for job in jobs:
            _cohort_worker(job)
            if progress:
                progress(job[0].case_id)
    return write_oracle(out, pts, seed, world)


def _write_oracle_csv(path: Path, pts: list[Patient]) -> None:
    """Per patient: the log-hazard (with its noise), the noise-free one, the programme, the tissue
    fractions and each of the world's terms."""
    names = sorted({k for p in pts for k in p.terms})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["case_id", "log_hazard", NOISE_FREE, "program", *[f"frac_{c}" for c in CLASSES]]
            + [f"term_{k}" for k in names]
        )
        w.writerows(
            [p.case_id, round(p.log_hazard, 6), round(sum(p.terms.values(), 0.0), 6), round(p.program, 6)]
            + [*np.round(p.mix, 6)]
            + [round(p.terms.get(k, 0.0), 6) for k in names]
            for p in pts
        )


def write_oracle(out: Path, pts: list[Patient], seed: int, world: str = "default") -> dict:
    from survfusion.nets.survival import concordance_index  # scikit-survival: for the oracle only

    time = np.array([p.time_months for p in pts])
    event = np.array([p.event for p in pts])
    eta = np.array([p.log_hazard for p in pts])
    spec = world_spec(world)
    summary = {
        "patients": len(pts),
        "seed": seed,
        "world": spec.name,
        "world_what": spec.what,
        "event_rate": float(event.mean()),
        # with the noise, which no model can know: a description of this draw, not a ceiling
        "oracle_c_index": concordance_index(time, event, eta),
        **oracle_summary(time, event, [p.terms for p in pts]),
        "by_cohort": {
            c: {
                "patients": int(m.sum()),
                "events": int(event[m].sum()),
                "oracle_c_index": concordance_index(time[m], event[m], eta[m]),
            }
            for c in ("3A", "3B")
            if (m := np.array([p.cohort == c for p in pts])).any()
        },
        "formula": spec.formula,
    }
    _write_json(out / "oracle.json", summary)
    return summary


def write_case(out: str | os.PathLike, *, seed: int = 0, slide_px: int = 2688, index: int = 0) -> Path:
    """One patient as a grand-challenge job folder: inputs.json plus each socket's file."""
    out = Path(out)
    patient = make_patients(max(index + 1, 2), seed)[index]
    genes, mu, program = _rna_baseline()
    name = f"{patient.case_id}_HE"
    _write_slide_files(patient, slide_px, out / WSI_DIR / f"{name}.tif", out / MASK_DIR / f"{name}.tif", 255)
    _write_json(out / RNA_FILE, rna_values(patient, genes, mu, program))
    _write_json(out / CLINICAL_FILE, patient.clinical)  # a job carries no labels
    sockets = [
        (WSI_SLUG, "Image", WSI_DIR),
        (MASK_SLUG, "Segmentation", MASK_DIR),
        (RNA_SLUG, "Anything", RNA_FILE),
        (CLINICAL_SLUG, "Anything", CLINICAL_FILE),
    ]
    inputs = [
        {"interface": {"slug": slug, "kind": kind, "relative_path": rel}} for slug, kind, rel in sockets
    ]
    _write_json(out / "inputs.json", inputs)
    return out
