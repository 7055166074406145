"""The CHIMERA release as downloaded: its layout as a cohort, its labels and QC, the data card, and
the organisers' .pt/.npy features imported (issue 28)."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from lifelines import KaplanMeierFitter

from survfusion.cli.main import main
from survfusion.errors import UserError
from survfusion.features.weights import init_encoder_weights
from survfusion.synth.cohort import write_cohort
from survfusion.synth.features import write_release_features
from survfusion.training import release as r
from survfusion.training.card import reverse_km_median, rna_kind
from survfusion.training.cohort import cohort_jobs, open_cohort
from survfusion.training.dataset import load_cohort, read_oracle, read_outcomes

N = 24


@pytest.fixture(scope="module")
def rel(tmp_path_factory):
    """A synthetic release without slides, its features imported, and vit-tiny weights."""
    root = tmp_path_factory.mktemp("release")
    release, weights = root / "task3", root / "vit-tiny.safetensors"
    write_cohort(release, patients=N, seed=5, slides=False, layout="release")
    write_release_features(release, width=192, tiles=20, seed=5)
    init_encoder_weights("vit-tiny", weights, seed=0)
    return release, weights


def _copy(rel, tmp_path):
    dst = tmp_path / "task3"
    shutil.copytree(rel[0], dst)
    return dst


def _cd(release, cid):
    return release / "data" / cid / f"{cid}_CD.json"


def test_release_layout_reads_outcomes_from_the_clinical_json(rel):
    release, _ = rel
    assert not (release / "outcomes.csv").exists()
    for where in (release, release / "data"):
        layout = open_cohort(where)
        assert layout.kind == "release" and layout.root == release
    rows = read_outcomes(release)
    assert len(rows) == N
    for row in rows:
        cd = json.loads(_cd(release, row["case_id"]).read_text())
        assert float(row["time_months"]) == pytest.approx(float(cd["Time_to_prog_or_FUend"]))
        assert row["event"] == str(int(cd["progression"]))
        assert row["cohort"] == row["case_id"][:2]
    assert np.isfinite(read_oracle(release, [x["case_id"] for x in rows])).all()


def test_the_other_time_key_is_read_and_a_case_without_one_is_named(rel, tmp_path, capsys):
    release = _copy(rel, tmp_path)
    cd = json.loads(_cd(release, "3A_002").read_text())
    cd["time_to_HG_recur_or_FUend"] = cd.pop("Time_to_prog_or_FUend")
    _cd(release, "3A_002").write_text(json.dumps(cd))
    assert {x["case_id"] for x in read_outcomes(release)} >= {"3A_002"}
    del cd["time_to_HG_recur_or_FUend"]
    _cd(release, "3A_002").write_text(json.dumps(cd))
    with pytest.raises(UserError, match=r"3A_002.*no follow-up time"):
        read_outcomes(release)
    capsys.readouterr()
    assert main(["train", "--cohort", str(release), "--features", str(tmp_path / "f"), "--model",
                 "CoxNet_ClinRNA", "--out", str(tmp_path / "run")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: release case 3A_002") and len(err[-1]) < 200
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("Time_to_prog_or_FUend", "-3", "outside"), ("Time_to_prog_or_FUend", "9" * 400, "not a number"),
     ("Time_to_prog_or_FUend", "nan", "nan"), ("progression", "2", "expected 0 or 1")],
)  # fmt: skip
def test_an_outcome_out_of_range_is_an_error_naming_the_case(field, value, match):
    record = {"Time_to_prog_or_FUend": "12", "progression": "1", field: value}
    with pytest.raises(UserError, match=rf"3B_007.*{match}"):
        r.outcome_of("3B_007", record)


def test_quality_control_reports_by_default_and_excludes_on_request(rel, capsys):
    release, _ = rel
    flagged = {row["case_id"] for row in _qc_rows(release) if row["qc_status"] == "fail"}
    assert len(flagged) == 2
    r._SAID.clear()
    assert len(read_outcomes(release)) == N
    err = capsys.readouterr().err
    assert all(f"{cid} flagged by qc_status=fail; kept" in err for cid in flagged)
    r._SAID.clear()
    kept = {x["case_id"] for x in read_outcomes(release, qc="exclude")}
    assert kept.isdisjoint(flagged) and len(kept) == N - 2
    err = capsys.readouterr().err
    assert all(f"{cid} flagged by qc_status=fail; left out" in err for cid in flagged)


def _qc_rows(release):
    import csv

    with open(release / "data" / r.QC_FILE, newline="") as f:
        return list(csv.DictReader(f))


def test_qc_rule_reads_unknown_columns():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        data = Path(d)
        (data / r.QC_FILE).write_text(
            "patient,exclude_from_analysis,note\n3A_001_HE,yes,\n3A_002_HE,no,fine\n3B_001_HE,,Rejected\n"
        )
        got = r.read_qc(data, ["3A_001", "3A_002", "3B_001", "3B_002"])
    assert set(got.flagged) == {"3A_001", "3B_001"} and got.key_column == "patient"
    assert got.unlisted == ["3B_002"]


def test_imported_features_equal_the_organisers_tensors_and_record_their_tiling(rel, tmp_path):
    release, weights = rel
    out = tmp_path / "feats"
    assert main(["import-features", "--release", str(release), "--out", str(out), "--encoder", "vit-tiny",
                 "--encoder-weights", str(weights), "--min-tissue", "0.25"]) == 0  # fmt: skip
    data = load_cohort(release, out)
    assert data.feature_request.source.startswith(r"CHIMERA organisers")
    assert data.feature_request.target_spacing_um == 0.5 and data.feature_request.tile_px == 224
    assert data.feature_request.unreproduced == ()
    for i, cid in enumerate(data.case_ids[:4]):
        x = torch.load(release / r.FEATURES_DIR / f"{cid}_HE.pt", weights_only=True)
        xy = np.load(release / r.COORDS_DIR / f"{cid}_HE.npy")
        np.testing.assert_array_equal(data.bags[i].numpy(), x.numpy())
        np.testing.assert_array_equal(data.coords[i], np.stack([xy["x"], xy["y"]], 1))
        assert data.tile_lv0[i] == 448
    # unknown weights and tissue rule: the request says the container would not reproduce them
    assert main(["import-features", "--release", str(release), "--out", str(tmp_path / "f2"),
                 "--encoder", "vit-tiny"]) == 0  # fmt: skip
    req = load_cohort(release, tmp_path / "f2").feature_request
    assert len(req.unreproduced) == 2 and req.weights_sha256 == "unknown"


def _bad_pair(release, kind):
    pt = release / r.FEATURES_DIR / "3A_003_HE.pt"
    npy = release / r.COORDS_DIR / "3A_003_HE.npy"
    if kind == "rows":
        torch.save(torch.zeros(7, 192), pt)
    elif kind == "dict":
        torch.save({"features": torch.zeros(20, 192)}, pt)
    elif kind == "pickle":
        with open(pt, "wb") as f:
            pickle.dump(Exception("not a tensor"), f)
    elif kind == "object-npy":
        np.save(npy, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    elif kind == "width":
        torch.save(torch.zeros(20, 64), pt)


@pytest.mark.parametrize(
    ("kind", "match"),
    [("rows", "7 rows but its coordinates have 20"), ("dict", "holds a dict"),
     ("pickle", "not a plain tensor file"), ("object-npy", "Python objects"), ("width", "64-d")],
)  # fmt: skip
def test_a_bad_pair_is_one_clear_error_and_writes_nothing(rel, tmp_path, capsys, kind, match):
    release = _copy(rel, tmp_path)
    _bad_pair(release, kind)
    out = tmp_path / "feats"
    capsys.readouterr()
    assert (
        main(["import-features", "--release", str(release), "--out", str(out), "--encoder", "vit-tiny"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert "3A_003_HE" in err[-1] and match in err[-1]
    assert list(out.iterdir()) == []  # not even the good pairs before it, nor the staging folder


def test_package_refuses_imported_features_the_container_would_not_reproduce(rel, tmp_path, capsys):
    release, weights = rel
    feats = tmp_path / "feats"
    # one slide's tiles off extract's grid: the container's tiles would not be these
    moved = _copy(rel, tmp_path) / r.COORDS_DIR / "3A_001_HE.npy"
    xy = np.load(moved)
    xy["x"] += 17
    np.save(moved, xy)
    assert main(["import-features", "--release", str(tmp_path / "task3"), "--out", str(feats), "--encoder",
                 "vit-tiny", "--encoder-weights", str(weights), "--min-tissue", "0.25"]) == 0  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", "--cohort", str(release), "--features", str(feats), "--model", "ABMIL_Surv_PG",
                 "--config", "configs/small-cohort.json", "--max-epochs", "1",
                 "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    model = tmp_path / "model"
    assert main(["package", "--run", str(run), "--encoder-weights", str(weights), "--out", str(model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "off extract's grid" in err and "--accept-imported-tiling" in err
    assert not (model / "bundle").exists()
    assert main(["package", "--run", str(run), "--encoder-weights", str(weights), "--out", str(model),
                 "--accept-imported-tiling"]) == 0  # fmt: skip
    assert (model / "bundle").is_dir()


@pytest.mark.slow
def test_extract_train_and_outer_test_take_the_release_as_downloaded(tmp_path, rel):
    _, weights = rel
    release = tmp_path / "task3"
    write_cohort(release, patients=12, seed=2, slide_px=1792, workers=1, layout="release")
    jobs = cohort_jobs(release)
    assert len(jobs) == 12 and all(j.mask is not None and j.mask.name.endswith("_HE_mask.tif") for j in jobs)
    feats = tmp_path / "feats"
    assert main(["extract", "--cohort", str(release), "--out", str(feats), "--encoder", "vit-tiny",
                 "--weights", str(weights), "--device", "cpu"]) == 0  # fmt: skip
    assert len(list(feats.glob("*.h5"))) == 12
    ot = tmp_path / "ot"
    assert main(["outer-test", "--cohort", str(release), "--features", str(feats), "--models", "CoxPH_Clin",
                 "--out", str(ot)]) == 0  # fmt: skip
    assert len(list(ot.glob("outer*/*/test.csv"))) == 5


def test_data_card_is_written_with_its_figure(rel, tmp_path):
    release, _ = rel
    out = tmp_path / "card"
    assert main(["cohort-card", "--cohort", str(release), "--out", str(out)]) == 0
    md = (out / "card.md").read_text()
    card = json.loads((out / "card.json").read_text())
    assert (out / "card.png").stat().st_size > 10_000
    assert card["per_cohort"]["all"]["patients"] == N and "DESeq2-like" in card["rna"]["looks_like"]
    assert len(card["quality_control"]["flagged"]) == 2 and "## Quality control" in md
    assert card["lacks"]["slide"] and card["rna"]["gene_coverage_min"] == 1.0


def test_reverse_km_median_follow_up_matches_lifelines(rng):
    t = rng.exponential(50, 80).round(1) + 1
    e = rng.random(80) < 0.4
    kmf = KaplanMeierFitter().fit(t, event_observed=~e)
    assert reverse_km_median(t, e) == pytest.approx(kmf.median_survival_time_)


def test_rna_kind_tells_counts_normalised_values_and_logs(rng):
    counts = rng.poisson(300, 5000).astype(float)
    assert rna_kind(counts)[0].startswith("raw counts")
    assert rna_kind(counts * rng.uniform(0.5, 2, 5000))[0].startswith("DESeq2-like")
    assert rna_kind(np.log2(counts + 1))[0].startswith("log-scale")


def test_kit_layout_unchanged(tmp_path):
    write_cohort(tmp_path / "c", patients=6, seed=1, slides=False)
    assert open_cohort(tmp_path / "c").kind == "kit"
    assert len(read_outcomes(tmp_path / "c")) == 6
