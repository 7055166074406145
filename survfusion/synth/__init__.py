"""Stage 6, synth: a synthetic cohort and grand-challenge sample cases in the real file formats,
with a planted signal and its oracle."""
