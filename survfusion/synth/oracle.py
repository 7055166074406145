"""The noise-free oracle of each outer test set, from the generator alone.

``outer-test`` deals a cohort into outer sets by ``protocol.outer_deal``; a synthetic cohort is a
pure function of (patients, seed, world). So a test set's patients and the C-index of their planted,
noise-free log-hazard can be recomputed without the cohort on disk: scripts/worlds_sets.py does so
for world runs whose per-patient files were lost.
"""

from __future__ import annotations

import numpy as np

from survfusion.nets.survival import concordance_index
from survfusion.synth.cohort import make_patients
from survfusion.training.dataset import strata
from survfusion.training.protocol import outer_deal


def outer_oracle(
    patients: int, seed: int, world: str, *, outer: int, protocol_seed: int
) -> list[tuple[set[str], float]]:
    """For ``outer-test --outer OUTER --seed PROTOCOL_SEED`` on the cohort ``synth --patients
    PATIENTS --seed SEED --world WORLD`` writes: each outer test set's case ids and the C-index of
    their noise-free log-hazard, from the generator alone (no cohort on disk is read)."""
    pts = make_patients(patients, seed, world)  # outcomes.csv lists them in this order
    t = np.array([p.time_months for p in pts])
    e = np.array([p.event for p in pts])
    eta = np.array([sum(p.terms.values(), 0.0) for p in pts])
    fold = outer_deal(strata([p.cohort for p in pts], e), outer, protocol_seed)
    return [
        ({pts[i].case_id for i in np.flatnonzero(m)}, concordance_index(t[m], e[m], eta[m]))
        for m in (fold == o for o in range(outer))
    ]
