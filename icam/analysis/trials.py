"""Stored trials: `trials.csv` files, or rows rebuilt from Ray Tune's own result files.

A results location is a local folder, a single `trials.csv`, or any URI that pyarrow's
filesystems open (`file://`, `s3://`, `gs://`). Nothing here needs Ray.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs

from icam.analysis.methods import backbone_label, canonical_method

STAGES = ("cam", "affinity", "final")
SPLITS = ("train", "val")
METRICS = ("J", "F", "JF")
REQUIRED = ("study", "trial_id", "seed", "stage", "split", *METRICS)
SETTINGS = ("method", "lambda", "pooling", "num_samples", "fsl", "mu", "sigma")
NUMERIC_SETTINGS = ("lambda", "num_samples", "mu", "sigma")
RAY_RESULT_FILES = ("result.json", "progress.csv")
RAY_FILES = ("params.json", *RAY_RESULT_FILES)
_RAY_METRIC = re.compile(r"^(cam|affinity|final)/(train|val)/(J|F|JF|J&F)$")
_TRUE = {"true", "1", "1.0", "yes", "on"}
_FALSE = {"false", "0", "0.0", "no", "off"}


class TrialSkipped(UserWarning):
    """A stored trial (or trials.csv) that could not be read and was left out."""


class TrialsError(ValueError):
    """A trials.csv that breaks the contract; the message names file, line and field."""


@dataclass
class StoredTrials:
    """Rows in the trials.csv layout plus an account of where they came from."""

    frame: pd.DataFrame
    csv_files: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)  # Ray trial folders turned into rows
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    covered: int = 0  # Ray trial folders not re-read because a trials.csv covers them


def open_location(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or a URI such as s3://bucket/study."""
    location = os.fspath(location)
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    return pafs.FileSystem.from_uri(location)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def parse_trials_csv(text: str, name: str) -> pd.DataFrame:
    """Check and type a trials.csv; a bad value raises TrialsError naming `name:line: field`."""
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise TrialsError(f"{name}: not a readable CSV ({error})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise TrialsError(f"{name}: missing column(s) {', '.join(missing)}")
    frame = raw.apply(lambda column: column.str.strip())
    for column, allowed in (("stage", STAGES), ("split", SPLITS)):
        bad = ~frame[column].isin(allowed)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise TrialsError(f"{name}:{i + 2}: field {column}: {frame[column].iloc[i]!r} is "
                              f"not one of {' | '.join(allowed)}")
    for column in ("seed", *METRICS, *(c for c in NUMERIC_SETTINGS if c in frame)):
        frame[column] = _numbers(frame[column], column, name)
    for column in METRICS:
        bad = (frame[column] < 0) | (frame[column] > 100)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise TrialsError(f"{name}:{i + 2}: field {column}: {frame[column].iloc[i]} is "
                              "outside [0, 100] (metrics are in percent)")
    return normalise(frame).assign(source=name)


def _numbers(values: pd.Series, column: str, name: str) -> pd.Series:
    blank = values.isin(["", "nan", "NaN", "None"])
    numbers = pd.to_numeric(values.where(~blank), errors="coerce").astype(float)
    bad = numbers.isna() & ~blank
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise TrialsError(f"{name}:{i + 2}: field {column}: {values.iloc[i]!r} is not a number")
    return numbers


def _boolean(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Canonical method names, booleans for fsl, numbers as floats, blanks as missing."""
    frame = frame.copy()
    for column in SETTINGS:
        if column not in frame:
            frame[column] = None
    frame["method"] = [canonical_method(m) for m in frame["method"]]
    frame["fsl"] = pd.Series([_boolean(v) for v in frame["fsl"]], index=frame.index,
                             dtype=object)
    frame["pooling"] = [None if not isinstance(p, str) or p == "" else p.lower()
                        for p in frame["pooling"]]
    if "backbone" in frame:
        frame["backbone"] = [backbone_label(b) for b in frame["backbone"]]
    frame["trial_id"] = frame["trial_id"].astype(str)
    frame["study"] = frame["study"].astype(str)
    for column in ("seed", *METRICS, *NUMERIC_SETTINGS):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def rebuild_ray_trial(fs: pafs.FileSystem, folder: str, files: set[str], study: str) -> list:
    """Rows for one Ray Tune trial folder (params.json + result.json or progress.csv).

    Metrics are the last reported `<stage>/<split>/<J|F|JF>` values; raises ValueError when
    the result file is missing or corrupt, or holds no such metric.
    """
    results = _ray_results(fs, folder, files)
    params = {}
    if "params.json" in files:
        params = _json(fs, posixpath.join(folder, "params.json"))
        if not isinstance(params, dict):
            raise ValueError("corrupt params.json (not a JSON object)")
    elif results and isinstance(results[-1].get("config"), dict):
        params = results[-1]["config"]
    metrics: dict[tuple[str, str], dict[str, float]] = {}
    for result in results:
        for key, value in _flatten(result).items():
            match = _RAY_METRIC.match(key)
            if match and value not in (None, ""):
                stage, split, metric = match.groups()
                metrics.setdefault((stage, split), {})["JF" if metric == "J&F" else metric] = (
                    float(value))
    if not metrics:
        raise ValueError("no <stage>/<split>/J|F|JF metric in its results")
    trial_id = next((r["trial_id"] for r in reversed(results) if "trial_id" in r),
                    posixpath.basename(folder))
    settings = {column: _setting(params, column) for column in
                (*SETTINGS, "seed", "backbone")}
    rows = []
    for (stage, split), values in sorted(metrics.items()):
        rows.append({"study": _setting(params, "study") or study, "trial_id": str(trial_id),
                     "stage": stage, "split": split, **{m: values.get(m) for m in METRICS},
                     **settings})
    return rows


def _ray_results(fs: pafs.FileSystem, folder: str, files: set[str]) -> list[dict]:
    if "result.json" in files:
        text = read_bytes(fs, posixpath.join(folder, "result.json")).decode("utf-8")
        results = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    results.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"corrupt result.json (line {number})") from None
        if results and not all(isinstance(r, dict) for r in results):
            raise ValueError("corrupt result.json (a line is not a JSON object)")
        return results
    if "progress.csv" in files:
        text = read_bytes(fs, posixpath.join(folder, "progress.csv")).decode("utf-8")
        try:
            return list(csv.DictReader(io.StringIO(text), strict=True))
        except csv.Error as error:
            raise ValueError(f"corrupt progress.csv ({error})") from None
    raise ValueError("no result file (result.json or progress.csv)")


def _json(fs: pafs.FileSystem, path: str):
    try:
        return json.loads(read_bytes(fs, path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"corrupt {posixpath.basename(path)}") from None


def _flatten(value: dict, prefix: str = "") -> dict:
    flat = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, name + "/"))
        else:
            flat[name] = item
    return flat


_SETTING_ALIASES = {"lambda": ("lambda", "lam")}


def _setting(params: dict, column: str):
    """A config value found top-level, under "method", or anywhere nested (first match); the
    method is a "method" string or the "name" of a "method" dict."""
    names = _SETTING_ALIASES.get(column, (column,))
    nested = [params]
    while nested:
        level = nested.pop(0)
        for name in names:
            if name in level and not isinstance(level[name], (dict, list)):
                return level[name]
        if column == "method" and isinstance(level.get("method"), dict):
            inner = level["method"]
            if isinstance(inner.get("name"), str):
                return inner["name"]
        children = [v for k, v in level.items() if isinstance(v, dict)]
        children.sort(key=lambda child: child is not level.get("method"))
        nested.extend(children)
    return None


_NOT_A_STUDY = re.compile(r"^(tune|artefacts|(cam|affinity|final)([-_.].*)?)$")
_STAGE_SUFFIX = re.compile(r"[-_.](cam|affinity|final)$")


def _study_from_path(relative_parts: list[str], fallback: str) -> str:
    """The deepest ancestor folder of a trial that is not Tune's or a stage's own folder
    (`tune`, `cam`, `cam-<hash>`), with a trailing `_<stage>` removed."""
    for part in reversed(relative_parts):
        if not _NOT_A_STUDY.match(part):
            return _STAGE_SUFFIX.sub("", part)
    return fallback


def read_trials(location: str | os.PathLike) -> StoredTrials:
    """Every trials.csv under `location`; Ray Tune trial folders where no trials.csv covers them.

    A trials.csv or trial folder that cannot be read is skipped with a TrialSkipped warning
    naming it, and listed in `skipped`.
    """
    fs, base = open_location(location)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"results not found: {location}")
    if info.type == pafs.FileType.File:
        entries = [info]
        base = posixpath.dirname(base)
    else:
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files_by_dir: dict[str, set[str]] = {}
    for entry in entries:
        if entry.type == pafs.FileType.File:
            files_by_dir.setdefault(posixpath.dirname(entry.path), set()).add(entry.base_name)
    stored = StoredTrials(frame=pd.DataFrame())
    frames = []
    csv_dirs = sorted(d for d, names in files_by_dir.items() if "trials.csv" in names)
    for folder in csv_dirs:
        path = posixpath.join(folder, "trials.csv")
        try:
            frames.append(parse_trials_csv(read_bytes(fs, path).decode("utf-8"), path))
            stored.csv_files.append(path)
        except (TrialsError, UnicodeDecodeError, OSError) as error:
            _skip(stored, path, str(error))
    csv_studies = {s for f in frames for s in f["study"].unique()}
    ray_rows = []
    for folder in sorted(d for d, names in files_by_dir.items() if names & set(RAY_FILES)):
        if any(folder == d or folder.startswith(d.rstrip("/") + "/") for d in csv_dirs):
            stored.covered += 1
            continue
        if folder == base:
            study = _study_from_path([], posixpath.basename(posixpath.dirname(base)))
        else:
            relative = posixpath.relpath(folder, base).split("/")[:-1]
            study = _study_from_path(relative, posixpath.basename(base))
        try:
            rows = rebuild_ray_trial(fs, folder, files_by_dir[folder], study)
        except (ValueError, UnicodeDecodeError, OSError) as error:
            _skip(stored, folder, str(error))
            continue
        rows = [r for r in rows if str(r["study"]) not in csv_studies]
        if not rows:
            stored.covered += 1
            continue
        stored.rebuilt.append(folder)
        ray_rows.extend(dict(r, source=folder) for r in rows)
    if ray_rows:
        frames.append(normalise(pd.DataFrame(ray_rows)))
    if frames:
        frame = pd.concat(frames, ignore_index=True)
        stored.frame = frame.drop_duplicates(["study", "trial_id", "stage", "split"],
                                             keep="last").reset_index(drop=True)
    else:
        stored.frame = normalise(pd.DataFrame(columns=[*REQUIRED, "source"]))
    return stored


def _skip(stored: StoredTrials, path: str, reason: str) -> None:
    stored.skipped.append((path, reason))
    where = reason if reason.startswith(path) else f"{path}: {reason}"
    warnings.warn(f"skipped {where}", TrialSkipped, stacklevel=3)


def contract_columns(frame: pd.DataFrame) -> list[str]:
    """The trials.csv columns (design.md) followed by any extra setting columns."""
    extra = [c for c in frame.columns if c not in (*REQUIRED, *SETTINGS, "source")]
    return [*REQUIRED, *SETTINGS, *extra]
