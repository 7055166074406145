"""Documented limits on what an input may ask of us, checked before anything is allocated.

Every size read from a file header, every JSON number and every path from ``inputs.json`` is
untrusted. An input over a limit is treated like a damaged one (its modality falls back, with a
warning naming the limit); nothing is decoded or allocated first. The README's bad-input table lists
these numbers; they are generous for real CHIMERA data (slides of about 100,000 px a side at
0.25 µm/px, 512-px JPEG tiles, RNA files of about 0.6 MB).
"""

from __future__ import annotations

# Images (slides and masks)
MAX_SIDE_PX = 250_000  # level 0, either side: 62.5 mm at 0.25 µm/px
MAX_SEGMENT_BYTES = 64 * 2**20  # one stored tile or strip, decoded
MAX_SEGMENTS = 2_000_000  # stored tiles or strips in one image page (their offsets are read whole)
MAX_PAGES = 64  # image pages (pyramid levels, SubIFDs) in one TIFF
MAX_GRID_TILES = 250_000  # tiles at the target spacing on one slide
MAX_IFD_ENTRIES = 4096  # tags in one TIFF directory (the real slides have about 20)
MASK_POOL_PIXELS = 1 << 26  # a mask level larger than this is max-pooled while read
MAX_MASK_READ_PIXELS = 2**30  # pixels of the mask level that is read (streamed, max-pooled)
THUMBNAIL_BAND_BYTES = 32 * 2**20  # a thumbnail is read in bands of at most this many bytes

# JSON (RNA, clinical, inputs.json)
MAX_JSON_BYTES = 32 * 2**20
MAX_JSON_DEPTH = 16  # nested arrays/objects; the real files need 1 (RNA, clinical) or 3 (inputs.json)
MAX_NUMBER_CHARS = 100  # characters of one JSON number
MAX_PATH_CHARS = 1024  # a relative path in inputs.json

# Values
CLINICAL_RANGES = {"age": (18.0, 110.0), "no_instillations": (0.0, 100.0)}  # else missing
RNA_MAX_FACTOR = 100.0  # an RNA value above this many times the gene's largest training value is clipped
RNA_ABSOLUTE_MAX = 1e7  # the bound for bundles without per-gene training maxima (DESeq2 counts)

# Bundles
MAX_ENSEMBLE_MEMBERS = 100  # members in one bundle (folds x seeds): each is a full model in memory

# Imported tile features (import-features: the organisers' .pt + .npy pairs)
MAX_IMPORT_TILES = 250_000  # rows of one file (= MAX_GRID_TILES: no slide has more tiles)
MAX_IMPORT_WIDTH = 8192  # embedding width (the widest registered encoder has 2,560)
MAX_IMPORT_BYTES = 4 * 2**30  # stored bytes of one .pt or .npy file (and of its tensors, uncompressed)
