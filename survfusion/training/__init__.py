"""Stage 5, training: cohorts (``cohort``, ``dataset``), the trainer (``train``), fold ensembles
(``ensemble``), the outer-test protocol (``protocol``), evaluation and its figures."""
