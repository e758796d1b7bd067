"""Where dukd caches what it makes (decoded images, LR images, zoo parameter counts).

Its own module, free of torch, so that commands that only read a cache (``dukd zoo list``) start
without importing it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where decoded images and LR images are cached: explicit > $DUKD_CACHE > $XDG_CACHE_HOME/dukd > ~/.cache/dukd."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("DUKD_CACHE"):
        return Path(os.environ["DUKD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dukd"
