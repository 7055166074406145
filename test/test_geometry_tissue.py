"""Level choice by spacing (hand-computed), tile grid, mask alignment and coverage, Otsu fallback."""

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import tissue_image

from survfusion.errors import UserError
from survfusion.slides.geometry import plan_read, tile_grid
from survfusion.slides.reader import open_slide
from survfusion.slides.tiffwrite import write_mask, write_pyramid
from survfusion.slides.tissue import find_tissue, read_mask, tile_boxes, tile_coverage


def test_level_at_the_target_is_used_as_is():
    # 0.25 µm/px with downsamples 1, 4, 16: level 1 is exactly 1.0 µm/px.
    p = plan_read(spacing_um=0.25, downsamples=[1, 4, 16])
    assert (p.level, p.read_px, p.scale, p.tile_lv0) == (1, 224, 1.0, 896)
    assert p.spacing_um == 1.0


def test_missing_10x_level_reads_finer_and_downsamples():
    # 0.25 µm/px with downsamples 1, 2, 8: 0.25, 0.5, 2.0 -> read level 1 (0.5) at 448 px, scale 2.
    p = plan_read(spacing_um=0.25, downsamples=[1, 2, 8])
    assert (p.level, p.read_px, p.scale, p.tile_lv0) == (1, 448, 2.0, 896)


def test_odd_spacing_within_tolerance():
    # 0.2425 µm/px, downsamples 1, 2, 4: 0.2425, 0.485, 0.97 -> 0.97 is within 5 % of 1.0.
    p = plan_read(spacing_um=0.2425, downsamples=[1, 2, 4])
    assert (p.level, p.read_px, p.scale, p.tile_lv0) == (2, 224, 1.0, 896)
    assert p.spacing_um == pytest.approx(0.97)


def test_odd_spacing_outside_tolerance():
    # 0.2425 with tolerance 1 %: the nearest finer level is 2 (0.97), read at round(224 / 0.97) = 231 px.
    p = plan_read(spacing_um=0.2425, downsamples=[1, 2, 4], tolerance=0.01)
    assert (p.level, p.read_px, p.tile_lv0) == (2, 231, 924)
    assert p.scale == pytest.approx(231 / 224)
    assert p.spacing_um == pytest.approx(0.97 * 231 / 224)
    # Without level 2 it is level 1 (0.485) at round(224 / 0.485) = 462 px.
    p = plan_read(spacing_um=0.2425, downsamples=[1, 2], tolerance=0.01)
    assert (p.level, p.read_px, p.tile_lv0) == (1, 462, 924)


def test_never_upsample():
    with pytest.raises(UserError, match="upsampled"):
        plan_read(spacing_um=2.0, downsamples=[1, 2])
    p = plan_read(spacing_um=0.5, downsamples=[1], target_spacing_um=0.5)
    assert (p.level, p.read_px) == (0, 224)


def test_tile_grid_only_whole_tiles():
    xy = tile_grid(width_lv0=1000, height_lv0=500, tile_lv0=224)
    assert xy.shape == (4 * 2, 2)
    assert xy[:5].tolist() == [[0, 0], [224, 0], [448, 0], [672, 0], [0, 224]]
    assert tile_grid(width_lv0=100, height_lv0=100, tile_lv0=224).shape == (0, 2)


def brute_force_coverage(mask_lv0, xy, tile):
    return np.array([mask_lv0[y : y + tile, x : x + tile].mean() for x, y in xy])


def test_coverage_equals_brute_force_with_a_mask_8x_smaller(rng):
    mask_small = rng.random((60, 80)) < 0.4
    mask_lv0 = np.kron(mask_small, np.ones((8, 8), bool))  # the same mask at level 0
    xy = tile_grid(width_lv0=640, height_lv0=480, tile_lv0=32)
    got = tile_coverage(mask_small, xy, 32, 1 / 8, 1 / 8)
    np.testing.assert_allclose(got, brute_force_coverage(mask_lv0, xy, 32))


def test_integral_coverage_equals_direct_sums_at_any_scale(rng):
    mask = rng.random((37, 53)) < 0.5
    xy = rng.integers(0, 900, (200, 2))
    sx, sy = 53 / 1000, 37 / 700
    got = tile_coverage(mask, xy, 96, sx, sy)
    x0, y0, x1, y1 = tile_boxes(xy, 96, sx, sy, mask.shape)
    direct = [mask[a:c, b:d].mean() for a, b, c, d in zip(y0, x0, y1, x1, strict=True)]
    np.testing.assert_allclose(got, direct)


@pytest.mark.parametrize("value", [1, 255])
def test_mask_values_and_resolution(tmp_path, value):
    _, truth = tissue_image(400, 480, seed=2)
    path = tmp_path / "m.tif"
    write_mask(path, truth, spacing_um=2.0, value=value)
    np.testing.assert_array_equal(read_mask(path), truth)


def test_mha_mask(tmp_path):
    _, truth = tissue_image(50, 70, seed=3)
    path = tmp_path / "m.mha"
    sitk.WriteImage(sitk.GetImageFromArray(truth.astype(np.uint8)), str(path))
    np.testing.assert_array_equal(read_mask(path), truth)


def test_huge_mask_is_pooled_while_streaming(tmp_path):
    _, truth = tissue_image(512, 768, seed=4)
    path = tmp_path / "big.tif"
    write_mask(path, truth, spacing_um=0.25)
    pooled = read_mask(path, max_pixels=128 * 192)
    assert pooled.shape == (128, 192)
    expected = truth.reshape(128, 4, 192, 4).any(axis=(1, 3))
    np.testing.assert_array_equal(pooled, expected)


@pytest.fixture
def slide_and_truth(tmp_path):
    image, truth = tissue_image(1024, 1280, seed=5)
    path = tmp_path / "s.tif"
    write_pyramid(path, image, spacing_um=0.5, tile_px=256, n_levels=3)
    return path, truth


def test_mask_8x_smaller_aligns_by_extent(tmp_path, slide_and_truth):
    path, truth = slide_and_truth
    small = truth.reshape(128, 8, 160, 8).mean(axis=(1, 3)) > 0.5
    mask_path = tmp_path / "m.tif"
    write_mask(mask_path, small, spacing_um=4.0)
    with open_slide(path) as slide:
        tissue, warnings = find_tissue(slide, mask_path)
    assert warnings == [] and tissue.source == "mask"
    assert (tissue.scale_x, tissue.scale_y) == (1 / 8, 1 / 8)
    xy = tile_grid(width_lv0=1280, height_lv0=1024, tile_lv0=64)
    cov = tissue.coverage(xy, 64)
    true_cov = brute_force_coverage(truth, xy, 64)
    assert np.abs(cov - true_cov).mean() < 0.05


@pytest.mark.parametrize("problem", ["none", "missing", "empty", "garbage"])
def test_mask_problems_fall_back_to_otsu_with_a_reason(tmp_path, slide_and_truth, problem):
    path, truth = slide_and_truth
    mask_path = {"none": None, "missing": tmp_path / "nope.tif"}.get(problem, tmp_path / "m.tif")
    if problem == "empty":
        write_mask(mask_path, np.zeros((64, 80), bool), spacing_um=8.0)
    elif problem == "garbage":
        mask_path.write_bytes(b"\x00" * 100)
    with open_slide(path) as slide:
        tissue, warnings = find_tissue(slide, mask_path)
    assert tissue.source == "otsu"
    assert len(warnings) == 1 and "Otsu" in warnings[0]
    reason = {
        "none": "no tissue mask given",
        "missing": "not found",
        "empty": "is empty",
        "garbage": "unreadable",
    }[problem]
    assert reason in warnings[0]
    # Otsu finds the planted tissue.
    xy = tile_grid(width_lv0=1280, height_lv0=1024, tile_lv0=64)
    agree = (tissue.coverage(xy, 64) > 0.5) == (brute_force_coverage(truth, xy, 64) > 0.5)
    assert agree.mean() > 0.9


def test_blank_slide_has_no_tissue(tmp_path):
    path = tmp_path / "blank.tif"
    write_pyramid(path, np.full((512, 512, 3), 243, np.uint8), spacing_um=0.5, tile_px=256, n_levels=2)
    with open_slide(path) as slide:
        tissue, _ = find_tissue(slide, None)
    assert not tissue.mask.any()
