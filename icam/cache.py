"""Where icam keeps its caches on this machine: `$ICAM_CACHE`, else `~/.cache/icam`."""

import os
from pathlib import Path


def cache_home() -> Path:
    """Folder for icam's caches: `$ICAM_CACHE`, else `~/.cache/icam`."""
    return Path(os.environ.get("ICAM_CACHE", "~/.cache/icam")).expanduser()
