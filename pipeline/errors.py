"""Errors a user can cause in a build. The CLI prints them as one line and exits non-zero."""

from serving.errors import UserError


class CheckpointError(UserError):
    """The checkpoint SOURCE cannot be resolved, read or loaded into the model."""


class BuildError(UserError):
    """An export or a check failed, or the output directory cannot be used."""
