"""Files written all or nothing: a temporary name beside the target, renamed on success.

The temporary file is created inside the guarded block, so an interrupt at any point (a Ray
task cancelled while it writes gets a KeyboardInterrupt) leaves neither a partial target nor
a stray temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary name beside `path` to write to; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield str(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """`open(path, mode, **kwargs)` on a temporary file that replaces `path` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
