"""A study's storage: one folder on a local disk or in an object store, through pyarrow.fs.

    store = Storage.open("s3://bucket/icam?endpoint_override=127.0.0.1:9000&scheme=http")
    trial = store / "ablate_mu" / "artefacts" / key
    trial.write_bytes(data, "cam/DONE.json")
    trial.read_bytes("cam/DONE.json")

Everything a later stage or the analysis reads (CAMs, labels, predictions, DONE markers,
trials.csv) goes through it, so on a cluster the storage is the only thing nodes share. A
location is a local path or a URI pyarrow opens (s3://, gs://, file://); its query (the
options MinIO and other S3-compatible servers need) stays at the end when names are joined.
A location travels between processes as its text (`str(storage)`).

Writes are whole: a local file is written under a temporary name and renamed; an object is
uploaded from memory in one call, and an object store shows it only once the upload is
complete.

A node keeps only a cache (`cache_root`): local copies of stored folders that a dataset reads
file by file. It can be deleted whenever no stage runs on the node.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from icam.atomic import atomic_write
from icam.cache import cache_home

FETCH_THREADS = 16
"""Files fetched at once into a node's cache."""


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in os.fspath(location)


@functools.lru_cache(maxsize=16)
def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path of the bucket or host root) for `scheme://netloc?query`, opened once
    per process (pyarrow may ask the object store for the bucket's region when opening)."""
    return pafs.FileSystem.from_uri(root)


def cache_root(workdir: str | os.PathLike | None = None) -> Path:
    """This node's cache of stored folders: `workdir` when given, else `storage/` in icam's
    cache home ($ICAM_CACHE, else ~/.cache/icam)."""
    return Path(workdir or cache_home() / "storage").expanduser().resolve()


@dataclass(frozen=True)
class Storage:
    """A folder or a file: `base` is an absolute local path or a URI without its query."""

    base: str
    query: str = ""

    @classmethod
    def open(cls, location: str | os.PathLike | Storage) -> Storage:
        if isinstance(location, Storage):
            return location
        text = os.fspath(location)
        if not is_uri(text):
            return cls(str(Path(text).expanduser().resolve()))
        parts = urlsplit(text)
        if parts.scheme == "file":
            return cls(str(Path(parts.path).resolve()))
        return cls(urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")),
                   parts.query)

    def __str__(self) -> str:
        return f"{self.base}?{self.query}" if self.query else self.base

    def __truediv__(self, name: str) -> Storage:
        return Storage(_join(self.base, name), self.query)

    @property
    def local(self) -> Path | None:
        """The folder on this machine's disk, or None for an object store."""
        return None if is_uri(self.base) else Path(self.base)

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._opened()[0]

    def path(self, name: str = "") -> str:
        """The path of `name` inside `filesystem`."""
        return self._opened()[1] if not name else _join(self._opened()[1], name)

    def _opened(self) -> tuple[pafs.FileSystem, str]:
        if self.local is not None:
            return pafs.LocalFileSystem(), self.base
        parts = urlsplit(self.base)
        fs, root = _filesystem(urlunsplit((parts.scheme, parts.netloc, "", self.query, "")))
        return fs, _join(root, parts.path)

    # --- files ---------------------------------------------------------------------------

    def read_bytes(self, name: str = "") -> bytes:
        """The bytes of the file `name` (of this location itself when it names a file)."""
        try:
            with self.filesystem.open_input_stream(self.path(name)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self / name}: not found") from None

    def write_bytes(self, data: bytes, name: str = "") -> None:
        """Store `data` as `name`, all or nothing."""
        if self.local is not None:
            with atomic_write(self.local / name) as f:
                f.write(data)
            return
        with self.filesystem.open_output_stream(self.path(name)) as out:
            out.write(data)

    def read_json(self, name: str):
        return json.loads(self.read_bytes(name))

    def write_json(self, name: str, obj) -> None:
        self.write_bytes(json.dumps(obj, indent=1, sort_keys=True).encode(), name)

    def exists(self, name: str = "") -> bool:
        return self.filesystem.get_file_info(self.path(name)).type == pafs.FileType.File

    def files(self, folder: str = "") -> set[str]:
        """Names of the files directly inside `folder` (empty when it does not exist)."""
        return {info.base_name for info in self._list(folder) if info.type == pafs.FileType.File}

    def folders(self, folder: str = "") -> set[str]:
        """Names of the folders directly inside `folder`."""
        return {info.base_name for info in self._list(folder)
                if info.type == pafs.FileType.Directory}

    def _list(self, folder: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        return self.filesystem.get_file_info(selector)

    def make_folder(self, what: str = "storage") -> None:
        """Create the folder (local disks; object stores have no folders). Raises ValueError
        naming `what` and the folder when it cannot be written."""
        if self.local is None:
            return
        try:
            self.local.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.local):
                pass
        except OSError as err:
            raise ValueError(f"{what} {self.local} is not writable: "
                             f"{err.strerror or err}") from None

    def local_folder(self, folder: str, cache: str | os.PathLike | None = None) -> Path:
        """A local folder holding the files of `folder`: itself on a local disk, else a copy
        in this node's cache (`cache_root(cache)`), fetching only the files it lacks."""
        if self.local is not None:
            return self.local / folder
        source = self / folder
        parts = urlsplit(source.base)
        target = cache_root(cache) / parts.scheme / parts.netloc / parts.path.strip("/")
        target.mkdir(parents=True, exist_ok=True)
        missing = sorted(source.files() - {p.name for p in target.iterdir()})

        def fetch(name: str) -> None:
            with atomic_write(target / name) as f:
                f.write(source.read_bytes(name))

        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            list(pool.map(fetch, missing))  # an object store answers many requests at once
        return target


def _join(base: str, name: str) -> str:
    name = name.strip("/")
    return f"{base.rstrip('/')}/{name}" if name else base


def tune_location(storage: Storage) -> tuple[str, pafs.FileSystem | None]:
    """Ray Tune's (storage_path, storage_filesystem) for a folder: the local path alone, or
    the path inside an explicitly opened filesystem (so a URI's query is never appended to)."""
    if storage.local is not None:
        return str(storage.local), None
    return storage.path(), storage.filesystem
