"""The report at the end of a pipeline run or a study, written beside its trials.csv.

`report.md`: J and F per stage, the time each stage took, the settings that differ from the
preset, and the paper's numbers beside ours where the study reproduces a table of the paper
(Tables 3-5 also for a pipeline run of a method they list). `qualitative.png`: four validation
images through the stages (image, foreground CAM, CAM pseudo-label, AffinityNet label, final
prediction, ground truth) for the trial with the best J&F. `losses.png`: each stage's training
loss curve per trial (the stages' `losses.csv`), so a reader sees at a glance whether training
converged; report.md lists each curve's last steps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from icam.analysis.robustness import draws, draws_study, robustness_markdown, strip_figure
from icam.config import STAGES, PipelineConfig, pipeline_config
from icam.stages.files import read_json

REPORT = "report.md"
FIGURE = "qualitative.png"
LOSS_FIGURE = "losses.png"
ROBUSTNESS_FIGURE = "robustness.png"  # a study over thread counts: J and F of every draw
LAST_STEPS = 3
"""Steps of each loss curve listed in report.md."""
IMAGES = 4
"""Validation images in the qualitative figure."""

FIGURE_DPI = 100


@dataclass(frozen=True)
class Report:
    markdown: str
    table: str  # its J and F per stage (Markdown)
    figure: Path | None  # None when no trial has a validation image to show
    messages: list[str]  # what the figure left out, and why


# --- time per stage ------------------------------------------------------------------------------


def _result_rows(fs, path: str) -> list[dict]:
    import pyarrow.fs as pafs

    if fs.get_file_info(path).type != pafs.FileType.File:
        return []
    with fs.open_input_stream(path) as stream:
        text = stream.read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def stage_seconds(study_dir: str | os.PathLike, tune: str) -> dict[tuple[str, str], float]:
    """{(trial, stage): seconds} from Tune's result files of the study's experiments: for each
    worker process that ran the stage, from its setup to its last report, summed."""
    from icam.analysis.trials import open_location

    record_path = Path(study_dir) / "experiments.json"
    if not record_path.is_file():
        return {}
    fs, base = open_location(tune)
    seconds: dict[tuple[str, str], float] = {}
    for stage, experiments in read_json(record_path).items():
        for name, entry in experiments.items():
            for key in entry["trials"]:
                by_pid: dict[int, float] = {}
                for row in _result_rows(fs, f"{base}/{name}/{key}/result.json"):
                    if "setup_at" in row and "wall_time" in row:
                        by_pid[row.get("pid")] = row["wall_time"] - row["setup_at"]
                if by_pid:
                    seconds[(key, stage)] = seconds.get((key, stage), 0.0) + sum(by_pid.values())
    return seconds


def duration(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


# --- the tables ----------------------------------------------------------------------------------


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def stage_table(frame: pd.DataFrame, study: str, seconds: dict) -> str:
    """J, F and J&F per stage and split (mean ± std over trials when several), and time."""
    from icam.analysis.tables import markdown, summary_table

    trials = frame["trial_id"].unique()
    if len(trials) > 1:
        times = [_row(["stage", "trials", "time per trial (mean)", "time (all trials)"]),
                 "|---|---:|---:|---:|"]
        for stage in STAGES:
            values = [seconds[(t, stage)] for t in trials if (t, stage) in seconds]
            if values:
                times.append(_row([stage, str(len(values)), duration(sum(values) / len(values)),
                                   duration(sum(values))]))
        return markdown(summary_table(frame, study)) + "\n" + "\n".join(times) + "\n"
    lines = [_row(["stage", "split", "J", "F", "J&F", "time"]), "|---|---|---:|---:|---:|---:|"]
    for stage in STAGES:
        for split in ("train", "val"):
            rows = frame[(frame["stage"] == stage) & (frame["split"] == split)]
            if len(rows):
                r = rows.iloc[0]
                cells = [f"{r[m]:.1f}" if pd.notna(r[m]) else "–" for m in ("J", "F", "JF")]
                time = duration(seconds.get((trials[0], stage))) if split == "train" else ""
                lines.append(_row([stage, split, *cells, time]))
    return "\n".join(lines) + "\n"


def paper_tables(frame: pd.DataFrame, study: str) -> list[str]:
    """The paper's tables this study reproduces, with the published values beside ours; for a
    study the paper has no table for, the first of Tables 3, 4, 5 that lists all its methods."""
    from icam.analysis import paper, tables
    from icam.analysis.make_all import PRODUCTS, study_key
    from icam.analysis.trials import normalise

    frame = normalise(frame)  # the analysis's names: methods, backbones ("Lite0 for R2N")
    published = paper.load()
    names = [n for n, p in PRODUCTS.items() if p.study == study_key(study) and n in tables.SPECS]
    if not names and not any(p.study == study_key(study) for p in PRODUCTS.values()):
        methods = set(frame["method"].dropna())
        for name in ("table3", "table4", "table5"):
            listed = set(published.loc[published["table"] == name, "method"])
            if methods and methods <= listed:
                names = [name]
                break
    out = []
    for name in names:
        try:
            table = tables.from_trials(name, frame, paper.summary(published, name))
            out.append(tables.markdown(table))
        except ValueError as error:
            out.append(f"{name}: not comparable ({error})\n")
    return out


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "none" if value is None else str(value)


def config_differences(configs: list[PipelineConfig]) -> list[tuple[str, str, str]]:
    """(setting, preset value, this run's values) for every setting in which a trial differs
    from its preset (its method's preset under its training preset, its own seed)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for config in configs:
        preset = pipeline_config(config.preset, config.method.name, config.seed)
        ours, theirs = _flat(config.to_dict()), _flat(preset.to_dict())
        for key, value in ours.items():
            if value != theirs.get(key):
                default, values = found.setdefault(key, (_shown(theirs.get(key)), []))
                if _shown(value) not in values:
                    values.append(_shown(value))
    return [(key, default, "; ".join(values)) for key, (default, values) in sorted(found.items())]


# --- the report ----------------------------------------------------------------------------------


def best_trial(frame: pd.DataFrame, trials: list[str]) -> str:
    """Of `trials`, the one with the best J&F on val at the last stage reached (the first on
    ties)."""
    frame = frame[frame["trial_id"].isin(trials)]
    last = [s for s in STAGES if (frame["stage"] == s).any()][-1]
    rows = frame[(frame["stage"] == last) & (frame["split"] == "val")].dropna(subset=["JF"])
    if rows.empty:
        return trials[0]
    return str(rows.loc[rows["JF"].idxmax(), "trial_id"])


def write_report(study: str, study_dir: str | os.PathLike, data_root: str | os.PathLike,
                 tune: str | None = None, frame: pd.DataFrame | None = None) -> Report:
    """report.md and qualitative.png in `study_dir` (beside trials.csv); `tune` is where the
    study's Tune experiments are (default `<study_dir>/tune`)."""
    from icam.analysis.output import write_text
    from icam.analysis.qualitative import qualitative_figure
    from icam.data.voc import VOCLayout

    study_dir = Path(study_dir)
    frame = pd.read_csv(study_dir / "trials.csv") if frame is None else frame
    if frame.empty:
        raise ValueError(f"{study_dir / 'trials.csv'}: no finished stage to report")
    # trials run here (rows added from elsewhere, such as other methods' predictions, have no
    # configuration or artefacts)
    trials = [t for t in dict.fromkeys(frame["trial_id"])
              if (study_dir / "artefacts" / t / "config.json").is_file()]
    if not trials:
        raise ValueError(f"{study_dir / 'trials.csv'}: no trial of {study_dir / 'artefacts'}")
    configs = [PipelineConfig.from_dict(read_json(study_dir / "artefacts" / t / "config.json"))
               for t in trials]
    seconds = stage_seconds(study_dir, tune or str(study_dir / "tune"))
    best = best_trial(frame, trials)
    ids = VOCLayout(data_root).ids("val")[:IMAGES]
    figure, messages = qualitative_figure(str(study_dir / "artefacts" / best), str(data_root), ids)
    figure_path = None
    if figure is not None:
        figure_path = study_dir / FIGURE
        save_png(figure, figure_path)

    table = stage_table(frame, study, seconds)
    presets = sorted({c.preset for c in configs})
    methods = ", ".join(dict.fromkeys(c.method.name for c in configs))
    seeds = ", ".join(str(s) for s in sorted({c.seed for c in configs}))
    lines = [f"# {study}", "",
             f"{len(trials)} trial(s) run here; method(s) {methods}; seed(s) {seeds}; preset "
             f"{', '.join(presets)}; data root `{data_root}`.", "",
             "## J and F per stage", "", table]
    published = paper_tables(frame, study)
    if published:
        lines += ["## Beside the paper", "",
                  "The paper's numbers are ResNet-38 on PASCAL VOC 2012; on other data or "
                  "another backbone they are a reference point, not a target.", ""]
        lines += published
    if draws_study(study, frame):
        drawn = draws(frame, "val")
        save_png(strip_figure(drawn, "val"), study_dir / ROBUSTNESS_FIGURE)
        lines += ["## Draws that fail", "", robustness_markdown(drawn, "val"),
                  f"![J and F of every draw]({ROBUSTNESS_FIGURE})", ""]
    lines += ["## Settings that differ from the preset", ""]
    differences = config_differences(configs)
    if differences:
        lines += [_row(["setting", "preset", "this run"]), "|---|---|---|"]
        lines += [_row(list(d)) for d in differences]
    else:
        lines.append(f"None: every trial runs its method's preset under the {presets[0]} "
                     "training preset.")
    curves = loss_curves(study_dir, trials)
    if curves:
        save_png(loss_figure(curves), study_dir / LOSS_FIGURE)
        lines += ["", "## Training loss", "",
                  "The mean loss of every Tune step (an epoch; the final stage's "
                  "`steps_per_report` iterations): a curve that still falls steeply at its "
                  "end has not converged.", "", *loss_lines(curves), "",
                  f"![training loss]({LOSS_FIGURE})"]
    lines += ["", "## Qualitative", ""]
    if figure_path is not None:
        lines += [f"Trial `{best}`, validation images {', '.join(ids)}: image, foreground CAM, "
                  "CAM pseudo-label, AffinityNet label, final prediction, ground truth.", "",
                  f"![qualitative]({FIGURE})"]
    else:
        lines.append("No validation image to show.")
    lines += [f"- {m}" for m in messages]
    markdown = "\n".join(lines) + "\n"
    write_text(str(study_dir / REPORT), markdown)
    return Report(markdown, table, figure_path, messages)


def loss_curves(study_dir: Path, trials: list[str]) -> dict[tuple[str, str], pd.DataFrame]:
    """(trial, stage) -> its `losses.csv` (round, iteration, epoch, loss), where stored."""
    from icam.stages.trainable import LOSSES_FILE

    curves = {}
    for trial in trials:
        for stage in STAGES:
            path = study_dir / "artefacts" / trial / stage / LOSSES_FILE
            if path.is_file():
                curves[trial, stage] = pd.read_csv(path)
    return curves


def loss_lines(curves: dict[tuple[str, str], pd.DataFrame]) -> list[str]:
    """report.md's table of each curve's last `LAST_STEPS` losses."""
    lines = [_row(["trial", "stage", "steps", f"loss at the last {LAST_STEPS} steps (epoch)"]),
             "|---|---|---:|---|"]
    for (trial, stage), curve in curves.items():
        last = curve.tail(LAST_STEPS)
        cells = ", ".join(f"{loss:.3f} ({epoch:g})"
                          for loss, epoch in zip(last.loss, last.epoch, strict=True))
        lines.append(_row([trial, stage, str(len(curve)), cells]))
    return lines


def loss_figure(curves: dict[tuple[str, str], pd.DataFrame]):
    """One panel per stage: the loss of every trial against its epoch (rounds side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if any(stage == s for _, stage in curves)]
    figure, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        for (trial, s), curve in curves.items():
            if s != stage:
                continue
            for number, part in curve.groupby("round"):
                label = trial if number == 1 else f"{trial} round {number}"
                ax.plot(part.epoch, part.loss, marker=".", label=label)
        ax.set(title=f"{stage} training loss", xlabel="epoch", ylabel="loss")
        ax.grid(alpha=0.3)
    if len(curves) <= 6:
        axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def save_png(figure, path: Path) -> None:
    """The figure as a PNG (atomically; no creation date, so the same run gives the same file)."""
    from icam.atomic import atomic_path

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight",
                       metadata={"Software": None})
