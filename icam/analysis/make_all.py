"""Regenerate the paper's tables and figures from stored trials, or from the published numbers.

    python analysis/make_all.py --results DIR_OR_URI [--out DIR] [--compare paper]
    python analysis/make_all.py --results paper

Studies call `write_study_outputs` (one study's table or figure) or `make_all` at their end.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
import warnings
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs

from icam.analysis import figures, paper, tables
from icam.analysis.findings import findings, findings_markdown
from icam.analysis.output import save_figure, write_text
from icam.analysis.paired import NOT_MEASURED
from icam.analysis.qualitative import DEFAULT_PATHS, ArtefactPaths, qualitative_figure
from icam.analysis.robustness import draws_study, write_robustness
from icam.analysis.shared import with_shared
from icam.analysis.stats import select
from icam.analysis.trials import (
    StoredTrials,
    TrialsError,
    TrialSkipped,
    contract_columns,
    open_location,
    read_trials,
)


@dataclass(frozen=True)
class Product:
    stem: str
    study: str  # the study whose trials it shows
    stage: str | None  # the stage and split the paper shows (None: all stages)
    split: str


PRODUCTS = {
    "table2": Product("table2_num_samples", "ablate_num_samples", "final", "train"),
    "table3": Product("table3_baseline", "baseline", None, "val"),
    "table4": Product("table4_contributions", "contributions", "final", "val"),
    "table5": Product("table5_sota", "sota", "final", "val"),
    "fig1": Product("fig1_j_vs_f", "sota", "final", "val"),
    "fig3": Product("fig3_lambda", "ablate_lambda", "final", "train"),
    "fig4a": Product("fig4a_mu", "ablate_mu", "final", "train"),
    "fig4b": Product("fig4b_sigma", "ablate_sigma", "final", "train"),
}
DEFAULT_OUT = os.path.join("results", "analysis")
QUALITATIVE_IDS = 4  # images shown when no ids are given


@dataclass
class Summary:
    """What make_all read, wrote and skipped (and why)."""

    results: str
    out: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # the Markdown of each table written
    stored: StoredTrials | None = None

    def report(self) -> str:
        lines = [f"results: {self.results}"]
        if self.stored is not None:
            s = self.stored
            lines.append(f"read {len(s.csv_files)} trials.csv file(s) and rebuilt "
                         f"{len(s.rebuilt)} Ray Tune trial folder(s): {len(s.frame)} rows, "
                         f"{s.frame['study'].nunique()} study(ies); skipped {len(s.skipped)}"
                         + (f"; {s.covered} trial folder(s) already in a trials.csv"
                            if s.covered else ""))
            lines += [f"  skipped {path}: {reason}" for path, reason in s.skipped]
        lines += self.tables
        lines += [f"wrote {path}" for path in self.written]
        lines += [f"skipped {what}" for what in self.skipped]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def study_key(name) -> str:
    """`studies/ablate-mu.py`, `Ablate_Mu` and `ablate_mu` name one study."""
    base = posixpath.basename(str(name).strip().replace("\\", "/")).lower()
    return base.removesuffix(".py").replace("-", "_")


def _published(name: str, compare: pd.DataFrame | None):
    if compare is None:
        return None
    if name in tables.SPECS:
        return paper.summary(compare, name)
    if name == "fig1":
        return paper.summary(compare, "table5")
    return paper.statements(compare, name)


def write_product(name: str, frame: pd.DataFrame, out_dir: str,
                  compare: pd.DataFrame | None = None) -> tuple[list[str], str]:
    """One table or figure from one study's trials: (paths written, stage/split note)."""
    product, published = PRODUCTS[name], _published(name, compare)
    note = select(frame, product.stage, product.split).note if product.stage else ""
    if name in tables.SPECS:
        table = tables.from_trials(name, frame, published)
        return tables.write_table(table, out_dir), note
    if name == "fig1":
        figure = figures.fig1_from_trials(frame, published)
    elif name == "fig3":
        figure = figures.fig3_from_trials(frame, published)
    else:
        figure = figures.fig4_from_trials(frame, "mu" if name == "fig4a" else "sigma",
                                          published)
    return save_figure(figure, out_dir, product.stem), note


def write_study_outputs(trials_csv_path: str, study_name: str, out_dir: str,
                        compare: str | None = None) -> list[str]:
    """The table(s) or figure(s) of one study from its trials.csv (local path or URI);
    a study the paper has no table for gets its summary table. Returns the paths written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = read_trials(trials_csv_path)
    if stored.skipped:
        raise TrialsError(stored.skipped[0][1])
    key = study_key(study_name)
    frame = stored.frame[[study_key(s) == key for s in stored.frame["study"]]]
    if frame.empty:
        raise ValueError(f"{trials_csv_path}: no rows of study {study_name!r}")
    published = _compare(compare)
    names = [n for n, p in PRODUCTS.items() if p.study == key]
    if not names:
        written = tables.write_table(tables.summary_table(frame, key), out_dir)
        return written + (write_robustness(frame, out_dir) if draws_study(key, frame) else [])
    return [path for name in names for path in write_product(name, frame, out_dir,
                                                             published)[0]]


def _compare(compare: str | None) -> pd.DataFrame | None:
    if compare in (None, ""):
        return None
    if compare != "paper":
        raise ValueError(f"compare={compare!r} is invalid: allowed paper")
    return paper.load()


def make_all(results: str, out: str = DEFAULT_OUT, compare: str | None = None,
             trial_dir: str | None = None, data_root: str | None = None,
             ids: list[str] | None = None) -> Summary:
    """Every table and figure the stored trials under `results` support (`results="paper"`: the
    published ones), written to `out`; the Summary says what was written and skipped, and why."""
    if results == "paper":
        return _paper_outputs(out)
    published = _compare(compare)
    stored = read_trials(results)
    summary = Summary(results, out, stored=stored)
    frame = stored.frame
    if frame.empty:
        summary.skipped.append(f"everything: no stored trials under {results}")
        return summary
    os.makedirs(out, exist_ok=True)
    summary.written.append(write_text(os.path.join(out, "trials.csv"), frame[contract_columns(
        frame)].to_csv(index=False, lineterminator="\n")))
    frame, loans = with_shared(frame, study_key)
    summary.notes += loans
    studies = {key: frame[[study_key(s) == key for s in frame["study"]]]
               for key in dict.fromkeys(study_key(s) for s in frame["study"])}
    for name, product in PRODUCTS.items():
        if product.study not in studies:
            summary.skipped.append(f"{product.stem}: no trials of study {product.study}")
            continue
        try:
            paths, note = write_product(name, studies[product.study], out, published)
        except ValueError as error:
            summary.skipped.append(f"{product.stem}: {error}")
            continue
        summary.written += paths
        if note:
            summary.notes.append(f"{product.stem}: {note}")
        if name in tables.SPECS:
            summary.tables.append(_read(paths[0]))
    for key in studies:
        if key not in {p.study for p in PRODUCTS.values()}:
            table = tables.summary_table(studies[key], key)
            summary.written += tables.write_table(table, out)
            summary.notes.append(f"study {key} has no table or figure in the paper; wrote its "
                                 "summary table")
        if draws_study(key, studies[key]):
            summary.written += write_robustness(studies[key], os.path.join(out, key))
    _findings(summary, frame, out)
    _qualitative(summary, trial_dir, data_root, ids)
    return summary


def _findings(summary: Summary, frame: pd.DataFrame, out: str) -> None:
    """findings.md: the verdict on each of the paper's findings that can be measured."""
    items = findings(frame)
    if all(item.verdict == NOT_MEASURED for item in items):
        summary.skipped.append("findings: no study of the paper's findings stored")
        return
    text = findings_markdown(items)
    summary.written.append(write_text(os.path.join(out, "findings.md"), text))
    summary.tables.append(text)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _qualitative(summary: Summary, trial_dir: str | None, data_root: str | None,
                 ids: list[str] | None, paths: ArtefactPaths = DEFAULT_PATHS) -> None:
    if not trial_dir or not data_root:
        summary.skipped.append("qualitative: give a trial folder and a data root "
                               "(--trial-dir, --data-root)")
        return
    if not ids:
        fs, folder = open_location(trial_dir)
        labels = posixpath.dirname(posixpath.join(folder, paths.pseudo_label.format(id="x")))
        names = [] if fs.get_file_info(labels).type != pafs.FileType.Directory else sorted(
            e.base_name for e in fs.get_file_info(pafs.FileSelector(labels)))
        ids = [n.rsplit(".", 1)[0] for n in names if n.endswith(".png")][:QUALITATIVE_IDS]
    figure, messages = qualitative_figure(trial_dir, data_root, ids or [], paths)
    summary.notes += [f"qualitative: {m}" for m in messages]
    if figure is None:
        summary.skipped.append(f"qualitative: no image found for ids {ids or []}")
        return
    summary.written += save_figure(figure, summary.out, "qualitative")


def _paper_outputs(out: str) -> Summary:
    """The published tables, and what the published text gives of Figs. 1, 3 and 4."""
    published = paper.load()
    summary = Summary("paper (icam/analysis/paper_results.csv)", out)
    for name in tables.SPECS:
        paths = tables.write_table(paper.table(published, name), out)
        summary.written += paths
        summary.tables.append(_read(paths[0]))
    table5 = paper.summary(published, "table5")
    summary.written += save_figure(figures.fig1(table5, note="published values, Table 5"), out,
                                   PRODUCTS["fig1"].stem)
    empty = pd.DataFrame(columns=["lambda", "mu", "sigma", "FSL", "pooling", "seed", "metric",
                                  "value"])
    unpublished = "curves not published as numbers"
    note = "published text only: marks are the values and optima the text states"
    summary.written += save_figure(figures.fig3(empty, paper.statements(published, "fig3"), note,
                                                unpublished), out, PRODUCTS["fig3"].stem)
    for name, parameter in (("fig4a", "mu"), ("fig4b", "sigma")):
        figure = figures.fig4(empty, parameter, paper.statements(published, name), note,
                              unpublished)
        summary.written += save_figure(figure, out, PRODUCTS[name].stem)
    summary.notes.append("Figs. 3 and 4: the paper publishes these curves only as plots; the "
                         "figures show the values and optima its text states")
    summary.skipped.append("qualitative: the published numbers hold no images")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True,
                        help="folder or URI (file://, s3://, gs://) holding stored trials, or "
                             "'paper' for the published numbers")
    parser.add_argument("--out", help=f"output folder (default {DEFAULT_OUT}, or "
                                      f"{DEFAULT_OUT}/paper with --results paper)")
    parser.add_argument("--compare", choices=["paper"],
                        help="put the published value and the difference beside each cell")
    parser.add_argument("--trial-dir", help="a stored trial's folder, for the qualitative figure")
    parser.add_argument("--data-root", help="the VOC-layout data root of that trial")
    parser.add_argument("--ids", help="comma-separated image ids for the qualitative figure")
    args = parser.parse_args(argv)
    out = args.out or (os.path.join(DEFAULT_OUT, "paper") if args.results == "paper"
                       else DEFAULT_OUT)
    warnings.simplefilter("always", TrialSkipped)
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"warning: {message}\n"
    try:
        summary = make_all(args.results, out, args.compare, args.trial_dir, args.data_root,
                           args.ids.split(",") if args.ids else None)
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.report())
    return 0 if summary.written else 1


if __name__ == "__main__":
    sys.exit(main())
