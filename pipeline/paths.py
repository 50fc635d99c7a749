"""Where the pipeline keeps downloads and generated checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$INSPYRENET_CACHE``, else ``$XDG_CACHE_HOME/inspyrenet``, else ``~/.cache/inspyrenet``."""
    if os.environ.get("INSPYRENET_CACHE"):
        return Path(os.environ["INSPYRENET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inspyrenet"


def transparent_background_home() -> Path:
    """The cache dir transparent-background's Remover uses, so downloads are shared with it."""
    root = os.environ.get("TRANSPARENT_BACKGROUND_FILE_PATH", os.path.abspath(os.path.expanduser("~")))
    return Path(root) / ".transparent-background"
