"""Trials one study lends another: the same settings and seed are one measurement.

The baseline's ICAM trial at seed s is also the μ = 2.5 point of Fig. 4a (σ = 5), the σ = 5
point of Fig. 4b (μ = 2.5), Table 2's 100 samples and Table 4's ICAM row at seed s; its SEAM
trial is Table 4's SEAM row. A study that did not run such a point borrows it from any other
stored study, at the stages and splits the study itself stored, so a sweep run only at its
other values still shows (and pairs against) the preset's point.
"""

from __future__ import annotations

import pandas as pd

from icam.analysis.methods import is_missing
from icam.analysis.trials import NUMERIC_SETTINGS, SETTINGS
from icam.config import method_config

BORROWS = {
    "ablate_mu": ("icam",),
    "ablate_sigma": ("icam",),
    "ablate_num_samples": ("icam",),
    "contributions": ("seam", "seam+is", "seam+fsl", "icam"),
}
"""Study -> the method presets whose exact settings are points of its paper grid."""

_ROW = ("seed", "stage", "split", "backbone", "training")


def _settings_equal(frame: pd.DataFrame, preset: str) -> pd.Series:
    """Rows whose settings are exactly those of method preset `preset`."""
    mask = pd.Series(True, index=frame.index)
    for column, value in method_config(preset).columns().items():
        if column in NUMERIC_SETTINGS:
            mask &= frame[column].astype(float).eq(float(value))
        else:
            mask &= frame[column].eq(value)
    return mask


def _identity(frame: pd.DataFrame) -> pd.Series:
    """One hashable key per row: settings, seed, stage, split, backbone, training."""
    columns = [c for c in (*SETTINGS, *_ROW) if c in frame.columns]
    return frame[columns].apply(
        lambda r: tuple(None if is_missing(v) else v for v in r), axis=1)


def with_shared(frame: pd.DataFrame, key=lambda s: s) -> tuple[pd.DataFrame, list[str]]:
    """`frame` plus, for each study in BORROWS, the preset trials it lacks from other studies
    (relabelled as that study); and a note per loan. `key` maps stored study names to the
    BORROWS names (make_all's `study_key`)."""
    if frame.empty:
        return frame, []
    keys = frame["study"].map(key)
    added, notes = [], []
    for study, presets in BORROWS.items():
        own = frame[keys == study]
        if own.empty:
            continue
        stored = set(_identity(own))
        places = set(zip(own["stage"], own["split"], strict=True))
        others = frame[keys != study]
        for column in ("backbone", "training"):  # the same networks and schedules only
            if column in frame.columns:
                values = {None if is_missing(v) else v for v in own[column]}
                others = others[[(None if is_missing(v) else v) in values
                                 for v in others[column]]]
        for preset in presets:
            rows = others[_settings_equal(others, preset)]
            rows = rows[[p in places for p in zip(rows["stage"], rows["split"], strict=True)]]
            if rows.empty:
                continue
            ids = _identity(rows)
            fresh = [i not in stored for i in ids]
            rows, ids = rows[fresh], ids[fresh]
            first = ~ids.duplicated()
            rows, ids = rows[first], ids[first]
            if rows.empty:
                continue
            lenders = ", ".join(sorted(set(rows["study"])))
            seeds = ", ".join(str(int(s)) for s in sorted(set(rows["seed"])))
            notes.append(f"{study}: {preset} trials (seeds {seeds}) shared from {lenders}")
            added.append(rows.assign(study=own["study"].iloc[0]))
            stored |= set(ids)
    if not added:
        return frame, notes
    return pd.concat([frame, *added], ignore_index=True), notes
