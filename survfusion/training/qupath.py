"""Tiles for QuPath (``survfusion explain``): a GeoJSON FeatureCollection that QuPath 0.4+ opens
with File > Import objects.

One Feature per tile: its level-0 pixel square, ``objectType: "tile"``, ``measurements`` as an
object (attention, share of the slide's contribution, attention rank) and a ``classification`` with
a name *and* an RGB colour (QuPath rejects a class without one), by attention decile. The tissue
outline, the boundary of the tiles' union traced on their grid, is one ``annotation`` Feature.
"""

from __future__ import annotations

import numpy as np

DECILE_COLOURS = [  # QuPath wants an RGB colour with each class: inferno, low to high
    [0, 0, 4], [27, 12, 65], [74, 12, 107], [120, 28, 109], [165, 44, 96],
    [207, 68, 70], [237, 105, 37], [251, 155, 6], [247, 209, 61], [252, 255, 164],
]  # fmt: skip


def tissue_outline(coords: np.ndarray, side: int) -> list[list[list[list[int]]]]:
    """The outline of the union of grid tiles (top-left ``coords``, ``side`` level-0 px) as GeoJSON
    MultiPolygon coordinates: the squares' edges shared by two tiles cancel, the rest are chained
    into rings (at a corner two tiles share diagonally, the ring keeps to its own tile), and every
    hole goes to the smallest outer ring around it."""
    cells = {(int(x) // side, int(y) // side) for x, y in np.asarray(coords).reshape(-1, 2)}
    edges: dict[tuple, list[tuple]] = {}
    count: dict[tuple, int] = {}
    for i, j in cells:  # filled on the left of every directed edge (x right, y down: clockwise on screen)
        corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)]
        for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
            count[(a, b)] = count.get((a, b), 0) + 1
    kept = [e for e in count if (e[1], e[0]) not in count]
    for a, b in kept:
        edges.setdefault(a, []).append(b)
    rings = []
    while edges:
        start = next(iter(edges))
        ring, prev, cur = [start], None, start
        while True:
            outs = edges[cur]
            if len(outs) > 1 and prev is not None:
                din = (cur[0] - prev[0], cur[1] - prev[1])
                # the sharpest left turn keeps to the incoming edge's own tile
                outs.sort(key=lambda o: -(din[0] * (o[1] - cur[1]) - din[1] * (o[0] - cur[0])))
            nxt = outs.pop(0)
            if not outs:
                del edges[cur]
            prev, cur = cur, nxt
            if cur == start:
                break
            ring.append(cur)
        rings.append(ring)

    def area(r):
        return 0.5 * sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(r, r[1:] + r[:1], strict=True))

    outer = [r for r in rings if area(r) > 0]
    holes = [r for r in rings if area(r) < 0]
    polys: list[list] = [[r] for r in sorted(outer, key=area)]
    for h in holes:
        a, b = h[0], h[1]
        # the centre of the filled tile to the left of the hole's first edge
        px, py = (a[0] + b[0]) / 2 + (b[1] - a[1]) * 0.5, (a[1] + b[1]) / 2 - (b[0] - a[0]) * 0.5
        home = next((p for p in polys if _inside(px, py, p[0])), None)
        if home is not None:
            home.append(h)
    return [[[[x * side, y * side] for x, y in [*r, r[0]]] for r in p] for p in polys]


def _inside(px: float, py: float, ring: list) -> bool:
    hit = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > py) != (y2 > py) and px < x1 + (py - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def qupath_geojson(coords: np.ndarray, side: int, attention, share, rank) -> dict:
    """A QuPath-importable FeatureCollection: the tiles (with measurements and a coloured class) and
    the tissue outline as an annotation."""
    feats = []
    a = np.asarray(attention, np.float64)
    deciles = np.minimum((rank - 1) * 10 // max(len(a), 1), 9) if len(a) else np.zeros(0, int)
    for (x, y), att, sh, rk, d in zip(
        np.asarray(coords).reshape(-1, 2), a, share, rank, deciles, strict=True
    ):
        x, y = int(x), int(y)
        name = f"attention decile {10 - int(d)}"  # 10 = the tenth of tiles with the highest attention
        feats.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + side, y], [x + side, y + side],
                                                              [x, y + side], [x, y]]]},
            "properties": {
                "objectType": "tile",
                "classification": {"name": name, "color": DECILE_COLOURS[9 - int(d)]},
                "measurements": {"attention": float(att), "share of slide contribution": float(sh),
                                 "attention rank": int(rk)},
            },
        })  # fmt: skip
    if len(a):
        feats.append({
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": tissue_outline(coords, side)},
            "properties": {"objectType": "annotation", "name": "tissue (tiles' outline)",
                           "classification": {"name": "Tissue", "color": [40, 160, 60]}},
        })  # fmt: skip
    return {"type": "FeatureCollection", "features": feats}
