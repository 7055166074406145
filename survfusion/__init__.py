"""survfusion: multimodal survival prediction for CHIMERA Task 3 (WSI + bulk RNA + clinical).

One package serves training, evaluation and the grand-challenge container. Modules, in the order
data flows through them: ``preprocess`` (clinical and RNA vectors) -> ``models`` (ABMIL and the
fusions) -> ``survival`` (Cox loss, C-index, Kaplan-Meier) -> ``calibration`` (risk -> months)
-> ``bundle`` (everything a prediction needs, checked on load).
"""

__version__ = "0.1.0"
