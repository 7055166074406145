"""The synthetic cohort in the real formats; train, evaluate and compare on a small one end to end."""

import csv
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from sksurv.metrics import concordance_index_censored

from survfusion.cli.main import main
from survfusion.features.weights import init_encoder_weights
from survfusion.serving.preprocess import clinical_schema, reference_genes
from survfusion.serving.sockets import CLINICAL_FILE, RNA_FILE
from survfusion.synth.cohort import make_patients, write_case, write_cohort
from survfusion.training.dataset import load_cohort, strata_of, stratified_folds, stratified_split
from survfusion.training.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # cohorts and training: ./test.sh -m "not slow" skips them

N = 24


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cohort, feats, weights = root / "cohort", root / "features", root / "vit-tiny.safetensors"
    write_cohort(cohort, patients=N, seed=3, slide_px=1792, workers=1)
    init_encoder_weights("vit-tiny", weights, seed=0)
    assert main(["extract", "--cohort", str(cohort), "--out", str(feats), "--encoder", "vit-tiny",
                 "--weights", str(weights)]) == 0  # fmt: skip
    config = root / "fast.json"
    config.write_text(json.dumps({"rna_top_genes": 64, "max_epochs": 4, "patience": 2}))
    return root, cohort, feats, config


def test_files_are_in_the_real_formats(small):
    _, cohort, _, _ = small
    slide = cohort / "slides" / "3A_001.tif"
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        assert page.is_tiled and page.compression == 7  # JPEG
        assert len(tif.series[0].levels) >= 2 and tif.pages[1].subfiletype == 1  # reduced-resolution pages
        assert page.tags["XResolution"].value[0] / page.tags["XResolution"].value[1] == pytest.approx(
            1e4 / 0.25
        )
    with openslide.OpenSlide(str(slide)) as osr:
        assert osr.dimensions == (1792, 1792)
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    masks = [tifffile.imread(cohort / "masks" / f"3A_00{i}.tif") for i in (1, 2)]
    assert {int(m.max()) for m in masks} == {255, 1} and all(m.shape == (112, 112) for m in masks)
    rna = json.loads((cohort / "rna" / "3A_001.json").read_text())
    assert list(rna) == reference_genes()
    values = np.array(list(rna.values()))
    assert values.min() >= 0 and 10 < np.median(values) < 1000 and values.max() > 1e4  # DESeq2-like
    schema = clinical_schema()
    for path in (cohort / "clinical").glob("*.json"):
        rec = json.loads(path.read_text())
        assert set(rec) == set(schema["numeric"]) | set(schema["categorical"]) | set(schema["labels"])
        assert all(rec[k] in cats for k, cats in schema["categorical"].items())
        assert all(isinstance(v, str) for v in rec.values())
    rows = read_csv(cohort / "outcomes.csv")
    assert [r["case_id"] for r in rows][:2] == ["3A_001", "3A_002"] and rows[-1]["case_id"].startswith("3B_")
    oracle = json.loads((cohort / "oracle.json").read_text())
    assert 0.5 < oracle["oracle_c_index"] <= 1.0


def test_outcomes_are_shaped_like_the_real_cohort():
    pts = make_patients(176, seed=0)
    event = np.array([p.event for p in pts])
    time = np.array([p.time_months for p in pts])
    assert sum(p.cohort == "3A" for p in pts) == 125
    assert event.mean() == pytest.approx(0.36, abs=0.02)
    assert np.median(time[event]) < np.median(time[~event])  # events come early
    assert time.min() >= 1 and time.max() <= 200


def test_the_sample_case_passes_the_demo_cohorts_preprocessing_without_a_warning():
    """./demo.sh trains on `synth --patients 60 --seed 1` and predicts test/input/interf0 (a seed-0
    patient): preprocessing fitted on the demo's training patients must take the sample case without
    one warning, so `inference.py --strict` holds on the kit's own example."""
    from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer, reference_genes
    from survfusion.synth.cohort import patient_rna

    train = make_patients(60, seed=1)[:51]  # the demo's cohort; 85% of it trains (any 51 will do)
    genes = reference_genes()
    raw = np.array([[values[g] for g in genes] for values in map(patient_rna, train)])
    rna = RnaVectorizer(genes, log1p=True).with_train_max(raw)
    clinical = ClinicalEncoder.fit([p.clinical for p in train])
    sample = ROOT / "test" / "input" / "interf0"
    assert rna.transform(json.loads((sample / RNA_FILE).read_text())).warnings == []
    assert clinical.transform(json.loads((sample / CLINICAL_FILE).read_text())).warnings == []


def test_case_dir_is_a_grand_challenge_job(tmp_path):
    case = write_case(tmp_path / "case", seed=0)
    inputs = json.loads((case / "inputs.json").read_text())
    slugs = {i["interface"]["slug"]: i["interface"]["relative_path"] for i in inputs}
    assert set(slugs) == {
        "bladder-cancer-tissue-biopsy-whole-slide-image",
        "tissue-mask",
        "bulk-rna-seq-bladder-cancer",
        "chimera-clinical-data-of-bladder-cancer-recurrence",
    }
    assert len(list((case / slugs["bladder-cancer-tissue-biopsy-whole-slide-image"]).glob("*.tif"))) == 1
    assert len(list((case / slugs["tissue-mask"]).glob("*.tif"))) == 1
    clinical = json.loads((case / slugs["chimera-clinical-data-of-bladder-cancer-recurrence"]).read_text())
    assert "progression" not in clinical  # a job carries no labels
    size = sum(p.stat().st_size for p in case.rglob("*") if p.is_file())
    assert size < 3 * 2**20


def test_split_is_stratified_and_never_leaks(small):
    _, cohort, feats, _ = small
    data = load_cohort(cohort, feats)
    strata = strata_of(data)
    train, val = stratified_split(strata, val_fraction=0.15, seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == N
    for s in set(strata):
        n = (strata == s).sum()
        assert (strata[val] == s).sum() == round(0.15 * n)
    folds = stratified_folds(strata, k=3, seed=0)
    assert sorted(np.bincount(folds)) == [8, 8, 8]


def _train(small, out, *extra):
    _, cohort, feats, config = small
    return main(["train", "--cohort", str(cohort), "--features", str(feats), "--model", "ABMIL_Surv_PG",
                 "--out", str(out), "--config", str(config), *extra])  # fmt: skip


def test_train_evaluate_compare_end_to_end(small, tmp_path, capsys):
    _, cohort, feats, _ = small
    run = tmp_path / "run"
    assert _train(small, run) == 0
    history = read_csv(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    val_c = [float(h["val_c_index"]) for h in history]
    assert metrics["best_epoch"] == 1 + int(np.argmax(val_c))  # early stopping kept the best epoch
    assert json.loads((run / "config.json").read_text())["rna_top_genes"] == 64
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    out = tmp_path / "eval"
    args = [
        "--bundle",
        str(run / "bundle"),
        "--cohort",
        str(cohort),
        "--features",
        str(feats),
        "--out",
        str(out),
    ]
    assert main(["evaluate", *args, "--heatmaps", "2"]) == 0  # auto: a single run's validation split
    printed = capsys.readouterr().out
    assert f"on {len(split['val'])} validation patients of the run" in printed
    assert "optimistic: the run's best epoch was chosen on these patients" in printed
    for name in ("cases.csv", "metrics.json", "km_risk_quartiles.png", "c_index_per_epoch.png"):
        assert (out / name).is_file(), name
        assert f"  {name}" in printed  # the summary lists every file written
    assert len(list(out.glob("heatmap_*.png"))) == 2
    rows = read_csv(out / "cases.csv")
    assert [r["case_id"] for r in rows] == split["val"]
    t = np.array([float(r["time_months"]) for r in rows])
    e = np.array([r["event"] == "1" for r in rows])
    months = np.array([float(r["predicted_months"]) for r in rows])
    expected = concordance_index_censored(e, t, -months)[0]
    assert json.loads((out / "metrics.json").read_text())["c_index"] == pytest.approx(expected, abs=1e-9)
    chosen = split["val"][:1]
    assert main(["evaluate", *args[:-1], str(tmp_path / "eval2"), "--heatmap-cases", *chosen]) == 0
    assert [p.name for p in (tmp_path / "eval2").glob("heatmap_*.png")] == [f"heatmap_{chosen[0]}.png"]
    assert main(["evaluate", *args[:-1], str(tmp_path / "eval3"), "--heatmap-cases", "NOPE"]) == 2
    # the run folder works where its bundle/ does, and an in-sample score says so
    run_args = ["--bundle", str(run), *args[2:-1], str(tmp_path / "eval4"), "--cases", "train"]
    assert main(["evaluate", *run_args, "--heatmaps", "0"]) == 0
    assert "in-sample: the bundle trained on these patients" in capsys.readouterr().out
    assert main(["evaluate", *args[:-1], str(tmp_path / "eval5"), "--cases", "nope"]) == 2
    assert "expected one of auto, train, val, test, all" in capsys.readouterr().err
    table = tmp_path / "table.md"
    assert main(["compare", str(run), "--out", str(table)]) == 0
    assert "ABMIL_Surv_PG" in table.read_text()


def test_training_is_reproducible_bit_for_bit(small, tmp_path):
    assert _train(small, tmp_path / "a", "--seed", "5") == 0
    assert _train(small, tmp_path / "b", "--seed", "5") == 0
    assert (tmp_path / "a" / "history.csv").read_text().split("seconds")[0] == (
        tmp_path / "b" / "history.csv"
    ).read_text().split("seconds")[0]
    wa = (tmp_path / "a" / "bundle" / "member_00" / "weights.safetensors").read_bytes()
    wb = (tmp_path / "b" / "bundle" / "member_00" / "weights.safetensors").read_bytes()
    assert wa == wb


def test_cross_validation_writes_every_fold(small, tmp_path, capsys):
    assert _train(small, tmp_path / "cv", "--folds", "3", "--max-epochs", "2") == 0
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["folds"] == 3 and len(summary["per_fold"]) == 3
    assert all((tmp_path / "cv" / f"fold_{k}" / "bundle" / "manifest.json").is_file() for k in range(3))
    histories = [read_csv(tmp_path / "cv" / f"fold_{k}" / "history.csv") for k in range(3)]
    last = [float(h[-1]["val_c_index"]) for h in histories]
    assert summary["val_c_index_last_epoch_mean"] == pytest.approx(np.mean(last))
    printed = capsys.readouterr().out
    assert "at each fold's best epoch" in printed and "at its last epoch" in printed
    assert "optimistic" in printed


def test_ensemble_trains_bundles_loads_and_predicts(small, tmp_path, capsys):
    """3 folds x 2 seeds: six members in one bundle, calibrated on the out-of-fold risks, which are
    recomputed here from each member's own predictions; evaluate reports them labelled."""
    from survfusion.serving.bundle import Bundle, on_common_scale
    from survfusion.serving.bundle_io import load_bundle

    _, cohort, feats, _ = small
    run = tmp_path / "ens"
    assert _train(small, run, "--ensemble", "--folds", "3", "--seeds", "2", "--max-epochs", "2") == 0
    assert "optimistic" in capsys.readouterr().out
    bundle = load_bundle(run / "bundle")
    assert len(bundle.members) == 6
    members = {(m.info["seed"], m.info["fold"]) for m in bundle.members}
    assert members == {(s, k) for s in (0, 1) for k in range(3)}
    assert main(["check-bundle", str(run / "bundle")]) == 0
    assert "members=6" in capsys.readouterr().out
    data = load_cohort(cohort, feats)
    rows = read_csv(run / "oof.csv")
    assert sorted(r["case_id"] for r in rows) == sorted(data.case_ids)  # every patient, once
    where = {c: i for i, c in enumerate(data.case_ids)}
    z = np.zeros((2, N))
    for m in bundle.members:  # each patient's risk from the member of each seed that held it out
        held = [j for j, r in enumerate(rows) if int(r[f"fold_seed{m.info['seed']}"]) == m.info["fold"]]
        idx = [where[rows[j]["case_id"]] for j in held]
        member_only = Bundle(bundle.model_name, [m], bundle.calibration)
        risk = member_only.member_risks(
            [data.bags[i] for i in idx], [data.clinical[i] for i in idx], [data.rna_doc(i) for i in idx]
        )[0]
        z[m.info["seed"], held] = (risk - m.risk_mean) / m.risk_sd
    means, sds = [m.risk_mean for m in bundle.members], [m.risk_sd for m in bundle.members]
    oof = on_common_scale(z.mean(axis=0), means, sds)
    np.testing.assert_allclose(oof, [float(r["oof_risk"]) for r in rows], atol=2e-6)
    np.testing.assert_allclose(sorted(bundle.calibration.to_dict()["train_risk"]), sorted(oof), atol=1e-9)
    t = np.array([float(r["time_months"]) for r in rows])
    e = np.array([r["event"] == "1" for r in rows])
    metrics = json.loads((run / "metrics.json").read_text())
    months = bundle.months(oof)
    assert metrics["oof_c_index"] == pytest.approx(concordance_index_censored(e, t, -months)[0], abs=1e-9)
    args = ["evaluate", "--bundle", str(run / "bundle"), "--cohort", str(cohort), "--features", str(feats)]
    assert main([*args, "--out", str(tmp_path / "ev"), "--cases", "all", "--heatmaps", "1"]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["members"] == 6 and "optimistic" in ev["training"]["oof_note"]
    assert ev["training"]["oof_c_index"] == metrics["oof_c_index"]
    assert (tmp_path / "ev" / "c_index_per_epoch.png").is_file()  # the six members' curves
    assert main(["compare", str(run)]) == 0
    assert "out-of-fold C (months) [optimistic]" in capsys.readouterr().out
    assert "in-sample: " in ev["trust"]  # every patient of this cohort trained the ensemble
    assert main([*args, "--out", str(tmp_path / "ev2"), "--cases", "val"]) == 2  # no validation split
    assert main([*args, "--out", str(tmp_path / "ev3"), "--cases", "test"]) == 2  # no unseen patient
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "ev4"), "--heatmaps", "0"]) == 0  # auto: all, in-sample
    printed = capsys.readouterr().out
    assert "in-sample: " in printed and "out-of-fold C-index from training" in printed


def test_reference_code_recipe_options(small, tmp_path):
    """configs/reference-code.json runs (layered over the test's fast settings), and each option does
    what its name says."""
    from pathlib import Path

    from survfusion.training.train import Trainer, xavier_normal_init

    _, cohort, feats, _ = small
    ref = Path(__file__).resolve().parents[1] / "configs" / "reference-code.json"
    fast = tmp_path / "short.json"
    fast.write_text(json.dumps({"max_epochs": 3, "min_epochs": 3, "rna_top_genes": 64}))
    assert main(["train", "--cohort", str(cohort), "--features", str(feats), "--out", str(tmp_path / "ref"),
                 "--config", str(ref), "--config", str(fast), "--device", "auto"]) == 0  # fmt: skip
    resolved = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert (
        resolved["sampler"] == "event_balanced" and resolved["max_epochs"] == 3 and resolved["seed"] == 2021
    )
    assert json.loads((tmp_path / "ref" / "metrics.json").read_text())["epochs_run"] == 3  # min_epochs held

    data = load_cohort(cohort, feats)
    train_idx, val_idx = stratified_split(strata_of(data), val_fraction=0.25, seed=0)
    cfg = TrainConfig(rna_top_genes=64, sampler="event_balanced", seed=1)
    trainer = Trainer(data, cfg, train_idx, val_idx)
    draws = np.concatenate([trainer.epoch_order() for _ in range(400)])
    assert set(draws) <= set(train_idx)
    assert data.event[draws].mean() == pytest.approx(0.5, abs=0.03)  # events are half of every epoch
    torch_model = trainer.model
    xavier_normal_init(torch_model)
    linear = [m for m in torch_model.modules() if m.__class__.__name__ == "Linear"]
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in linear)
    big = max(linear, key=lambda m: m.weight.numel())
    fan_out, fan_in = big.weight.shape
    assert float(big.weight.detach().std()) == pytest.approx((2.0 / (fan_in + fan_out)) ** 0.5, rel=0.02)
    with pytest.raises(Exception, match="sampler must be one of"):
        TrainConfig(sampler="magic")


def test_ties_in_validation_c_index_keep_the_later_epoch_when_asked(small, tmp_path, monkeypatch):
    import survfusion.training.train as train_mod

    monkeypatch.setattr(train_mod, "concordance_index", lambda t, e, r: 0.5)  # every epoch ties
    for tie_break, best in (("earlier", 1), ("later", 4)):
        out = tmp_path / tie_break
        cfg = tmp_path / f"{tie_break}.json"
        cfg.write_text(json.dumps({"tie_break": tie_break, "patience": 10}))
        assert _train(small, out, "--config", str(cfg)) == 0
        assert json.loads((out / "metrics.json").read_text())["best_epoch"] == best


def test_outer_test_protocol_never_trains_on_its_test_patients(small, tmp_path, capsys):
    from survfusion.training.protocol import outer_folds

    _, cohort, feats, config = small
    out = tmp_path / "outer"
    args = ["outer-test", "--cohort", str(cohort), "--features", str(feats), "--out", str(out),
            "--config", str(config), "--models", "ABMIL_Surv", "--outer", "5", "--folds", "2",
            "--max-epochs", "1"]  # fmt: skip
    assert main([*args, "--only", "0"]) == 0
    data = load_cohort(cohort, feats)
    test = {data.case_ids[i] for i in np.flatnonzero(outer_folds(data, 5, 0) == 0)}
    assert 3 <= len(test) <= 7
    seen = set()
    for method in ("single", "ensemble"):
        unit = out / "outer0" / f"ABMIL_Surv-{method}"
        assert {r["case_id"] for r in read_csv(unit / "test.csv")} == test
        for split in [unit / "split.json", *unit.glob("members/*/split.json")]:
            if split.is_file():
                s = json.loads(split.read_text())
                seen |= set(s["train"]) | set(s["val"])
        assert not (unit / "bundle").exists()  # predictions kept, bundles dropped
    assert seen and not seen & test
    assert len(list((out / "outer0" / "ABMIL_Surv-ensemble" / "members").iterdir())) == 2
    report = capsys.readouterr().out
    assert "| ABMIL_Surv | 1 |" in report and "ensemble" in report and "single" in report
    assert (out / "report.md").read_text().strip() in report and "C(ensemble) - C(single)" in report
    # the classical baselines on the same outer test set, into the same protocol folder
    baselines = ["CoxPH_Clin", "CoxNet_ClinRNA", "RSF_ClinRNA"]
    models_at = args.index("ABMIL_Surv")
    b_args = [*args[:models_at], *baselines, *args[models_at + 1 :]]
    assert main([*b_args, "--only", "0"]) == 0
    report = capsys.readouterr().out
    for name in baselines:
        unit = out / "outer0" / f"{name}-baseline"
        rows = read_csv(unit / "test.csv")
        assert {r["case_id"] for r in rows} == test
        assert f"| {name} | baseline | 1 |" in report
    headline = next(line for line in report.splitlines() if line.startswith("On these outer test sets "))
    assert "the paired difference on 1 test set is" in headline and "zero" in headline
    assert "Every deep method against the best baseline" in report
    # its inputs and calibration come from the pool alone: refitting there gives the same test risks
    from survfusion.training.baselines import design, fit_baseline

    order = [data.case_ids.index(c) for c in (r["case_id"] for r in rows)]
    pool = np.setdiff1d(np.arange(len(data)), order)
    cfg = json.loads(config.read_text())
    d = design(data, pool, "clinical+rna", cfg=TrainConfig.from_overrides(cfg))
    risk_of = fit_baseline(
        "RSF_ClinRNA", d.matrix(data, pool), data.time_months[pool], data.event[pool], seed=0
    )
    risk = risk_of(d.matrix(data, np.array(order)))
    np.testing.assert_allclose([float(r["risk"]) for r in rows], risk, rtol=1e-12)  # the same forest
    assert main([*args, "--only", "0", "--seed", "1"]) == 2  # other settings never mix into one folder
    assert "other settings" in capsys.readouterr().err
    assert main([*args, "--outer", "4"]) == 2  # fewer than 5 outer test sets


def test_a_linear_baseline_trains_packages_and_serves_the_sample_case(small, tmp_path, capsys):
    """train --model CoxNet_ClinRNA writes a bundle (a LinearCox holding the library's coefficients):
    its risks are the library's on the same inputs; package and inference.py serve it without
    embedding the slide; a forest is refused with a reason."""
    import inference
    from survfusion.serving.bundle_io import load_bundle
    from survfusion.training.baselines import design, fit_baseline
    from survfusion.training.dataset import strata_of, stratified_split

    root, cohort, feats, config = small
    for name in ("CoxPH_Clin", "CoxNet_ClinRNA"):
        run = tmp_path / name
        assert main(["train", "--cohort", str(cohort), "--features", str(feats), "--model", name,
                     "--out", str(run), "--config", str(config)]) == 0  # fmt: skip
        assert "validation C-index" in capsys.readouterr().out
    data = load_cohort(cohort, feats)
    cfg = json.loads((run / "config.json").read_text())
    tr, va = stratified_split(strata_of(data), val_fraction=cfg["val_fraction"], seed=cfg["seed"])
    d = design(data, tr, "clinical+rna", cfg=TrainConfig.from_overrides(cfg))
    want = fit_baseline(
        "CoxNet_ClinRNA", d.matrix(data, tr), data.time_months[tr], data.event[tr], seed=cfg["seed"]
    )
    bundle = load_bundle(run / "bundle")
    from survfusion.training.evaluate import cohort_risks

    got = cohort_risks(bundle, data, va)[0]
    # float32 weights folded from float64 coefficients on standardised inputs: ~1e-6 relative
    np.testing.assert_allclose(got, want(d.matrix(data, va)), rtol=1e-4, atol=1e-4)
    weights = root / "vit-tiny.safetensors"
    assert main(["package", "--run", str(run), "--encoder-weights", str(weights), "--out",
                 str(tmp_path / "model")]) == 0  # fmt: skip
    capsys.readouterr()
    sample = ROOT / "test" / "input" / "interf0"
    code = inference.main(["--input", str(sample), "--output", str(tmp_path / "out"), "--model",
                           str(tmp_path / "model"), "--device", "cpu"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "slide    not used by this model" in printed.out and "embed " not in printed.out
    months = json.loads((tmp_path / "out" / "likelihood-of-bladder-cancer-recurrence.json").read_text())
    assert np.isfinite(months) and months >= 0
    assert main(["train", "--cohort", str(cohort), "--features", str(feats), "--model", "RSF_ClinRNA",
                 "--out", str(tmp_path / "rsf"), "--config", str(config)]) == 2  # fmt: skip
    assert "a forest, which a bundle cannot hold" in capsys.readouterr().err


def test_a_non_uni_encoder_extracts_trains_packages_and_predicts(small, tmp_path, capsys):
    """UNI2-h cut to one block (its full 1536-d width, 8 registers, SwiGLU, 256-px tiles at
    0.5 µm/px) through the whole kit: the width follows from the registry into the feature files,
    the model, the bundle, package and inference.py; weights of another encoder are refused."""
    import shutil

    import inference
    from survfusion.features.h5 import read_features
    from survfusion.features.request import FeatureRequest
    from survfusion.serving.bundle_io import load_bundle

    root, cohort, _, config = small
    weights, feats, run, model = (tmp_path / n for n in ("uni2-h.safetensors", "feats", "run", "model"))
    init_encoder_weights("uni2-h@1", weights, seed=0)
    assert main(["extract", "--cohort", str(cohort), "--out", str(feats), "--encoder", "uni2-h@1",
                 "--weights", str(weights), "--max-tiles", "4"]) == 0  # fmt: skip
    assert "256 px at 0.5 µm/px | 1536-d embeddings" in capsys.readouterr().out
    f = read_features(feats / "3A_001.h5")
    assert f.features.shape[1] == 1536 and f.attrs["embed_dim"] == 1536
    assert FeatureRequest.from_attrs(f.attrs).encoder == "uni2-h@1"
    assert main(["train", "--cohort", str(cohort), "--features", str(feats), "--out", str(run),
                 "--config", str(config)]) == 0  # fmt: skip
    bundle = load_bundle(run / "bundle")
    assert bundle.members[0].model.dims.feat_dim == 1536 and bundle.request.encoder == "uni2-h@1"
    capsys.readouterr()
    assert main(["package", "--run", str(run), "--encoder-weights", str(root / "vit-tiny.safetensors"),
                 "--out", str(model)]) == 2  # fmt: skip
    assert "is not the encoder the bundle was trained with" in capsys.readouterr().err
    assert main(["package", "--run", str(run), "--encoder-weights", str(weights), "--out", str(model)]) == 0
    capsys.readouterr()
    sample = ROOT / "test" / "input" / "interf0"
    args = [
        "--input",
        str(sample),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model),
        "--device",
        "cpu",
    ]
    code = inference.main(args)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "ABMIL_Surv_PG + uni2-h@1 (fp32)" in printed.out and "4 tiles" in printed.out
    months = json.loads((tmp_path / "out" / "likelihood-of-bladder-cancer-recurrence.json").read_text())
    assert np.isfinite(months) and months > 0
    # Another encoder's weights in the model directory: the strict load names the mismatch.
    shutil.copyfile(root / "vit-tiny.safetensors", model / "encoder" / "weights.safetensors")
    assert inference.main([*args[:2], "--output", str(tmp_path / "out2"), *args[4:]]) != 0
    assert "do not fit 'uni2-h@1'" in capsys.readouterr().err


@pytest.mark.parametrize("encoder", ["virchow2", "gigapath", "conch-v1.5"])
def test_synthetic_features_of_any_width_train(small, tmp_path, capsys, encoder):
    """synth-features writes bags of the encoder's width with its request (no encoder run); train
    takes them and the model's input layer follows the width."""
    from survfusion.features.encoders import encoder_spec
    from survfusion.features.h5 import read_features
    from survfusion.features.request import FeatureRequest
    from survfusion.serving.bundle_io import load_bundle

    _, cohort, _, config = small
    feats = tmp_path / "feats"
    assert main(["synth-features", "--cohort", str(cohort), "--out", str(feats), "--encoder", encoder,
                 "--tiles", "16"]) == 0  # fmt: skip
    width = encoder_spec(encoder).embed_dim
    f = read_features(feats / "3B_001.h5")
    assert f.features.shape == (16, width) and "synthetic" in f.attrs
    assert FeatureRequest.from_attrs(f.attrs).tile_px == encoder_spec(encoder).tile_px
    assert main(["train", "--cohort", str(cohort), "--features", str(feats), "--out", str(tmp_path / "run"),
                 "--config", str(config)]) == 0  # fmt: skip
    assert load_bundle(tmp_path / "run" / "bundle").members[0].model.dims.feat_dim == width
