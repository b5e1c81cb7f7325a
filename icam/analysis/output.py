"""Atomic writes: a temporary name in the same folder, then os.replace."""

from __future__ import annotations

import os
import uuid


def _temporary(path: str) -> str:
    """A fresh name beside `path` (created with the usual umask permissions, unlike mkstemp)."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    extension = os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{extension}")


def write_text(path: str, text: str) -> str:
    temporary = _temporary(path)
    try:
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def save_figure(figure, out_dir: str, stem: str) -> list[str]:
    """PNG and PDF of a matplotlib Figure (rendered by Agg; no creation date, so reproducible)."""
    paths = []
    for extension, metadata in (("png", None), ("pdf", {"CreationDate": None})):
        path = os.path.join(out_dir, f"{stem}.{extension}")
        temporary = _temporary(path)
        try:
            figure.savefig(temporary, format=extension, dpi=150, metadata=metadata,
                           bbox_inches="tight")
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        paths.append(path)
    return paths
