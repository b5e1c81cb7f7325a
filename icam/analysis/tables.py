"""The paper's Tables 2-5 as mean ± std over seeds, written as Markdown, LaTeX and CSV."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from icam.analysis.methods import (
    STAGE_LABELS,
    is_missing,
    method_label,
    method_rank,
    published_backbone,
)
from icam.analysis.output import write_text
from icam.analysis.stats import (
    DASH,
    View,
    cell,
    difference,
    expected_runs,
    key_of,
    select,
    summarise,
    value_label,
)
from icam.analysis.trials import METRICS, SETTINGS, SPLITS, STAGES

METRIC_LABELS = {"J": "J", "F": "F", "JF": "J&F"}


@dataclass(frozen=True)
class Spec:
    """What a table shows: its rows (`keys`), optional column groups, and how it meets the paper."""

    stem: str
    caption: str
    stage: str | None  # None: every stage (Table 3)
    split: str
    keys: tuple[str, ...]
    column: str | None = None  # a key shown as column groups (Table 3: method)
    match: tuple[str, ...] = ()  # keys that pair a row with the paper's row


SPECS = {
    "table2": Spec("table2_num_samples", "Table 2. J, F and J&F against the number of sampled "
                   "pixels (mean ± std over seeds)", "final", "train", ("num_samples",),
                   match=("num_samples",)),
    "table3": Spec("table3_baseline", "Table 3. SEAM against ICAM after each stage (mean ± std "
                   "over seeds)", None, "val", ("stage", "method"), column="method",
                   match=("stage", "method")),
    "table4": Spec("table4_contributions", "Table 4. The contributions separately on SEAM "
                   "(mean ± std over seeds)", "final", "val", ("method",), match=("method",)),
    "table5": Spec("table5_sota", "Table 5. Comparison with other methods (mean ± std over "
                   "seeds)", "final", "val", ("method", "backbone", "training"),
                   match=("method", "training")),
}


@dataclass
class Table:
    stem: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    data: pd.DataFrame  # numbers behind the cells, written as the CSV
    key_columns: int = 1  # leading header cells that label rows
    notes: list[str] = field(default_factory=list)


def from_trials(name: str, frame: pd.DataFrame, paper: pd.DataFrame | None = None) -> Table:
    """Table `name` (table2..table5) from one study's trials; `paper` adds published columns."""
    spec = SPECS[name]
    view = _view(spec, frame)
    keys = [k for k in spec.keys if k in view.frame and view.frame[k].notna().any()]
    if not keys:
        raise ValueError(f"no {' or '.join(spec.keys)} values in the trials")
    keys += _confounders(view.frame, keys)
    summary = summarise(view.frame, keys, expected_runs(frame))
    summary.insert(len(keys), "split", view.split)
    if "stage" not in summary:
        summary.insert(len(keys), "stage", view.stage)
    notes = [f"stage: {view.stage if spec.stage else 'all'}, split: {view.split}"]
    if view.note:
        notes.append(view.note)
    if paper is not None and spec.stage and view.stage != spec.stage:
        notes.append(f"published values are for the {spec.stage} stage")
    return layout(spec, summary, keys, paper, notes)


def _view(spec: Spec, frame: pd.DataFrame) -> View:
    if spec.stage is not None:
        return select(frame, spec.stage, spec.split)
    splits = [s for s in SPLITS if (frame["split"] == s).any()]
    split = spec.split if spec.split in splits or not splits else splits[0]
    note = "" if split == spec.split else f"{spec.split} split not stored, showing {split}"
    return View(frame[frame["split"] == split], "all", split, note)


ROW_SETTINGS = (*SETTINGS, "backbone", "training")
"""The columns that can tell trials apart; 'training' is shown in the method's label."""


def _with_method(keys: list[str]) -> list[str]:
    """'training' (et) is shown in the method's cell, so a key list with it has 'method'."""
    if "training" in keys and "method" not in keys:
        keys.insert(keys.index("training"), "method")
    return keys


def _confounders(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """Settings that vary within a row of the table: shown as extra row keys, never averaged."""
    extra = []
    for column in ROW_SETTINGS:
        if column in keys or column not in frame or not keys:
            continue
        varying = frame.groupby(keys, dropna=False)[column].nunique(dropna=False)
        if (varying > 1).any():
            extra.append(column)
    return [k for k in _with_method(keys + extra) if k not in keys]


def summary_table(frame: pd.DataFrame, study: str) -> Table:
    """Any study's trials by stage, split and every setting that varies (studies the paper has
    no table for, such as the Optuna search)."""
    varying = [c for c in ROW_SETTINGS if c in frame and frame[c].nunique(dropna=False) > 1]
    keys = ["stage", "split", *_with_method(varying)]
    spec = Spec(f"{study}_summary", f"Study {study}: J, F and J&F (mean ± std over seeds)", None,
                "", tuple(keys))
    return layout(spec, summarise(frame, keys, expected_runs(frame)), keys)


def layout(spec: Spec, summary: pd.DataFrame, keys: list[str], paper: pd.DataFrame | None = None,
           notes: list[str] | None = None) -> Table:
    """Arrange a summary (keys + J/F/JF mean, std, n) as `spec` says, beside `paper` if given."""
    summary = _ordered(summary.reset_index(drop=True), keys)
    column = spec.column if spec.column in keys else None
    row_keys = [k for k in keys if k != column]
    records = summary.to_dict("records")
    groups = list(dict.fromkeys(key_of(r, row_keys) for r in records))
    columns = list(dict.fromkeys(key_of(r, [column]) for r in records)) if column else [()]
    by_key = {key_of(r, row_keys + ([column] if column else [])): r for r in records}
    header = [_key_header(k) for k in row_keys if k != "training"]
    for metric in METRICS:
        for group in columns:
            label = METRIC_LABELS[metric] + ("" if not column else " " + method_label(group[0]))
            header += [label] + ([f"{label} paper", f"Δ{label}"] if paper is not None else [])
    rows, data = [], []
    for group in groups:
        first = next(r for r in records if key_of(r, row_keys) == group)
        row = [_key_cell(k, first) for k in row_keys if k != "training"]
        for metric in METRICS:
            for extra in columns:
                record = by_key.get(group + extra)
                row.append(DASH if record is None else cell(
                    record[metric], record[f"{metric}_std"], record[f"{metric}_n"],
                    record["n_expected"]))
                if paper is not None:
                    published = _published(paper, record, spec.match)
                    row += _paper_cells(record, published, metric)
        rows.append(row)
    for record in records:
        published = _published(paper, record, spec.match) if paper is not None else None
        if paper is not None:
            for metric in METRICS:
                record[f"{metric}_paper"] = published[metric] if published else None
                record[f"{metric}_paper_std"] = published[f"{metric}_std"] if published else None
                record[f"{metric}_diff"] = (record[metric] - published[metric]
                                            if published and not is_missing(published[metric])
                                            and not is_missing(record[metric]) else None)
        data.append(record)
    return Table(spec.stem, spec.caption, header, rows, pd.DataFrame(data),
                 len(header) - len(METRICS) * len(columns) * (3 if paper is not None else 1),
                 list(notes or []))


def _ordered(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Stages in pipeline order, methods in the paper's order, numbers ascending; else as seen."""
    def rank(column, value):
        if is_missing(value):
            return (2, 0, "")
        if column == "stage":
            return (0, STAGES.index(value), "")
        if column == "method":
            return (0, *method_rank(value))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, value, "")
        return (1, 0, "")
    sortable = [k for k in keys if k in ("stage", "method") or
                pd.api.types.is_numeric_dtype(summary[k])]
    order = sorted(range(len(summary)),
                   key=lambda i: [rank(k, summary.at[i, k]) for k in sortable])
    return summary.iloc[order].reset_index(drop=True)


def _key_header(column: str) -> str:
    return {"num_samples": "#pixels", "method": "Method", "stage": "Stage", "split": "Split",
            "backbone": "Backbone", "lambda": "λ", "mu": "μ", "sigma": "σ",
            "fsl": "FSL", "pooling": "Pooling"}.get(column, column)


def _key_cell(column: str, record: dict) -> str:
    if column == "method":
        return method_label(record.get("method"), record.get("training"))
    if column == "stage":
        return STAGE_LABELS.get(record["stage"], str(record["stage"]))
    return value_label(record.get(column))


def _published(paper: pd.DataFrame, record: dict | None, match: tuple[str, ...]) -> dict | None:
    """The paper's row with the same `match` keys (a missing key matches a blank one); the
    same backbone is preferred where the paper has several."""
    if record is None:
        return None
    candidates = [p for p in paper.to_dict("records")
                  if key_of(p, list(match)) == key_of(record, list(match))]
    backbone = published_backbone(record.get("backbone"))
    same = [p for p in candidates if key_of(p, ["backbone"]) == (backbone,)]
    return (same or candidates or [None])[0]


def _paper_cells(record: dict | None, published: dict | None, metric: str) -> list[str]:
    if published is None or is_missing(published[metric]):
        return [DASH, DASH]
    reproduced = None if record is None else record[metric]
    return [cell(published[metric], published[f"{metric}_std"]),
            difference(reproduced, published[metric])]


def markdown(table: Table) -> str:
    lines = [f"**{table.caption}**", ""]
    lines.append("| " + " | ".join(table.header) + " |")
    lines.append("|" + "|".join("---" if i < table.key_columns else "---:"
                                for i in range(len(table.header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for plain, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"),
                           ("#", r"\#"), ("_", r"\_"), ("±", r"$\pm$"), ("–", "--"),
                           ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"), ("μ", r"$\mu$"),
                           ("σ", r"$\sigma$")):
        text = text.replace(plain, escaped)
    return text


def latex(table: Table) -> str:
    spec = "l" * table.key_columns + "r" * (len(table.header) - table.key_columns)
    lines = [r"\begin{table}", r"\centering", f"\\caption{{{_tex(table.caption)}}}",
             f"\\begin{{tabular}}{{{spec}}}", r"\hline",
             " & ".join(_tex(h) for h in table.header) + r" \\", r"\hline"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\hline", r"\end{tabular}"]
    lines += [f"% {note}" for note in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: Table, out_dir: str) -> list[str]:
    """`<stem>.md`, `<stem>.tex` and `<stem>.csv` in `out_dir`; returns the paths."""
    base = os.path.join(out_dir, table.stem)
    return [write_text(base + ".md", markdown(table)), write_text(base + ".tex", latex(table)),
            write_text(base + ".csv", table.data.to_csv(index=False, lineterminator="\n"))]
