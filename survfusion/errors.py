"""Errors whose message is meant for the user (the challenge log, the CLI), one line each."""


class UserError(ValueError):
    """A problem with user-supplied data or files; ``str(err)`` is one self-contained line."""


class BundleError(UserError):
    """A model bundle is missing, corrupt, or inconsistent with itself."""
