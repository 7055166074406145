"""survfusion: multimodal survival prediction for CHIMERA Task 3 (WSI + bulk RNA + clinical).

One package serves extraction, training, evaluation and the grand-challenge container. Modules, in
the order data flows through them:

- slides to features: ``tiffheader`` (sizes checked before anything is decoded) -> ``slide`` (read
  pyramids) -> ``geometry`` (level by spacing, tile grid) -> ``tissue`` (masks, coverage) ->
  ``vit`` + ``encoders`` (UNI, vit-tiny; precision, faults) -> ``extract`` -> ``features`` (HDF5);
  ``request`` holds what a feature set is (``FeatureRequest``) and the extraction settings
- features to a model: ``dataset`` -> ``preprocess`` (clinical and RNA vectors) -> ``models`` and
  ``fusions`` (registered in ``registry``) -> ``survival`` (Cox loss, C-index, Kaplan-Meier) ->
  ``train`` (one model) or ``ensemble`` (K fold models, out-of-fold calibration) -> ``calibration``
  (risk -> months) -> ``bundle`` (everything a prediction needs, one or K members, checked on load)
  -> ``evaluate``; ``protocol`` judges a training method on outer test sets it never sees
- one case in the container: ``gcio`` (sockets, paths, output) -> ``modeldir`` (bundle + encoder)
  -> ``predict`` (with fallbacks)
- shared: ``limits`` (every documented input limit), ``fileio`` (checksums, atomic writes, the
  bounded JSON reader), ``errors`` (input problems vs device faults)
- ``synth`` writes a synthetic cohort in the real formats; ``cohort`` lists slides to process.
"""

__version__ = "0.1.0"
