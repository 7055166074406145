"""Synthetic worlds with a known answer, and the one fitted input design.

The worlds: each patient's log-hazard is its terms plus noise; oracle.json's figures are the
C-index (scikit-survival) of exactly those columns; the needle world plants its rare class as
documented; the null world plants nothing. The design: fitted on the pool only, what it gives the
training loop is what the container's ``RnaVectorizer.transform`` gives each file; its PCA is
scikit-learn's; its MAD selection is scipy's; the slide-aware linear baseline, folded into a
``LinearCox_Hist``, predicts what the library's model predicts.
"""

import csv
import json

import numpy as np
import pytest
from scipy.stats import median_abs_deviation
from sklearn.decomposition import PCA
from sksurv.metrics import concordance_index_censored

from survfusion.cli.main import main
from survfusion.synth.cohort import CLASSES, make_patients, write_cohort
from survfusion.synth.oracle import outer_oracle
from survfusion.synth.worlds import NEEDLE_FRACTION, WORLDS
from survfusion.training.dataset import load_cohort
from survfusion.training.design import PCA_RTOL, InputDesign, gene_scores, pca_projection, top_columns
from survfusion.training.protocol import outer_folds
from survfusion.training.train import TrainConfig


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def needle(tmp_path_factory):
    """A 40-patient needle-world cohort without slides, and synthetic vit-tiny features."""
    root = tmp_path_factory.mktemp("needle")
    write_cohort(root / "cohort", patients=40, seed=2, world="needle", slides=False)
    assert main(["synth-features", "--cohort", str(root / "cohort"), "--out", str(root / "features"),
                 "--encoder", "vit-tiny", "--tiles", "32"]) == 0  # fmt: skip
    return root / "cohort", root / "features"


@pytest.mark.parametrize("name", sorted(WORLDS))
def test_each_world_is_its_terms_plus_noise_and_oracle_json_scores_them(name, tmp_path):
    summary = write_cohort(tmp_path, patients=60, seed=1, world=name, slides=False)
    rows = _rows(tmp_path / "oracle.csv")
    outcomes = {r["case_id"]: r for r in _rows(tmp_path / "outcomes.csv")}
    t = np.array([float(outcomes[r["case_id"]]["time_months"]) for r in rows])
    e = np.array([outcomes[r["case_id"]]["event"] == "1" for r in rows])
    free = np.array([float(r["noise_free_log_hazard"]) for r in rows])
    terms = {
        k.removeprefix("term_"): np.array([float(r[k]) for r in rows])
        for k in rows[0]
        if k.startswith("term_")
    }
    # the columns are rounded to 6 decimals: their sum agrees to a few 1e-6
    np.testing.assert_allclose(sum(terms.values(), np.zeros(len(rows))), free, atol=5e-6)
    noise = np.array([float(r["log_hazard"]) for r in rows]) - free
    assert 0.3 < noise.std() < 0.7  # N(0, 0.5^2) over 60 patients
    assert summary["world"] == name and json.loads((tmp_path / "oracle.json").read_text()) == summary
    want = concordance_index_censored(e, t, free)[0]
    assert summary["noise_free_c_index"] == pytest.approx(want, abs=1e-12)
    for k, v in terms.items():
        assert summary["terms_c_index"][k] == pytest.approx(concordance_index_censored(e, t, v)[0], abs=1e-12)
    if name == "null":
        assert terms == {} and summary["noise_free_c_index"] == 0.5  # every risk tied
    else:
        assert summary["noise_free_c_index"] > 0.55


def test_the_needle_world_plants_a_rare_class_in_some_patients():
    pts = make_patients(400, seed=0, world="needle")
    frac = np.array([p.mix[CLASSES.index("budding")] for p in pts])
    carriers = frac > 0
    assert 0.28 < carriers.mean() < 0.42  # NEEDLE_SHARE 0.35 of 400: +-3.5 binomial sd
    assert NEEDLE_FRACTION[0] <= frac[carriers].min() and frac[carriers].max() <= NEEDLE_FRACTION[1]
    np.testing.assert_allclose([p.mix.sum() for p in pts], 1.0, rtol=1e-12)
    assert all(p.terms["needle"] == 1.5 * c for p, c in zip(pts, carriers, strict=True))
    others = make_patients(400, seed=0, world="default")
    assert all(p.mix[4] == 0 for p in others)
    # the needle's own random stream: the other draws of the seed are the default world's
    assert all(p.program == q.program and p.clinical == q.clinical for p, q in zip(pts, others, strict=True))


def test_the_generator_alone_gives_each_outer_test_set_and_its_noise_free_oracle(needle):
    # scripts/worlds_sets.py scores the oracle on test sets whose per-patient files were lost
    cohort, feats = needle
    data = load_cohort(cohort, feats)
    fold = outer_folds(data, 5, 3)
    oracle = {r["case_id"]: float(r["noise_free_log_hazard"]) for r in _rows(cohort / "oracle.csv")}
    sets = outer_oracle(40, 2, "needle", outer=5, protocol_seed=3)
    assert len(sets) == 5
    for o, (ids, c) in enumerate(sets):
        m = fold == o
        assert ids == {data.case_ids[i] for i in np.flatnonzero(m)}
        eta = np.array([oracle[data.case_ids[i]] for i in np.flatnonzero(m)])
        want = concordance_index_censored(data.event[m], data.time_months[m], eta)[0]
        # the same order of the same patients gives the same C exactly (oracle.csv rounds eta to 6
        # decimals, which could only matter if two log-hazards agreed to 6 decimals)
        assert c == pytest.approx(want, abs=1e-12)


def test_the_design_gives_training_what_the_container_gives_each_file(needle):
    """With MAD selection and a PCA: design.rna(data) == RnaVectorizer.transform of each file (the
    container's path), the PCA is scikit-learn's on the pool, and nothing came from outside it."""
    cohort, feats = needle
    data = load_cohort(cohort, feats)
    pool = np.arange(30)
    d = InputDesign(top_genes=300, select="mad", log1p=True, rna_pca=5).fit(data, pool)
    got = d.rna(data)
    want = np.stack([d.rna_.transform(data.rna_doc(i)).values for i in range(len(data))])
    np.testing.assert_array_equal(got, want)  # the same float64 steps, then one float32 rounding
    # MAD: scipy's median absolute deviation of log1p expression over the pool, top 300 kept
    raw = data.raw_rna()
    mad = median_abs_deviation(np.log1p(raw[pool]), axis=0)
    np.testing.assert_allclose(gene_scores(raw[pool], "mad"), mad, rtol=1e-12, atol=1e-15)
    assert list(d.rna_columns_) == sorted(np.argsort(-mad, kind="stable")[:300])
    # the PCA: scikit-learn's scores of the standardised pool genes, up to each component's sign
    x = np.log1p(raw[pool][:, d.rna_columns_])
    sd = x.std(0)
    z = (x - x.mean(0)) / np.where(sd > 0, sd, 1)
    ref = PCA(n_components=5, svd_solver="full").fit_transform(z)
    ours = got[pool].astype(np.float64)
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-4, atol=1e-4)  # float32 inputs
    # fitted on the pool alone: other held-out patients do not move it
    other = load_cohort(cohort, feats)
    other.rna_paths = other.rna_paths[:30] + other.rna_paths[30:][::-1]
    other._rna_docs = {}
    d2 = InputDesign(top_genes=300, select="mad", log1p=True, rna_pca=5).fit(other, pool)
    np.testing.assert_array_equal(d2.rna_.projection["components"], d.rna_.projection["components"])


def test_synthetic_features_draw_each_patients_tiles_from_a_stream_of_its_own(needle):
    """Tile noise independent between patients: the 40 slide means span (numerically) far more
    directions than the 5 tissue classes' mix could give them, and no two bags share a tile."""
    cohort, feats = needle
    data = load_cohort(cohort, feats)
    means = np.stack([b.double().mean(0).numpy() for b in data.bags])
    sv = np.linalg.svd(means - means.mean(0), compute_uv=False)
    assert np.count_nonzero(sv > 1e-3 * sv[0]) > 2 * len(CLASSES)
    firsts = {tuple(b[0, :4].tolist()) for b in data.bags}
    assert len(firsts) == len(data.bags)


def test_pca_projection_is_orthonormal_and_signed():
    x = np.random.default_rng(0).normal(size=(50, 8)) @ np.diag([5, 4, 3, 2, 1, 1, 1, 1.0])
    p = pca_projection(x, 3)
    np.testing.assert_allclose(p["components"] @ p["components"].T, np.eye(3), atol=1e-12)
    top = np.abs(p["components"]).argmax(axis=1)
    assert (p["components"][np.arange(3), top] > 0).all()
    assert list(top_columns(np.array([1.0, 3.0, 3.0, 2.0]), 2)) == [1, 2]  # a tie keeps the earlier


def test_pca_projection_keeps_only_directions_above_rounding_and_matches_sklearn():
    """Rows spanning 3 directions plus float32-sized jitter: asking for 6 components gives the 3
    real ones (standardising the jitter's scores would blow rounding up to unit variance), and they
    are scikit-learn's principal axes up to sign."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 10)) + 1e-9 * rng.normal(size=(40, 10))
    p = pca_projection(x, 6, standardise=False)
    assert p["components"].shape == (3, 10)
    ref = PCA(3).fit(x).components_
    np.testing.assert_allclose(np.abs(p["components"] @ ref.T), np.eye(3), atol=1e-6)
    assert PCA_RTOL * np.linalg.svd(x - x.mean(0), compute_uv=False)[0] > 1e-9 * np.sqrt(40 * 10)


@pytest.mark.filterwarnings("ignore:all coefficients are zero")
def test_the_slide_aware_baseline_folds_into_a_linear_cox_that_predicts_the_librarys_risks(needle):
    from survfusion.training.baselines import bundle_risks, design, fit_baseline, linear_bundle

    cohort, feats = needle
    data = load_cohort(cohort, feats)
    pool, test = np.arange(32), np.arange(32, 40)
    cfg = TrainConfig(model="CoxNet_ClinRNAHist", rna_top_genes=64, rna_log1p=True)
    bundle, pool_risk, info = linear_bundle(data, cfg, pool)
    assert bundle.model_name == "LinearCox_Hist" and {"l1_ratio", "alpha", "inner_c_index"} <= set(info)
    inputs = design(data, pool, "clinical+rna+hist", cfg=cfg)
    assert inputs.design.hist_ is not None and inputs.matrix(data, pool).shape[1] <= 27 + 64 + 16
    fitted = fit_baseline(cfg.model, inputs.matrix(data, pool), data.time_months[pool], data.event[pool])
    # float32 weights folded from float64 coefficients: ~1e-6 relative
    np.testing.assert_allclose(
        bundle_risks(bundle, data, test), fitted(inputs.matrix(data, test)), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(pool_risk, fitted(inputs.matrix(data, pool)), rtol=1e-4, atol=1e-4)
