"""Clinical and RNA encoders on the real schema, real gene order, and every kind of bad value."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from survfusion.errors import UserError
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer, clinical_schema, reference_genes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


def record(**over):
    base = {
        "age": "71",
        "sex": "Male",
        "smoking": "-1",
        "tumor": "Primary",
        "stage": "T1HG",
        "substage": "T1m",
        "grade": "G3",
        "reTUR": "Yes",
        "LVI": "No",
        "variant": "UCC",
        "EORTC": "Highest risk",
        "no_instillations": "24",
        "BRS": "BRS2",
    }
    base.update(over)
    return base


@pytest.fixture
def encoder():
    return ClinicalEncoder.fit(
        [record(age="60", no_instillations="10"), record(age="80", no_instillations="30")]
    )


def test_packaged_gene_order_and_schema():
    genes = reference_genes()
    assert len(genes) == len(set(genes)) == 19359
    assert genes == sorted(genes)
    schema = clinical_schema()
    assert len(schema["numeric"]) + len(schema["categorical"]) == 13
    assert set(schema["labels"]) == {"Time_to_prog_or_FUend", "progression"}


def test_packaged_reference_equals_the_shared_copy():
    if not SHARED.is_dir():
        pytest.skip("shared/reference is not beside this checkout (only the design repo has it)")
    assert reference_genes() == json.loads((SHARED / "gene_order.json").read_text())
    assert clinical_schema() == json.loads((SHARED / "clinical_schema.json").read_text())


def test_schema_gives_27_inputs_in_sklearn_order(encoder):
    assert encoder.dim == 27
    names = encoder.feature_names
    assert names[:2] == ["age", "no_instillations"]
    assert names[2:4] == ["sex=Female", "sex=Male"]
    assert names[-3:] == ["BRS=BRS1", "BRS=BRS2", "BRS=BRS3"]


def test_every_schema_category_is_one_hot(encoder):
    for field, cats in clinical_schema()["categorical"].items():
        for cat in cats:
            enc = encoder.transform(record(**{field: cat}))
            idx = encoder.feature_names.index(f"{field}={cat}")
            assert enc.values[idx] == 1.0
            block = [i for i, n in enumerate(encoder.feature_names) if n.startswith(f"{field}=")]
            assert enc.values[block].sum() == 1.0
            assert not [w for w in enc.warnings if "label" not in w]


def test_numbers_standardised_with_training_statistics(encoder):
    enc = encoder.transform(record(age="80", no_instillations=10))  # string and int both accepted
    assert enc.values[0] == pytest.approx(1.0)  # (80 - 70) / 10
    assert enc.values[1] == pytest.approx(-1.0)
    assert enc.warnings == []


def test_unknown_and_missing_values_are_repaired_and_reported(encoder):
    rec = record(smoking="Sometimes", age="n/a")
    del rec["BRS"], rec["no_instillations"]
    rec["progression"] = "1"
    rec["Time_to_prog_or_FUend"] = "33"
    rec["hospital"] = "X"
    enc = encoder.transform(rec)
    v, names = enc.values, encoder.feature_names
    assert v[0] == 0.0 and v[1] == 0.0  # training means
    assert all(v[names.index(f"smoking={c}")] == 0 for c in ("-1", "No", "Yes"))
    assert all(v[names.index(f"BRS={c}")] == 0 for c in ("BRS1", "BRS2", "BRS3"))
    text = "\n".join(enc.warnings)
    assert len(enc.warnings) == 6
    for part in (
        "age not a number ('n/a')",
        "no_instillations missing",
        "smoking='Sometimes' is not a known",
        "BRS missing",
        "label field(s) ignored",
        "hospital",
    ):
        assert part in text


def test_label_fields_never_change_the_vector(encoder):
    plain = encoder.transform(record()).values
    labelled = encoder.transform(record(progression="1", Time_to_prog_or_FUend="12")).values
    np.testing.assert_array_equal(plain, labelled)


@pytest.mark.parametrize("sort_keys", [False, True])
def test_clinical_json_round_trip_keeps_the_input_order(encoder, sort_keys):
    # A JSON writer that sorts keys (as the bundle's does) must not permute the model's inputs.
    again = ClinicalEncoder.from_dict(json.loads(json.dumps(encoder.to_dict(), sort_keys=sort_keys)))
    assert again.feature_names == encoder.feature_names
    for rec in (record(), record(sex="Female", BRS="BRS3", smoking="Yes", LVI="-1")):
        np.testing.assert_array_equal(again.transform(rec).values, encoder.transform(rec).values)


def test_integer_category_codes_are_accepted(encoder):
    assert (
        encoder.transform(record(smoking=-1)).values.tolist() == encoder.transform(record()).values.tolist()
    )


def test_not_an_object_is_a_clear_error(encoder):
    with pytest.raises(UserError, match="expected a JSON object"):
        encoder.transform(["age", 3])


def test_rna_fixed_order_and_repairs():
    genes = reference_genes()
    vec = RnaVectorizer()
    expr = {g: float(i % 7) for i, g in enumerate(genes)}
    del expr[genes[0]], expr[genes[1]]
    expr[genes[2]] = "NaN"
    expr[genes[3]] = math.inf
    expr[genes[4]] = "12.5"
    expr["NOT_A_GENE"] = 3.0
    enc = vec.transform(expr)
    assert enc.values.shape == (19359,) and enc.values.dtype == np.float32
    assert enc.values[:4].tolist() == [0, 0, 0, 0]
    assert enc.values[4] == 12.5
    assert enc.values[10] == 10 % 7
    assert enc.warnings == [
        "RNA: 2 of 19359 genes missing (0.0%); filled with 0",
        "RNA: 2 of 19359 values not finite numbers (NaN, inf, text); set to 0",
        "RNA: 1 genes not in the CHIMERA gene order; ignored",
    ]
    assert vec.usable_genes(expr) == 19359 - 4


def test_rna_order_does_not_depend_on_json_key_order():
    vec = RnaVectorizer(["A", "B", "C"])
    assert vec.transform({"C": 3, "A": 1, "B": 2}).values.tolist() == [1, 2, 3]


def test_rna_log1p_option_and_round_trip():
    vec = RnaVectorizer(["A", "B"], log1p=True)
    enc = vec.transform({"A": np.e - 1, "B": -4})
    np.testing.assert_allclose(enc.values, [1.0, 0.0], rtol=1e-6)
    assert "negative" in enc.warnings[0]
    again = RnaVectorizer.from_dict(json.loads(json.dumps(vec.to_dict())))
    assert again.log1p and again.genes == ["A", "B"]


def test_rna_default_is_raw_values():
    assert RnaVectorizer(["A"]).transform({"A": 1000.0}).values[0] == 1000.0


def test_rna_subset_model_ignores_unused_reference_genes_quietly():
    genes = reference_genes()
    vec = RnaVectorizer(genes[:10])
    enc = vec.transform({g: 1.0 for g in genes} | {"NOT_A_GENE": 2.0})
    assert enc.values.tolist() == [1.0] * 10
    assert enc.warnings == ["RNA: 1 genes not in the CHIMERA gene order; ignored"]
