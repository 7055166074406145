"""Errors whose message is meant for the user (the challenge log, the CLI), one line each.

Two families, kept apart on purpose (README, "Bad or missing input"):

- ``UserError``: a problem of the *input* (a file that cannot be opened or decoded, a value out of
  range). The container may replace that modality by its training mean, with a warning.
- ``ComputeError``: the *device or the program* failed in a way we foresaw (CUDA out of memory on a
  single tile, non-finite embeddings even in fp32, a GPU that torch cannot use). Never mistaken for a
  damaged input: the job fails with one line. Unforeseen exceptions fail too, with their traceback.
"""


class UserError(ValueError):
    """A problem with user-supplied data or files; ``str(err)`` is one self-contained line."""


class BundleError(UserError):
    """A model bundle is missing, corrupt, or inconsistent with itself."""


class ComputeError(RuntimeError):
    """The device or the encoder failed (not an input problem); ``str(err)`` is one line."""
