"""Draws that fail: a method's trials over seeds x torch threads, judged stage by stage.

A draw is one trial (a method, a seed, a thread count: the thread count sets the order of
float reductions, so one machine samples the rounding of others). It fails

- at the CAM stage when its CAM labels call more than `OVERCOVER` points more of the train
  pixels foreground than the truth does, or its J is more than `BELOW_MEDIAN` below the median
  J of its method's CAM draws;
- at AffinityNet when its J is more than `REGRESSION` below its CAM J;
- at the final stage when its J is more than `REGRESSION` below its AffinityNet J.

J is the split's (val in the failure table; the train split chooses presets). The share of
failed draws comes with its Clopper-Pearson 95 % interval.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from icam.analysis.trials import STAGES

OVERCOVER = 15.0
BELOW_MEDIAN = 15.0
REGRESSION = 2.0
CONFIDENCE = 0.95


def clopper_pearson(failed: int, draws: int, confidence: float = CONFIDENCE
                    ) -> tuple[float, float]:
    """The exact binomial interval of a share `failed / draws` (Clopper and Pearson, 1934)."""
    if draws < 1 or not 0 <= failed <= draws:
        raise ValueError(f"failed={failed}, draws={draws}: need 0 <= failed <= draws, draws >= 1")
    alpha = 1 - confidence
    low = 0.0 if failed == 0 else stats.beta.ppf(alpha / 2, failed, draws - failed + 1)
    high = 1.0 if failed == draws else stats.beta.ppf(1 - alpha / 2, failed + 1, draws - failed)
    return float(low), float(high)


def draws(frame: pd.DataFrame, split: str = "val", by: tuple[str, ...] = ("method",)
          ) -> pd.DataFrame:
    """One row per draw: its setting (the columns `by`; the CAM stage's median is taken over
    the draws of one setting), seed, threads, each stage's J and F on `split`, the CAM labels'
    train foreground against the truth's, which stage failed and why, and `failed` (any)."""
    frame = frame.copy()
    if "threads" not in frame:
        frame["threads"] = None
    frame["threads"] = pd.to_numeric(frame["threads"], errors="coerce")
    rows = []
    for trial, group in frame.groupby("trial_id", sort=False):
        first = group.iloc[0]
        row = {"trial_id": trial, **{c: first[c] for c in by}, "seed": int(first["seed"]),
               "threads": first["threads"]}
        for stage in STAGES:
            hit = group[(group["stage"] == stage) & (group["split"] == split)]
            row[f"{stage}_J"] = float(hit["J"].iloc[0]) if len(hit) else math.nan
            row[f"{stage}_F"] = float(hit["F"].iloc[0]) if len(hit) else math.nan
        train = group[(group["stage"] == "cam") & (group["split"] == "train")]
        for column in ("fg", "fg_truth"):
            value = train[column].iloc[0] if len(train) and column in train else math.nan
            row[f"cam_{column}"] = pd.to_numeric(value, errors="coerce")
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    median = table.groupby(list(by), dropna=False)["cam_J"].transform("median")
    overcover = table["cam_fg"] - table["cam_fg_truth"] > OVERCOVER
    low = table["cam_J"] < median - BELOW_MEDIAN
    table["cam_failed"] = overcover | low
    table["cam_why"] = ["over-covers" if o else "below median" if lo else ""
                        for o, lo in zip(overcover, low, strict=True)]
    for stage, before in (("affinity", "cam"), ("final", "affinity")):
        measured = table[f"{stage}_J"].notna() & table[f"{before}_J"].notna()
        table[f"{stage}_failed"] = measured & (
            table[f"{stage}_J"] < table[f"{before}_J"] - REGRESSION)
        table[f"{stage}_why"] = ["below " + before if f else "" for f in table[f"{stage}_failed"]]
    table["failed"] = table[[f"{stage}_failed" for stage in STAGES]].any(axis=1)
    return table


def failure_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and stage: draws measured, failed, the share with its 95 % interval, and J
    and F as mean ± sample std."""
    rows = []
    for method, group in table.groupby("method", sort=False):
        for stage in STAGES:
            measured = group[group[f"{stage}_J"].notna()]
            if measured.empty:
                continue
            n, failed = len(measured), int(measured[f"{stage}_failed"].sum())
            low, high = clopper_pearson(failed, n)
            rows.append({"method": method, "stage": stage, "draws": n, "failed": failed,
                         "share": 100 * failed / n, "low": 100 * low, "high": 100 * high,
                         "J": _mean_std(measured[f"{stage}_J"]),
                         "F": _mean_std(measured[f"{stage}_F"])})
    return pd.DataFrame(rows)


def _mean_std(values: pd.Series) -> str:
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def failure_markdown(summary: pd.DataFrame, split: str) -> str:
    """The failure table in Markdown."""
    lines = [f"| method | stage | draws | failed | share (95 % CI) | J ({split}) | F ({split}) |",
             "|---|---|---:|---:|---|---:|---:|"]
    for r in summary.itertuples():
        lines.append(f"| {r.method} | {r.stage} | {r.draws} | {r.failed} | {r.share:.0f} % "
                     f"[{r.low:.0f}, {r.high:.0f}] | {r.J} | {r.F} |")
    return "\n".join(lines) + "\n"


def failed_draws_markdown(table: pd.DataFrame) -> str:
    """One line per failed draw: where and why."""
    lines = []
    for r in table.itertuples():
        reasons = [f"{stage} ({getattr(r, f'{stage}_why')})" for stage in STAGES
                   if getattr(r, f"{stage}_failed")]
        if reasons:
            threads = "" if pd.isna(r.threads) else f", {int(r.threads)} thread(s)"
            lines.append(f"- `{r.trial_id}` ({r.method}, seed {r.seed}{threads}): "
                         + ", ".join(reasons))
    return "\n".join(lines or ["No draw failed."]) + "\n"


def strip_figure(table: pd.DataFrame, split: str):
    """J and F of every draw per method and stage; failed draws as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if table[f"{s}_J"].notna().any()]
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * len(stages), 3.6), sharey=True)
    for ax, metric in zip(axes, ("J", "F"), strict=True):
        for k, stage in enumerate(stages):
            for m, method in enumerate(methods):
                rows = table[(table["method"] == method) & table[f"{stage}_{metric}"].notna()]
                x = k * (len(methods) + 1) + m
                jitter = [((i * 7) % 11 - 5) * 0.04 for i in range(len(rows))]
                failed = rows[f"{stage}_failed"].to_numpy()
                xs = [x + j for j in jitter]
                ax.scatter([v for v, f in zip(xs, failed, strict=True) if not f],
                           rows[f"{stage}_{metric}"][~failed], s=14, color=f"C{m}",
                           label=method if k == 0 else None)
                ax.scatter([v for v, f in zip(xs, failed, strict=True) if f],
                           rows[f"{stage}_{metric}"][failed], s=30, marker="x", color=f"C{m}")
        ticks = [k * (len(methods) + 1) + (len(methods) - 1) / 2 for k in range(len(stages))]
        ax.set_xticks(ticks, stages)
        ax.set_title(f"{metric} ({split}); x = failed draw")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("percent")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


DEFINITION = (f"A draw fails at the CAM stage when its CAM labels call more than {OVERCOVER:g} "
              "points more of the train pixels foreground than the truth does, or its J is "
              f"more than {BELOW_MEDIAN:g} below the median of its method's (its setting's) "
              "draws; at "
              f"AffinityNet when J < CAM J − {REGRESSION:g}; at the final stage when J < "
              f"AffinityNet J − {REGRESSION:g}.")


def varies_threads(frame: pd.DataFrame) -> bool:
    """Whether the trials sample more than one thread count (a robustness study)."""
    if "threads" not in frame:
        return False
    return pd.to_numeric(frame["threads"], errors="coerce").dropna().nunique() > 1


def draws_study(study: str, frame: pd.DataFrame) -> bool:
    """Whether a study's trials are draws to count failures of: the robustness study, or any
    study over more than one thread count."""
    return study == "robustness" or varies_threads(frame)


def robustness_markdown(table: pd.DataFrame, split: str = "val") -> str:
    """The failure table of `draws(frame, split)`, the definition and the failed draws."""
    return "\n".join([failure_markdown(failure_table(table), split), DEFINITION + " Shares "
                      "with their Clopper-Pearson 95 % interval; J and F mean ± sample std.",
                      "", failed_draws_markdown(table)])


def write_robustness(frame: pd.DataFrame, out_dir: str, split: str = "val") -> list[str]:
    """robustness.md, robustness_draws.csv and the strip plot (robustness.png/.pdf)."""
    import os

    from icam.analysis.output import save_figure, write_text

    table = draws(frame, split)
    os.makedirs(out_dir, exist_ok=True)
    written = [write_text(os.path.join(out_dir, "robustness.md"),
                          robustness_markdown(table, split)),
               write_text(os.path.join(out_dir, "robustness_draws.csv"),
                          table.to_csv(index=False, float_format="%.2f", lineterminator="\n"))]
    return written + save_figure(strip_figure(table, split), out_dir, "robustness")
