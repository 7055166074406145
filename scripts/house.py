"""The package drawn as a house: modules are rooms, imports are arrows; floors, circles, upward arrows.

    python scripts/house.py [PACKAGE_DIR] [--edges]

- rooms: modules of the package (``__init__`` and ``__main__`` included);
- arrows: ``import``/``from`` statements between two rooms anywhere in a module (lazy imports inside
  functions count: they are dependencies all the same);
- circles: strongly connected groups of more than one room;
- floors: the longest chain of arrows, counted in rooms (circles collapsed);
- upward arrows: an import from a room of a lower stage to a room of a higher stage, by ``STAGES``
  (a module's stage is its sub-package; the package root is ``core``, except ``__main__``, which is
  ``cli``; a flat layout is placed by ``FLAT``, the stage each module has in the staged layout).

The test suite holds the staged package to no circle and no upward arrow (test_house.py).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

STAGES = ("core", "slides", "features", "nets", "serving", "training", "synth", "cli")

# Where each module of the earlier flat layout belongs (only used to measure that layout).
FLAT = {
    "slide": "slides", "tiffheader": "slides", "tissue": "slides", "geometry": "slides",
    "tiffwrite": "slides",
    "request": "features", "encoders": "features", "vit": "features", "extract": "features",
    "features": "features", "models": "nets", "fusions": "nets", "registry": "nets", "survival": "nets",
    "calibration": "nets", "gcio": "serving", "modeldir": "serving", "bundle": "serving",
    "preprocess": "serving", "predict": "serving", "cohort": "training", "dataset": "training",
    "train": "training", "ensemble": "training", "protocol": "training", "evaluate": "training",
    "figures": "training", "synth": "synth", "cli_data": "cli", "cli_extract": "cli", "cli_train": "cli",
    "__main__": "cli",
}  # fmt: skip


def modules(root: Path) -> dict[str, Path]:
    pkg = root.name
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    assert pkg in found, f"{root} is not a package"
    return found


def _resolve(name: str, rooms: dict[str, Path]) -> str | None:
    while name and name not in rooms:
        name = name.rpartition(".")[0]
    return name or None


def arrows(rooms: dict[str, Path]) -> set[tuple[str, str]]:
    edges = set()
    for name, path in rooms.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                dest = _resolve(t, rooms)
                if dest and dest != name and not (isinstance(node, ast.ImportFrom) and dest == package):
                    edges.add((name, dest))
                    break
    return edges


def stage(name: str) -> str:
    parts = name.split(".")[1:]
    if not parts:
        return "core"
    if len(parts) == 1:
        if parts[0] in STAGES:
            return parts[0]
        return FLAT.get(parts[0], "core") if parts[0] != "__main__" else "cli"
    return parts[0]


def circles(rooms, edges) -> list[set[str]]:
    """Strongly connected components of more than one room (Tarjan)."""
    graph = {r: sorted(d for s, d in edges if s == r) for r in rooms}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def floors(rooms, edges, groups) -> int:
    rep = {r: r for r in rooms}
    for g in groups:
        head = min(g)
        for r in g:
            rep[r] = head
    dag = {(rep[s], rep[d]) for s, d in edges if rep[s] != rep[d]}
    nodes = set(rep.values())
    depth: dict[str, int] = {}

    def height(v):
        if v not in depth:
            depth[v] = 1 + max((height(d) for s, d in dag if s == v), default=0)
        return depth[v]

    return max(height(v) for v in nodes)


def measure(root: Path) -> dict:
    rooms = modules(root)
    edges = arrows(rooms)
    groups = circles(rooms, edges)
    order = {s: i for i, s in enumerate(STAGES)}
    upward = sorted((s, d) for s, d in edges if order[stage(s)] < order[stage(d)])
    sizes = {n: len(p.read_text().splitlines()) for n, p in rooms.items()}
    largest = max(sizes, key=sizes.__getitem__)
    return {
        "rooms": len(rooms),
        "arrows": len(edges),
        "floors": floors(rooms, edges, groups),
        "circles": [sorted(g) for g in groups],
        "upward": upward,
        "largest": (largest, sizes[largest]),
        "edges": sorted(edges),
    }


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv and not argv[0].startswith("--") else "survfusion").resolve()
    m = measure(root)
    print(
        f"house {root.name}: {m['rooms']} rooms on {m['floors']} floors, {m['arrows']} arrows, "
        f"{len(m['circles'])} circle(s), {len(m['upward'])} upward arrow(s); largest room "
        f"{m['largest'][0]} ({m['largest'][1]} lines)"
    )
    for g in m["circles"]:
        print("  circle:", " -> ".join(g))
    for s, d in m["upward"]:
        print(f"  upward: {s} ({stage(s)}) -> {d} ({stage(d)})")
    if "--edges" in argv:
        for s, d in m["edges"]:
            print(f"  {s} -> {d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
