"""Mean ± sample std over seeds, the table cell strings, and which stage/split a product shows."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from icam.analysis.methods import is_missing
from icam.analysis.trials import METRICS, SPLITS, STAGES

DASH = "–"


@dataclass
class View:
    """The trials of one stage and split, and why it is not the one asked for (if so)."""

    frame: pd.DataFrame
    stage: str
    split: str
    note: str = ""


def select(frame: pd.DataFrame, stage: str, split: str) -> View:
    """Rows of `stage`/`split`; the latest stored stage (and the other split) when absent."""
    notes = []
    stages = [s for s in STAGES if (frame["stage"] == s).any()]
    if not stages:
        return View(frame.iloc[:0], stage, split, "no trials stored")
    used_stage = stage if stage in stages else stages[-1]
    if used_stage != stage:
        notes.append(f"{stage} stage not stored, showing {used_stage}")
    at_stage = frame[frame["stage"] == used_stage]
    splits = [s for s in SPLITS if (at_stage["split"] == s).any()]
    used_split = split if split in splits else splits[0]
    if used_split != split:
        notes.append(f"{split} split not stored, showing {used_split}")
    return View(at_stage[at_stage["split"] == used_split], used_stage, used_split,
                "; ".join(notes))


def expected_runs(frame: pd.DataFrame) -> int | None:
    """How many seeds the study ran: its distinct seeds (None when no seed is recorded)."""
    seeds = frame["seed"].dropna().unique()
    return len(seeds) if len(seeds) else None


def summarise(frame: pd.DataFrame, keys: list[str], expected: int | None) -> pd.DataFrame:
    """Per group of `keys`: mean, sample std (ddof=1) and count of J, F, JF; rows in first-seen
    order; `n_expected` is the study's seed count (the count a full cell has)."""
    groups = frame.groupby(keys, dropna=False, sort=False)
    columns = {}
    for metric in METRICS:
        columns[metric] = groups[metric].mean()
        columns[f"{metric}_std"] = groups[metric].std(ddof=1)
        columns[f"{metric}_n"] = groups[metric].count()
    summary = pd.DataFrame(columns).reset_index()
    if expected is None and len(summary):
        expected = int(summary[[f"{m}_n" for m in METRICS]].to_numpy().max())
    summary["n_expected"] = expected
    return summary


def cell(mean, std=None, n=None, expected=None) -> str:
    """`68.4 ± 0.3`; `68.4` when no std (one run, or the paper gives none); ` (n=3)` appended
    when the cell holds fewer (or more) runs than the study ran; `–` when empty."""
    if is_missing(mean) or n == 0:
        return DASH
    text = f"{mean:.1f}"
    if not is_missing(std):
        text += f" ± {std:.1f}"
    if n is not None and not is_missing(expected) and int(n) != int(expected):
        text += f" (n={int(n)})"
    return text


def difference(value, reference) -> str:
    """Signed difference with one decimal, `+0.3`; `–` when either side is missing."""
    if is_missing(value) or is_missing(reference):
        return DASH
    delta = round(value - reference, 1)
    return "0.0" if delta == 0 else f"{delta:+.1f}"


def value_label(value) -> str:
    """A key value as a table shows it: `100` not `100.0`, `0.8`, `yes`/`no` for booleans."""
    if is_missing(value):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def key_of(record: dict, columns: list[str]) -> tuple:
    """A hashable group key with every missing value (NaN, None, '') as None."""
    return tuple(None if is_missing(record.get(c)) else record.get(c) for c in columns)

