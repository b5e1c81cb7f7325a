"""Atomic writes: a temporary name in the same folder, then os.replace."""

from __future__ import annotations

import os
import tempfile


def _temporary(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1],
                                         dir=folder)
    os.close(handle)
    return temporary


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
