"""Every row of the README's bad-input table, through the container contract harness (test/contract.py):
inference.py as nobody, read-only input and model, no network, an empty temporary directory."""

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import ROOT, harness_available, run_contract

from survfusion.bundle import Bundle, save_bundle
from survfusion.calibration import RiskToTime
from survfusion.encoders import init_encoder_weights
from survfusion.models import build_model
from survfusion.predict import write_model_dir
from survfusion.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes
from survfusion.synth import make_patients
from survfusion.tiffwrite import write_mask, write_pyramid

SAMPLE = ROOT / "test" / "input" / "interf0"
WSI_DIR = "images/bladder-cancer-tissue-biopsy-wsi"
MASK_DIR = "images/tissue-mask"
RNA = "bulk-rna-seq-bladder-cancer.json"
CLINICAL = "chimera-clinical-data-of-bladder-cancer-recurrence-patients.json"

pytestmark = pytest.mark.skipif(harness_available() is not None, reason=str(harness_available()))


def _world_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.fixture(scope="module")
def scratch():
    path = Path(tempfile.mkdtemp(prefix="contract-fixtures-"))
    path.chmod(0o755)  # the contained process (nobody) must reach the cases and the model below
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def model_dir(scratch):
    """A small but complete model directory: a bundle (untrained weights) + vit-tiny weights."""
    torch.manual_seed(0)
    weights = scratch / "vit-tiny.safetensors"
    sha = init_encoder_weights("vit-tiny", weights, seed=0)
    weights.chmod(0o644)  # as a downloaded pytorch_model.bin would be
    genes = reference_genes()[:512]
    patients = make_patients(40, seed=5)
    rng = np.random.default_rng(0)
    bundle = Bundle(
        "ABMIL_Surv_PG",
        build_model("ABMIL_Surv_PG", feat_dim=192, rna_dim=len(genes)),
        ClinicalEncoder.fit([p.clinical for p in patients]),
        RnaVectorizer(genes, log1p=True),
        RiskToTime().fit(rng.normal(size=40), [p.time_months for p in patients], [p.event for p in patients]),
        config={
            "features": {
                "encoder": "vit-tiny",
                "weights_sha256": sha,
                "target_spacing_um": 1.0,
                "tile_px": 224,
                "min_tissue": 0.25,
            }
        },
        embedding_means={"hist": rng.normal(size=512), "rna": rng.random(128), "clinical": rng.random(27)},
    )
    save_bundle(bundle, scratch / "bundle")
    # No chmod here: the model directory must be readable by the container's user as written.
    return write_model_dir(scratch / "model", scratch / "bundle", weights)


def case(scratch: Path, name: str, mutate=None) -> Path:
    path = scratch / "cases" / name
    shutil.copytree(SAMPLE, path)
    if mutate:
        mutate(path)
    _world_readable(path)
    return path


def wsi(path: Path) -> Path:
    return next((path / WSI_DIR).glob("*.tif"))


def blank_slide(path: Path) -> None:
    target = wsi(path)
    write_pyramid(target, np.full((2688, 2688, 3), 243, np.uint8), spacing_um=0.25, tile_px=512, n_levels=3)
    mask = next((path / MASK_DIR).glob("*.tif"))
    write_mask(mask, np.zeros((168, 168), bool), spacing_um=4.0)


def unknown_clinical(path: Path) -> None:
    rec = json.loads((path / CLINICAL).read_text())
    rec["smoking"] = "Sometimes"
    del rec["age"]
    (path / CLINICAL).write_text(json.dumps(rec))


# name, change to the sample case, extra arguments, exit code, what stderr must say
ROWS = [
    ("complete case", None, (), 0, []),
    (
        "no inputs.json: documented paths",
        lambda p: (p / "inputs.json").unlink(),
        (),
        0,
        ["inputs.json absent"],
    ),
    ("no RNA file", lambda p: (p / RNA).unlink(), (), 0, ["rna input replaced", "no RNA file"]),
    (
        "RNA without a usable gene",
        lambda p: (p / RNA).write_text('{"NOT_A_GENE": 3, "A1BG": "n/a"}'),
        (),
        0,
        ["rna input replaced", "no usable gene"],
    ),
    ("RNA not JSON", lambda p: (p / RNA).write_text("{{{"), (), 0, ["rna input replaced", "unreadable"]),
    (
        "no clinical file",
        lambda p: (p / CLINICAL).unlink(),
        (),
        0,
        ["clinical input replaced", "no clinical file"],
    ),
    (
        "clinical: unknown category, missing field",
        unknown_clinical,
        (),
        0,
        ["smoking='Sometimes' is not a known category", "age missing"],
    ),
    ("no WSI", lambda p: wsi(p).unlink(), (), 0, ["hist input replaced", "no WSI file"]),
    (
        "WSI unreadable",
        lambda p: wsi(p).write_bytes(b"II*\x00broken"),
        (),
        0,
        ["hist input replaced", "unreadable"],
    ),
    ("WSI without tissue", blank_slide, (), 0, ["hist input replaced", "no tissue tile"]),
    (
        "no tissue mask",
        lambda p: next((p / MASK_DIR).glob("*.tif")).unlink(),
        (),
        0,
        ["no tissue mask given", "Otsu"],
    ),
    (
        "empty tissue mask",
        lambda p: write_mask(next((p / MASK_DIR).glob("*.tif")), np.zeros((168, 168), bool), spacing_um=4.0),
        (),
        0,
        ["is empty", "Otsu"],
    ),
    (
        "all modalities unusable",
        lambda p: [wsi(p).unlink(), (p / RNA).unlink(), (p / CLINICAL).unlink()],
        (),
        1,
        ["no prediction possible"],
    ),
    ("--strict with a fallback", lambda p: (p / RNA).unlink(), ("--strict",), 1, ["--strict"]),
    ("--strict on a complete case", None, ("--strict",), 0, []),
]


def check(run, code: int, needles: list[str]) -> None:
    assert run.strays == [], f"files written outside output/ and tmp/: {run.strays}"
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    for needle in needles:
        assert needle in run.stderr, (needle, run.stderr)
    if code == 0:
        value = json.loads(run.output)
        assert isinstance(value, float) and math.isfinite(value) and value >= 0
        assert "[survfusion] done" in run.stdout
    else:
        assert run.output is None
        assert run.stderr.strip().splitlines()[-1].startswith("[survfusion] error: ")


@pytest.mark.parametrize(("name", "mutate", "extra", "code", "needles"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_table(scratch, model_dir, name, mutate, extra, code, needles):
    run = run_contract(
        case(scratch, name.replace(" ", "_").replace(":", "").replace(",", ""), mutate), model_dir, *extra
    )
    check(run, code, needles)
    if name == "complete case":
        assert "warning" not in run.stderr, run.stderr


def test_same_input_gives_byte_identical_output(scratch, model_dir):
    path = case(scratch, "twice")
    first, second = run_contract(path, model_dir), run_contract(path, model_dir)
    check(first, 0, [])
    assert first.output == second.output


@pytest.mark.parametrize("problem", ["no bundle", "corrupt bundle", "no encoder weights"])
def test_model_problems_fail_in_one_line(scratch, model_dir, problem):
    broken = scratch / f"model-{problem.replace(' ', '-')}"
    shutil.copytree(model_dir, broken)
    if problem == "no bundle":
        shutil.rmtree(broken / "bundle")
    elif problem == "corrupt bundle":
        w = broken / "bundle" / "weights.safetensors"
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0xFF
        w.write_bytes(bytes(data))
    else:
        for f in (broken / "encoder").iterdir():
            f.unlink()
    _world_readable(broken)
    run = run_contract(case(scratch, f"for-{problem.replace(' ', '-')}"), broken)
    check(
        run,
        1,
        {
            "no bundle": ["not a directory"],
            "corrupt bundle": ["checksum mismatch"],
            "no encoder weights": ["expected one tile-encoder weights file"],
        }[problem],
    )
    assert len(run.stderr.strip().splitlines()) == 1


PROBE = """
import os, socket, sys
input_dir, out = sys.argv[1], sys.argv[2]
print("uid", os.geteuid())
try:
    open(os.path.join(input_dir, "x"), "w")
    print("input writable")
except OSError as err:
    print("input", err.strerror)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    print("network reachable")
except OSError as err:
    print("network", err.strerror)
open(os.path.join(out, "ok"), "w").write("1")
print("interfaces", sorted(name for _, name in socket.if_nameindex()))
"""


def test_the_harness_really_confines_the_process(scratch, model_dir):
    """Guards the guard: the contained process is nobody, without network, with a read-only input."""
    path = case(scratch, "probe")
    path.chmod(0o777)  # writable by anyone: only the read-only mount can stop the write
    run = run_contract(path, model_dir, program=PROBE)
    assert run.returncode == 0, run.stderr
    assert f"uid {65534}" in run.stdout
    assert "input Read-only file system" in run.stdout
    assert "network reachable" not in run.stdout and "network Network is unreachable" in run.stdout
    assert "interfaces ['lo']" in run.stdout
    assert run.strays == []
