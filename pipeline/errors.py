"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Base of every error the CLI reports without a traceback."""


class CheckpointError(UserError):
    """The checkpoint SOURCE cannot be resolved, read or loaded into the model."""


class StorageError(UserError):
    """A Cloud Storage object or bucket cannot be read or written."""


class BuildError(UserError):
    """An export or a check failed, or the output directory cannot be used."""
