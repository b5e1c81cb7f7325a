"""Figs. 1, 3 and 4 with seaborn: error bars and bands are one sample std over seeds.

Figures are plain matplotlib `Figure`s rendered by Agg, never through pyplot, so nothing
here changes a caller's backend or global style.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import AutoLocator

from icam.analysis.methods import method_label
from icam.analysis.stats import expected_runs, select, summarise
from icam.analysis.trials import METRICS

METRIC_LABELS = {"J": "J", "F": "F", "JF": "J&F"}
COLOURS = dict(zip(METRIC_LABELS.values(), sns.color_palette("deep", 3), strict=True))
DASHES = {"J": ":", "F": "--", "J&F": "-."}
PARAMETERS = {"lambda": "λ", "mu": "μ", "sigma": "σ"}
POOLINGS = (("max", "(a) GMP"), ("avg", "(b) GAP"))
GRIDS = {"lambda": (-0.05, 1.05), "mu": (-0.2, 4.2), "sigma": (0.5, 9.5)}  # the paper's sweeps
NO_TRIALS = "no trials"


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(width * panels, height), layout="constrained")
    FigureCanvasAgg(figure)
    with sns.axes_style("whitegrid"):
        axes = [figure.add_subplot(1, panels, i + 1) for i in range(panels)]
    return figure, axes


def _title(figure: Figure, title: str, note: str = "") -> None:
    figure.suptitle(title + (f"\n({note})" if note else ""), fontsize=10)


FSL_ORDER = ("with FSL", "without FSL", "FSL unknown")
"""The FSL line styles in this order (solid first) in every panel, whatever order rows come in."""


def long_form(frame: pd.DataFrame, x: str, metrics=METRICS) -> pd.DataFrame:
    """One row per trial and metric: x, `metric` (J, F, J&F), `value`, `FSL` and `pooling`."""
    frame = frame.assign(FSL=["with FSL" if v is True else "without FSL" if v is False
                              else "FSL unknown" for v in frame["fsl"]])
    long = frame.melt(id_vars=[x, "FSL", "pooling", "seed"], value_vars=list(metrics),
                      var_name="metric", value_name="value")
    long["metric"] = long["metric"].map(METRIC_LABELS)
    return long.dropna(subset=[x, "value"])


def fig1(summary: pd.DataFrame, published: pd.DataFrame | None = None, note: str = "") -> Figure:
    """Fig. 1: J against F, one point per method (mean; bars: std over seeds)."""
    figure, (ax,) = _figure(5.5, 4.5)
    _points(ax, summary, "o", "C0", "this run" if published is not None else None)
    if published is not None:
        _points(ax, published, "s", "0.5", "published (Table 5)")
        ax.legend(fontsize=7)
    ax.set_xlabel("contour quality F (%)")
    ax.set_ylabel("region similarity J (%)")
    _title(figure, "Fig. 1. Region similarity against contour quality", note)
    return figure


def _points(ax, summary: pd.DataFrame, marker: str, colour, label: str | None) -> None:
    summary = summary.dropna(subset=["J", "F"])
    names = [method_label(m, t) + ("" if pd.isna(b) else f" {b}") for m, t, b in zip(
        summary["method"], summary.get("training", [None] * len(summary)),
        summary.get("backbone", [None] * len(summary)), strict=True)]
    ax.errorbar(summary["F"], summary["J"], xerr=summary["F_std"].fillna(0),
                yerr=summary["J_std"].fillna(0), fmt="none", ecolor=colour, elinewidth=0.8,
                alpha=0.6)
    sns.scatterplot(x=summary["F"].to_numpy(), y=summary["J"].to_numpy(), ax=ax, s=45,
                    marker=marker, color=colour, label=label, legend=label is not None)
    for x, y, name in zip(summary["F"], summary["J"], names, strict=True):
        ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7,
                    color=colour)


def fig3(long: pd.DataFrame, statements: pd.DataFrame | None = None, note: str = "",
         empty: str = NO_TRIALS) -> Figure:
    """Fig. 3: J and F against λ for GMP (a) and GAP (b), with and without FSL."""
    figure, axes = _figure(4.5, 3.8, panels=2)
    for ax, (pooling, title) in zip(axes, POOLINGS, strict=True):
        panel = long[(long["pooling"] == pooling) & long["metric"].isin(["J", "F"])]
        _lines(ax, panel, "lambda", empty, style="FSL")
        if statements is not None:
            _statements(ax, statements[statements["pooling"] == pooling], "lambda")
        ax.set_title(title, fontsize=9)
    _title(figure, "Fig. 3. J and F against λ", note)
    return figure


def fig4(long: pd.DataFrame, parameter: str, statements: pd.DataFrame | None = None,
         note: str = "", empty: str = NO_TRIALS) -> Figure:
    """Fig. 4: J, F and J&F against μ (a) or σ (b)."""
    figure, (ax,) = _figure(4.8, 3.8)
    _lines(ax, long, parameter, empty)
    if statements is not None:
        _statements(ax, statements, parameter)
    panel = "(a)" if parameter == "mu" else "(b)"
    _title(figure, f"Fig. 4{panel[1]}. J, F and J&F against {PARAMETERS[parameter]}", note)
    return figure


def _lines(ax, long: pd.DataFrame, x: str, empty: str, style: str | None = None) -> None:
    if long.empty:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xlim(*GRIDS[x])
        ax.set_yticks([])
    else:
        order = [v for v in FSL_ORDER if v in set(long[style])] if style == "FSL" else None
        sns.lineplot(data=long, x=x, y="value", hue="metric", style=style, style_order=order,
                     ax=ax, errorbar="sd", marker="o", palette=COLOURS, sort=True)
        ax.legend(fontsize=7, ncol=2, loc="best")
    ax.set_xlabel(PARAMETERS[x])
    ax.set_ylabel("%")


def _statements(ax, statements: pd.DataFrame, x: str) -> None:
    """The paper's stated values (crosses, labelled) and optima (dotted lines) on an axis."""
    for row in statements.to_dict("records"):
        if row["kind"] == "value":
            for metric, label in METRIC_LABELS.items():
                if not pd.isna(row[metric]):
                    ax.yaxis.set_major_locator(AutoLocator())
                    ax.plot([row[x]], [row[metric]], marker="X", markersize=9, linestyle="",
                            color=COLOURS[label], label=f"{label} (paper text)")
                    ax.annotate(f"{row[metric]:.1f}", (row[x], row[metric]), xytext=(6, -3),
                                textcoords="offset points", fontsize=7)
        else:
            metric = METRIC_LABELS[row["kind"].removeprefix("argmax_")]
            ax.axvline(row[x], linestyle=DASHES[metric], color=COLOURS[metric],
                       label=f"best {metric} (paper text)")
    if len(statements):
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
        ax.margins(y=0.3)


def fig1_from_trials(frame: pd.DataFrame, published: pd.DataFrame | None = None) -> Figure:
    view = select(frame, "final", "val")
    keys = [k for k in ("method", "backbone", "training") if k in view.frame]
    summary = summarise(view.frame, keys, expected_runs(frame))
    return fig1(summary, published, _note(view))


def fig3_from_trials(frame: pd.DataFrame, statements: pd.DataFrame | None = None) -> Figure:
    view = select(frame, "final", "train")
    return fig3(long_form(view.frame, "lambda", ("J", "F")), statements, _note(view))


def fig4_from_trials(frame: pd.DataFrame, parameter: str,
                     statements: pd.DataFrame | None = None) -> Figure:
    view = select(frame, "final", "train")
    return fig4(long_form(view.frame, parameter), parameter, statements, _note(view))


def _note(view) -> str:
    return f"{view.stage} stage, {view.split} split" + (f"; {view.note}" if view.note else "")
