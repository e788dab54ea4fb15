"""Exception hierarchy: every error evsim raises on purpose derives from EvsimError.

Each subclass also inherits the matching builtin, so callers can catch either.
The CLI turns any EvsimError into a one-line message and exit code 2.
"""


class EvsimError(Exception):
    """Root of all deliberate evsim errors."""


class ConfigError(EvsimError, ValueError):
    """An option or configuration value is invalid."""


class ShapeError(EvsimError, ValueError):
    """An array has the wrong shape or dtype."""


class DataError(EvsimError, ValueError):
    """A data file or folder is missing, corrupt or inconsistent."""


class CheckpointError(EvsimError, ValueError):
    """A checkpoint is missing, corrupt or does not match the run."""


class StructureError(EvsimError, ValueError):
    """A structural edit does not fit the synapses there are (e.g. regrowing one that exists)."""
