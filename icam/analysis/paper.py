"""The published numbers (`paper_results.csv` beside this file) as tables and figures take them."""

from __future__ import annotations

import os

import pandas as pd

from icam.analysis.methods import canonical_method
from icam.analysis.tables import SPECS, Table, layout
from icam.analysis.trials import METRICS

PAPER_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_results.csv")


def load(path: str = PAPER_RESULTS) -> pd.DataFrame:
    """All published rows: Tables 2-5 (`kind` = value) and what the text says of Figs. 3-4."""
    frame = pd.read_csv(path, dtype={"training": str, "backbone": str, "kind": str})
    frame["method"] = [canonical_method(m) for m in frame["method"]]
    frame["fsl"] = pd.Series([None if pd.isna(v) else bool(v) for v in frame["fsl"]],
                             index=frame.index, dtype=object)
    return frame


def summary(paper: pd.DataFrame, name: str) -> pd.DataFrame:
    """Table `name`'s published rows as a summary: mean, std, n = runs, in the paper's order."""
    rows = paper[(paper["table"] == name) & (paper["kind"] == "value")].copy()
    for metric in METRICS:
        rows[f"{metric}_n"] = rows["runs"]
    rows["n_expected"] = rows["runs"]
    return rows.reset_index(drop=True)


def table(paper: pd.DataFrame, name: str, notes: list[str] | None = None) -> Table:
    """The paper's own Table 2, 3, 4 or 5 as the reproduced tables are laid out."""
    keys = list(SPECS[name].keys)
    rows = summary(paper, name)
    stage, split = rows["stage"].iloc[0], rows["split"].iloc[0]
    shown = "all stages" if "stage" in keys else f"stage: {stage}"
    means_only = rows[[f"{m}_std" for m in METRICS]].isna().all().all()
    return layout(SPECS[name], rows, keys, None,
                  [f"published values; {shown}, split: {split}",
                   *(["the paper gives means only"] if means_only else []), *(notes or [])])


def statements(paper: pd.DataFrame, name: str) -> pd.DataFrame:
    """Figure `name`'s (fig3, fig4a, fig4b) values and optima as the paper's text states them."""
    return paper[paper["table"] == name].reset_index(drop=True)
