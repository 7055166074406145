"""survfusion: multimodal survival prediction for CHIMERA Task 3 (WSI + bulk RNA + clinical).

One package serves extraction, training, evaluation and the grand-challenge container. Its
sub-packages are the stages data flows through, each importing only those before it
(docs/DESIGN.md):

- ``slides``: header checks, pyramid reading, level by spacing, tissue masks, tile grids
- ``features``: encoder registry, strict weights, device and precision, ``TileEncoder``, the feature
  request, extraction, HDF5 feature files
- ``nets``: the model registry, the paper's models and the fusions, survival maths, risk -> months
- ``serving``: preprocessing, the bundle (in memory and on disk), the model directory,
  grand-challenge sockets, one case with its fallbacks
- ``training``: cohorts, training, fold ensembles, the outer-test protocol, evaluation and figures
- ``synth``: synthetic cohorts and sample cases; ``cli``: ``python -m survfusion``

At the root: ``errors`` (input problems vs device faults), ``limits`` (every documented input limit),
``fileio`` (checksums, atomic writes, the bounded JSON reader), ``progress`` (terminal or log).
"""

__version__ = "0.1.0"
