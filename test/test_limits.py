"""Limits checked before allocating: TIFF headers, bounded JSON, streamed thumbnails, plausible values."""

import json

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from survfusion.errors import UserError
from survfusion.fileio import json_depth, read_json
from survfusion.limits import MAX_JSON_DEPTH
from survfusion.serving.preprocess import ClinicalEncoder, RnaVectorizer
from survfusion.slides.reader import SlideError, TiffSlide, area_reduce
from survfusion.slides.tiffheader import ImageLimitError, check_tiff_limits, read_pages


@pytest.mark.parametrize("bigtiff", [False, True])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_header_sizes_equal_tifffile(tmp_path, bigtiff, byteorder):
    path = tmp_path / "p.tif"
    image = np.zeros((600, 900, 3), np.uint8)
    with tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as tif:
        tif.write(image, tile=(256, 256), compression="deflate", subifds=1)
        tif.write(image[::2, ::2], tile=(256, 256), compression="deflate", subfiletype=1)
        tif.write(image[:, :, 0], rowsperstrip=64, compression="deflate")
    with tifffile.TiffFile(path) as tif:
        want = sorted((p.imagewidth, p.imagelength, len(p.dataoffsets)) for p in tif.pages)
        want += [(s.imagewidth, s.imagelength, len(s.dataoffsets)) for p in tif.pages for s in p.pages or []]
    got = sorted((p.width, p.length, p.segments) for p in read_pages(path))
    assert got == sorted(want)
    assert {(p.segment_width, p.segment_length) for p in read_pages(path)} == {(256, 256), (900, 64)}


def test_header_limits_refuse_before_reading(tmp_path):
    from cases import craft_tiff

    path = tmp_path / "huge.tif"
    craft_tiff(path, width=300_000, length=1000, tile=4096)
    with pytest.raises(ImageLimitError, match="300,000 x 1,000 px exceeds the limit of 250,000"):
        check_tiff_limits(path, "slide")
    craft_tiff(path, width=8192, length=8192, tile=8192, samples=4)  # 256 MiB in one tile
    with pytest.raises(SlideError, match="decodes to 256 MiB"):
        TiffSlide(path)
    path.write_bytes(b"II*\x00" + (10**6).to_bytes(4, "little"))
    with pytest.raises(ImageLimitError, match="outside the file"):
        check_tiff_limits(path, "slide")


def test_thumbnail_is_streamed_and_equals_the_whole_level(tmp_path, monkeypatch):
    import survfusion.slides.reader

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1000, 1500, 3), dtype=np.uint8)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, rowsperstrip=50, compression="deflate", resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")  # fmt: skip
    monkeypatch.setattr(survfusion.slides.reader, "THUMBNAIL_BAND_BYTES", 1500 * 3 * 40)
    heights = []
    with TiffSlide(path) as slide:
        original = slide.read_regions

        def spy(level, xy, size):
            heights.append(size[1])
            return original(level, xy, size)

        slide.read_regions = spy
        thumb, downsample = slide.thumbnail(max_px=512)
    assert downsample == 3 and max(heights) <= 40 and len(heights) > 10
    np.testing.assert_array_equal(thumb, area_reduce(image, 3))


def _write(tmp_path, text: str):
    path = tmp_path / "x.json"
    path.write_text(text)
    return path


def test_read_json_limits_and_duplicates(tmp_path):
    doc = read_json(_write(tmp_path, '{"a": 1, "b": 2, "a": 3, "a": 4}'), "RNA")
    assert doc.value == {"a": 1, "b": 2} and doc.duplicate_keys == 2 and doc.duplicate_examples == ("a",)
    assert read_json(_write(tmp_path, '{"x": ' + "9" * 99 + "}"), "RNA").value["x"] == float("9" * 99)
    for text, needle in [
        ('{"x": ' + "9" * 101 + "}", "a number of 101 characters"),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), f"nested {MAX_JSON_DEPTH + 1} deep"),
        ("root:x:0:0:root:/root:/bin/bash", "not usable JSON"),
    ]:
        with pytest.raises(UserError, match=needle) as err:
            read_json(_write(tmp_path, text), "RNA")
        assert "root:x" not in str(err.value)
    with pytest.raises(UserError, match="larger than the limit"):
        read_json(_write(tmp_path, '{"a": 1}'), "RNA", max_bytes=4)
    (tmp_path / "bin.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(UserError, match="not UTF-8"):
        read_json(tmp_path / "bin.json", "RNA")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=20,
)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_depth_matches_the_structure(value):
    """Brackets inside strings never count (the depth check runs on raw text before parsing)."""
    assert json_depth(json.dumps(value)) == _depth(value)


def test_clinical_ranges_and_rna_bounds():
    enc = ClinicalEncoder({"age": (68.9, 9.0), "no_instillations": (19.2, 9.3)}, {})
    for record, n_warnings in [
        ({"age": 70, "no_instillations": 20}, 0),
        ({"age": 17.9, "no_instillations": 100}, 1),
    ]:
        assert len(enc.transform(record).warnings) == n_warnings
    assert enc.transform({"age": -5, "no_instillations": 1e6}).values.tolist() == [0.0, 0.0]  # the means
    vec = RnaVectorizer(["A", "B", "C"]).with_train_max(np.array([[5.0, 0.2, 3.0], [7.0, 0.1, 1.0]]))
    out = vec.transform({"A": 701.0, "B": 150.0, "C": -1.0})
    assert out.values.tolist() == [700.0, 100.0, 0.0]  # 100x max(train max, 1); negatives to 0
    assert "2 values above 100x the gene's largest training value" in " ".join(out.warnings)
    again = RnaVectorizer.from_dict(json.loads(json.dumps(vec.to_dict())))
    assert again.transform({"A": 701.0, "B": 150.0, "C": 1.0}).values.tolist() == [700.0, 100.0, 1.0]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.booleans())
def test_jpeg_size_reads_the_frame_header(width, height, optimize):
    import imagecodecs

    from survfusion.slides.tiffheader import jpeg_size

    image = np.zeros((height, width, 3), np.uint8)
    data = imagecodecs.jpeg8_encode(image, level=80, optimize=optimize)
    assert jpeg_size(data) == (width, height)
    assert jpeg_size(b"not a jpeg") is None and jpeg_size(data[:2]) is None
