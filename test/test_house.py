"""The package's shape holds: no import circle, no arrow from a lower stage up to a higher one, no
module far over 400 lines (scripts/house.py draws the house), and every design-document reference in
the repository resolves to a file in it."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from house import STAGES, measure, stage  # noqa: E402

MAX_LINES = 430  # "modules under ~400 lines" (STYLE.md), with a little slack for a long docstring


def test_no_circle_no_upward_arrow_no_long_module():
    house = measure(ROOT / "survfusion")
    assert house["circles"] == []
    assert house["upward"] == [], [f"{s} ({stage(s)}) -> {d} ({stage(d)})" for s, d in house["upward"]]
    name, lines = house["largest"]
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_every_package_is_a_stage():
    packages = {p.name for p in (ROOT / "survfusion").iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(STAGES), packages - set(STAGES)


def test_every_design_reference_resolves():
    assert (ROOT / "docs" / "DESIGN.md").is_file()
    files = [*ROOT.glob("survfusion/**/*.py"), *ROOT.glob("test/test_[!h]*.py"), *ROOT.glob("bench/*.py"),
             ROOT / "inference.py", ROOT / "README.md", *ROOT.glob("docs/*.md")]  # fmt: skip
    loose = []
    for path in files:
        for m in re.finditer(r"(\S*)DESIGN\.md", path.read_text()):
            if not m.group(1).endswith("docs/") and "shared/" not in m.group(1):
                loose.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert loose == [], "cite docs/DESIGN.md: " + "; ".join(loose)
