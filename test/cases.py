"""The README's bad-input table as data: each row a change to the sample case, the extra arguments,
the exit code and what stderr must say. Run in-process (test_inference.py, any user) and through the
container contract harness (test_container_contract.py, root)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from survfusion.serving.sockets import CLINICAL_FILE, MASK_DIR, RNA_FILE, WSI_DIR
from survfusion.slides.tiffwrite import write_mask, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "test" / "input" / "interf0"
RNA = RNA_FILE
CLINICAL = CLINICAL_FILE


def world_readable(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def case(scratch: Path, name: str, mutate=None) -> Path:
    """A copy of the sample case under ``scratch/cases/name``, changed by ``mutate``."""
    path = scratch / "cases" / name.replace(" ", "_").replace(":", "").replace(",", "")
    shutil.copytree(SAMPLE, path)
    if mutate:
        mutate(path)
    world_readable(path)
    return path


def wsi(path: Path) -> Path:
    return next((path / WSI_DIR).glob("*.tif"))


def mask(path: Path) -> Path:
    return next((path / MASK_DIR).glob("*.tif"))


def blank_slide(path: Path) -> None:
    write_pyramid(
        wsi(path), np.full((2688, 2688, 3), 243, np.uint8), spacing_um=0.25, tile_px=512, n_levels=3
    )
    write_mask(mask(path), np.zeros((168, 168), bool), spacing_um=4.0)


def unknown_clinical(path: Path) -> None:
    rec = json.loads((path / CLINICAL).read_text())
    rec["smoking"] = "Sometimes"
    del rec["age"]
    (path / CLINICAL).write_text(json.dumps(rec))


def corrupt_stored_tiles(path: Path) -> None:
    """Overwrite every stored tile's bytes with noise: the header still opens, no tile decodes."""
    import tifffile

    target = wsi(path)
    with tifffile.TiffFile(target) as tif:
        spans = [
            (o, c)
            for lvl in tif.series[0].levels
            for o, c in zip(lvl.keyframe.dataoffsets, lvl.keyframe.databytecounts, strict=True)
        ]
    data = bytearray(target.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, max(c for _, c in spans), dtype=np.uint8).tobytes()
    for offset, count in spans:
        data[offset : offset + count] = noise[:count]
    target.write_bytes(bytes(data))


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
    (
        "WSI whose stored tiles are damaged",
        corrupt_stored_tiles,
        (),
        0,
        ["hist input replaced", "cannot be decoded"],
    ),
    ("WSI without tissue", blank_slide, (), 0, ["hist input replaced", "no tissue tile"]),
    (
        "no tissue mask",
        lambda p: mask(p).unlink(),
        (),
        0,
        ["no tissue mask given", "Otsu"],
    ),
    (
        "empty tissue mask",
        lambda p: write_mask(mask(p), np.zeros((168, 168), bool), spacing_um=4.0),
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
    """``run`` has returncode, stdout, stderr and output (the output file's bytes or None)."""
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


# --- hostile inputs (issue 9): files whose headers or values ask for too much ---------------------


def craft_tiff(
    path: Path, *, width: int, length: int, tile: int, samples: int = 3, compression: int = 8
) -> None:
    """A classic little-endian TIFF whose header claims ``width x length`` px in ``tile``-px tiles, all
    pointing at the same few bytes of data (headers may claim sizes that are never written)."""
    import struct

    n_tiles = -(-width // tile) * -(-length // tile)
    data = b"\x78\x9c\x03\x00\x00\x00\x00\x01"  # an empty zlib stream
    entries = [  # tag, type, values
        (256, 4, [width]), (257, 4, [length]), (258, 3, [8] * samples), (259, 3, [compression]),
        (262, 3, [2 if samples >= 3 else 1]), (277, 3, [samples]), (282, 5, [(10000, 1)]),
        (283, 5, [(10000, 1)]), (296, 3, [3]), (322, 4, [tile]), (323, 4, [tile]),
        (324, 4, None), (325, 4, None),
    ]  # fmt: skip
    if samples == 4:
        entries.append((338, 3, [2]))
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    blobs, out_entries = bytearray(), []
    base = 8 + ifd_size
    data_offset = base
    blobs += data
    for tag, typ, values in entries:
        if tag == 324:
            values = [data_offset] * n_tiles
        if tag == 325:
            values = [len(data)] * n_tiles
        if typ == 5:
            raw = b"".join(struct.pack("<II", *v) for v in values)
            count = len(values)
        else:
            raw = struct.pack("<" + ("H" if typ == 3 else "I") * len(values), *values)
            count = len(values)
        if len(raw) <= 4:
            out_entries.append(struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0"))
        else:
            out_entries.append(struct.pack("<HHII", tag, typ, count, base + len(blobs)))
            blobs += raw
    ifd = struct.pack("<H", len(entries)) + b"".join(out_entries) + struct.pack("<I", 0)
    path.write_bytes(b"II" + struct.pack("<HI", 42, 8) + ifd + bytes(blobs))


def set_json(name: str, change):
    """A mutation that loads the case's JSON file ``name``, applies ``change`` and writes it back."""

    def mutate(path: Path) -> None:
        value = json.loads((path / name).read_text())
        (path / name).write_text(json.dumps(change(value)))

    return mutate


def write_text(name: str, text: str):
    return lambda path: (path / name).write_text(text)


def nested_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def clinical_value(field: str, value):
    return set_json(CLINICAL, lambda rec: {**rec, field: value})


def duplicate_rna_keys(path: Path, n: int = 2000, value: float = 1e6) -> None:
    """Append ``n`` repeats of existing genes with a bogus value (raw text: JSON allows repeated keys)."""
    text = (path / RNA).read_text().rstrip()
    genes = list(json.loads(text))[:n]
    extra = ", ".join(f'"{g}": {value}' for g in genes)
    (path / RNA).write_text(text[:-1] + ", " + extra + "}")


def inputs_json(change):
    return set_json("inputs.json", change)


def declared_path(slug_part: str, rel):
    """inputs.json with the relative path of the socket whose slug contains ``slug_part`` replaced."""

    def change(items):
        for item in items:
            if slug_part in item["interface"]["slug"]:
                item["interface"]["relative_path"] = rel
        return items

    return inputs_json(change)


def wsi_bomb_tile(path: Path) -> None:
    craft_tiff(wsi(path), width=65536, length=65536, tile=65536, samples=4)


def wsi_huge_header(path: Path) -> None:
    craft_tiff(wsi(path), width=10**6, length=10**6, tile=4096)


def mask_huge_header(path: Path) -> None:
    craft_tiff(mask(path), width=10**6, length=10**6, tile=4096, samples=1)


def point_tiles_at(path: Path, payload: bytes, compression: str) -> None:
    """A 2,048^2 px slide (512-px tiles, ``compression``) whose every stored tile is ``payload``."""
    import struct

    import tifffile

    tifffile.imwrite(path, np.zeros((2048, 2048, 3), np.uint8), tile=(512, 512), compression=compression,
                     photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER")  # fmt: skip
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets, counts = tags["TileOffsets"], tags["TileByteCounts"]
        n = len(tif.pages[0].dataoffsets)
    for tag, value in ((offsets, len(data)), (counts, len(payload))):
        fmt = "<" + ("Q" if tag.dtype == 16 else "I" if tag.dtype == 4 else "H") * n
        struct.pack_into(fmt, data, tag.valueoffset, *([value] * n))
    path.write_bytes(bytes(data + payload))


def jpeg_frame_bomb(path: Path) -> None:
    """Every tile a 5 kB JPEG whose frame header claims 60,000^2 px (10 GiB for the decoder)."""
    import imagecodecs

    jpeg = bytearray(imagecodecs.jpeg8_encode(np.full((512, 512, 3), 200, np.uint8), level=90))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    point_tiles_at(wsi(path), bytes(jpeg), "jpeg")


def deflate_bomb(path: Path) -> None:
    """Every tile a 1 MB deflate stream of 1 GiB of zeros."""
    import zlib

    packer = zlib.compressobj(9)
    stream = b"".join(packer.compress(bytes(64 << 20)) for _ in range(16)) + packer.flush()
    point_tiles_at(wsi(path), stream, "zlib")


def two_slides(path: Path) -> None:
    """A second slide (blank) and its mask next to the case's own, named to sort after them."""
    for folder, source in ((WSI_DIR, wsi(path)), (MASK_DIR, mask(path))):
        shutil.copyfile(source, path / folder / "zz_other.tif")


def mask_is_the_slide(path: Path) -> None:
    shutil.copyfile(wsi(path), mask(path))


def mask_with_nan_background(path: Path) -> None:
    import tifffile

    from survfusion.slides.tissue import read_mask

    truth = read_mask(mask(path))
    values = np.where(truth, 1.0, np.nan).astype(np.float32)
    tifffile.imwrite(mask(path), values, resolution=(2500, 2500), resolutionunit="CENTIMETER")


def wsi_links_outside(path: Path) -> None:
    target = wsi(path)
    target.unlink()
    target.symlink_to("/etc/passwd")


# name, change to the sample case, exit code, what stderr must say, months equal to the clean case's
HOSTILE = [
    ("WSI: one 65536^2 RGBA tile (17 GB decoded)", wsi_bomb_tile, 0, ["hist input replaced", "decodes to 16,384 MiB"], False),
    ("WSI: header claims 10^6 x 10^6 px", wsi_huge_header, 0, ["hist input replaced", "exceeds the limit of 250,000 px"], False),
    ("WSI: JPEG tiles whose headers claim 60,000^2 px", jpeg_frame_bomb, 0, ["hist input replaced", "claims 60,000 x 60,000 px in its JPEG header"], False),
    ("WSI: deflate tiles that inflate to 1 GiB each", deflate_bomb, 0, ["hist input replaced", "cannot be decoded"], False),
    ("mask: header claims 10^6 x 10^6 px", mask_huge_header, 0, ["tissue mask", "exceeds the limit", "Otsu"], False),
    ("RNA: a 400-digit integer", write_text(RNA, '{"A1BG": ' + "9" * 400 + "}"), 0, ["rna input replaced", "a number of 400 characters"], False),
    ("RNA: a 5,000-digit integer", write_text(RNA, '{"A1BG": ' + "9" * 5000 + "}"), 0, ["rna input replaced", "a number of 5000 characters"], False),
    ("RNA: 100,000 nested arrays", write_text(RNA, nested_json()), 0, ["rna input replaced", "nested 100000 deep"], False),
    ("clinical: 100,000 nested arrays", write_text(CLINICAL, nested_json()), 0, ["clinical input replaced", "nested"], False),
    ("clinical: a 400-digit age", write_text(CLINICAL, '{"age": ' + "9" * 400 + "}"), 0, ["clinical input replaced", "a number of 400"], False),
    ("clinical: age 1e308", clinical_value("age", 1e308), 0, ["age=1e+308 outside its valid range [18, 110]"], False),
    ("clinical: age -5", clinical_value("age", -5), 0, ["age=-5 outside its valid range"], False),
    ("clinical: age 1e30", clinical_value("age", "1e30"), 0, ["age=1e+30 outside its valid range"], False),
    ("clinical: no_instillations 1e6", clinical_value("no_instillations", 1e6), 0, ["no_instillations=1e+06 outside its valid range [0, 100]"], False),
    ("RNA: 2,000 repeated keys valued 1e6", duplicate_rna_keys, 0, ["2000 repeated key(s)", "the first value of each was used"], True),
    ("RNA: negative and huge values", set_json(RNA, lambda e: {**e, **dict.fromkeys(list(e)[:3], -5.0), **dict.fromkeys(list(e)[3:5], 1e300)}), 0, ["3 negative values set to 0", "2 values above"], False),
    ("inputs.json: a nested value", inputs_json(lambda items: [*items, {"interface": {"slug": [[["x"]]], "relative_path": {"a": [1]}}}]), 0, ["1 entry without a usable slug"], True),
    ("inputs.json: relative_path null", declared_path("rna", None), 0, ["1 entry without a usable slug"], True),
    ("inputs.json: a 10,000-character path", declared_path("rna", "a" * 10_000), 0, ["1 entry without a usable slug"], True),
    ("inputs.json: a path with ..", declared_path("rna", "../../../etc/passwd"), 0, ["leads outside the input folder; refused"], True),
    ("inputs.json: an absolute path", declared_path("clinical", "/etc/passwd"), 0, ["leads outside the input folder; refused"], True),
    ("WSI: a symlink to /etc/passwd", wsi_links_outside, 0, ["links outside the input folder; refused", "hist input replaced"], False),
    ("two slides in the socket folder", two_slides, 0, ["2 slides in", "using 3A_001_HE.tif (the first by name)", "its name matches the slide"], True),
    ("mask: the H&E image itself", mask_is_the_slide, 0, ["colour channels", "is it the tissue mask?"], False),
    ("mask: NaN background", mask_with_nan_background, 0, [], True),
]  # fmt: skip
