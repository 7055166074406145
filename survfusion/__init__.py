"""survfusion: multimodal survival prediction for CHIMERA Task 3 (WSI + bulk RNA + clinical).

One package serves extraction, training, evaluation and the grand-challenge container. Modules, in
the order data flows through them:

- slides to features: ``slide`` (read pyramids) -> ``geometry`` (level by spacing, tile grid) ->
  ``tissue`` (masks, coverage) -> ``encoders`` (UNI, vit-tiny) -> ``extract`` -> ``features`` (HDF5)
- features to a model: ``dataset`` -> ``preprocess`` (clinical and RNA vectors) -> ``models`` and
  ``fusions`` -> ``survival`` (Cox loss, C-index, Kaplan-Meier) -> ``train`` -> ``calibration``
  (risk -> months) -> ``bundle`` (everything a prediction needs, checked on load) -> ``evaluate``
- one case in the container: ``gcio`` (sockets, output) -> ``predict`` (with fallbacks)
- ``synth`` writes a synthetic cohort in the real formats; ``cohort`` lists slides to process.
"""

__version__ = "0.1.0"
