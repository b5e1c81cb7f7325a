"""Whether the paper's main findings hold on stored trials: paired comparisons over seeds.

1. ICAM's final F exceeds SEAM's by at least 5 points, its J not lower by more than 1 (Table 3,
   val); 2. with GMP, importance sampling alone (λ = 1) beats GMP alone (λ = 0) on J; 3. with
   GAP, the FSL raises F at every λ (both Fig. 3, train); 4. the spread of J over seeds shrinks
   from the fewest to the most sampled pixels (Table 2, train); 5. each contribution alone
   raises J&F above SEAM's, and both together above either alone (Table 4, val); 6. μ = 2.5
   gives a higher J and F than every other μ run (Fig. 4a, train); 7. σ = 5 gives a higher J&F
   than every other σ run (Fig. 4b, train).

Each comparison pairs two settings by seed and reads the t interval of the mean difference
(`icam.analysis.paired`): the verdict is "holds", "contradicted" or "inconclusive"; a finding
of several comparisons holds only when all of them hold. Beside each interval stand the draws
of each setting that failed (`icam.analysis.robustness`, judged on val over every stored
stage): a mean over seeds with a failed draw is partly a count of failures. Each uses the
stage the paper shows (final) or, when a study stopped earlier, its latest stored stage, and
says so. Give the frame with `icam.analysis.shared.with_shared` applied, so a sweep pairs
against the preset's trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from icam.analysis.paired import (
    NOT_MEASURED,
    Interval,
    combine,
    mean_difference,
    variance_ratio,
    verdict,
)
from icam.analysis.robustness import BELOW_MEDIAN, OVERCOVER, REGRESSION, draws
from icam.analysis.stats import select
from icam.analysis.trials import SETTINGS

F_MARGIN = 5.0  # finding 1: ICAM's F at least this much above SEAM's
J_TOLERANCE = 1.0  # finding 1: ICAM's J at most this much below SEAM's
METRIC_LABELS = {"J": "J", "F": "F", "JF": "J&F"}
FAILED = (f"a draw fails when its CAM labels over-cover the train foreground by more than "
          f"{OVERCOVER:g} points, its CAM J (val) lies more than {BELOW_MEDIAN:g} below its "
          f"setting's median, or a later stage's J lies more than {REGRESSION:g} below the "
          "stage before")


@dataclass(frozen=True)
class Finding:
    claim: str
    where: str  # study, stage and split the measurement used
    measured: str  # per comparison: the means, the mean difference and its 95 % interval
    verdict: str  # holds | contradicted | inconclusive | not measured


@dataclass(frozen=True)
class Comparison:
    label: str
    a: float  # mean of the first setting over the paired seeds
    b: float
    difference: Interval
    verdict: str
    failed_a: int | None  # draws of the first setting, among the paired seeds, that failed
    failed_b: int | None  # (None: rows without `mark_failed`'s column)

    def text(self) -> str:
        n, text = self.difference.n, f"{self.label}: {self.a:.1f} vs {self.b:.1f}, "
        if self.failed_a is None:
            return text + self.difference.text()
        return text + f"{self.difference.text()}, failed {self.failed_a}/{n} vs {self.failed_b}/{n}"


def _study(frame: pd.DataFrame, study: str, split: str):
    """The study's rows at the final stage (or its latest stored one) and `split`, each with
    whether its draw failed."""
    rows = frame[frame["study"] == study]
    view = select(rows if "failed" in rows else mark_failed(rows), "final", split)
    return view.frame, f"{study}, {view.stage}, {view.split}"


def _missing(claim: str, study: str, what: str) -> Finding:
    return Finding(claim, study, f"not stored: {what}", NOT_MEASURED)


def compare(rows: pd.DataFrame, key: str, a, b, metric: str, threshold: float = 0.0,
            label: str = "") -> Comparison | None:
    """`metric` at `key` = a minus at `key` = b, paired by seed (seeds stored for both);
    the verdict of "a exceeds b by more than `threshold`". None when no seed has both."""
    of_a, of_b = rows[rows[key] == a].groupby("seed"), rows[rows[key] == b].groupby("seed")
    by_a, by_b = of_a[metric].mean(), of_b[metric].mean()
    seeds = by_a.index.intersection(by_b.index)
    if seeds.empty:
        return None
    interval = mean_difference(by_a[seeds] - by_b[seeds])
    failed_a, failed_b = (int(of["failed"].any()[seeds].sum()) if "failed" in rows else None
                          for of in (of_a, of_b))
    return Comparison(label or METRIC_LABELS[metric], float(by_a[seeds].mean()),
                      float(by_b[seeds].mean()), interval, verdict(interval, threshold),
                      failed_a, failed_b)


def _finding(claim: str, where: str, comparisons: list[Comparison]) -> Finding:
    return Finding(claim, where, "; ".join(c.text() for c in comparisons),
                   combine([c.verdict for c in comparisons]))


def icam_beats_seam_on_contours(frame: pd.DataFrame) -> Finding:
    claim = (f"ICAM's final F exceeds SEAM's by ≥ {F_MARGIN:g}, J not lower by more than "
             f"{J_TOLERANCE:g}")
    rows, where = _study(frame, "baseline", "val")
    f = compare(rows, "method", "icam", "seam", "F", F_MARGIN, f"F (> +{F_MARGIN:g})")
    j = compare(rows, "method", "icam", "seam", "J", -J_TOLERANCE, f"J (> -{J_TOLERANCE:g})")
    if f is None:
        return _missing(claim, "baseline", "trials of icam and seam with a common seed")
    return _finding(claim, where, [f, j])


def _per_group(rows: pd.DataFrame, group: str, key: str, a, b, metric: str,
               label) -> list[Comparison]:
    """One comparison per value of `group` that has both settings."""
    found = []
    for value, rows_of in rows.groupby(group, sort=True):
        item = compare(rows_of, key, a, b, metric, label=f"{label(value)}, {metric}")
        if item is not None:
            found.append(item)
    return found


def sampling_beats_max_pooling(frame: pd.DataFrame) -> Finding:
    claim = "with GMP, λ = 1 (importance sampling) beats λ = 0 on J"
    rows, where = _study(frame, "ablate_lambda", "train")
    found = _per_group(rows[rows["pooling"] == "max"], "fsl", "lambda", 1.0, 0.0, "J",
                       lambda fsl: f"FSL {'on' if fsl else 'off'}")
    if not found:
        return _missing(claim, "ablate_lambda", "GMP trials at λ = 0 and 1")
    return _finding(claim, where + ", GMP", found)


def fsl_raises_contour_f(frame: pd.DataFrame) -> Finding:
    """Fig. 3's GAP curves; without them, Table 4's SEAM + IS against ICAM (GAP, λ = 0.8)."""
    claim = "with GAP, FSL on beats FSL off on F at every λ"
    rows, where = _study(frame, "ablate_lambda", "train")
    found = _per_group(rows[rows["pooling"] == "avg"], "lambda", "fsl", True, False, "F",
                       lambda lam: f"λ {lam:g}")
    if found:
        return _finding(claim, where + ", GAP", found)
    rows, where = _study(frame, "contributions", "train")
    item = compare(rows, "method", "icam", "seam+is", "F", label="λ 0.8 (μ 2.5), F")
    if item is None:
        return _missing(claim, "ablate_lambda", "GAP trials with FSL on and off at one λ")
    return _finding(claim, where + ", ICAM against SEAM + IS", [item])


def spread_shrinks_with_samples(frame: pd.DataFrame) -> Finding:
    claim = "the spread of J over seeds shrinks from the fewest to the most samples"
    rows, where = _study(frame, "ablate_num_samples", "train")
    counts = rows.groupby("num_samples")["J"].count()
    counts = sorted(counts[counts >= 2].index)
    if len(counts) < 2:
        return _missing(claim, "ablate_num_samples", "two sample counts with 2+ seeds each")
    fewest, most = (rows[rows["num_samples"] == n]["J"] for n in (counts[0], counts[-1]))
    ratio = variance_ratio(fewest, most)
    failed = (rows[rows["num_samples"] == n].groupby("seed")["failed"].any()
              for n in (counts[0], counts[-1]))
    measured = (f"std {counts[0]:g}: {fewest.std(ddof=1):.2f}, {counts[-1]:g}: "
                f"{most.std(ddof=1):.2f}; variance ratio {ratio.estimate:.2f} "
                f"[{ratio.lo:.2f}, {ratio.hi:.2f}] (F interval, > 1 holds); failed "
                + " vs ".join(f"{int(f.sum())}/{len(f)}" for f in failed))
    return Finding(claim, where, measured, verdict(ratio, 1.0))


def contributions_raise_jf(frame: pd.DataFrame) -> Finding:
    claim = "each contribution alone raises J&F above SEAM's, both together above either"
    rows, where = _study(frame, "contributions", "val")
    pairs = [("seam+is", "seam"), ("seam+fsl", "seam"), ("icam", "seam+is"),
             ("icam", "seam+fsl")]
    found = [compare(rows, "method", a, b, "JF", label=f"{a} − {b}, J&F") for a, b in pairs]
    if any(item is None for item in found):
        return _missing(claim, "contributions",
                        "trials of seam, seam+is, seam+fsl and icam with common seeds")
    return _finding(claim, where, found)


def _sweep(frame: pd.DataFrame, study: str, key: str, best: float, metrics: tuple[str, ...],
           claim: str, symbol: str) -> Finding:
    """`best` against every other value of `key` the study stored, on each metric."""
    rows, where = _study(frame, study, "train")
    others = sorted(v for v in set(rows[key].dropna()) if v != best)
    found = [compare(rows, key, best, other, metric,
                     label=f"{symbol} {best:g} − {other:g}, {METRIC_LABELS[metric]}")
             for other in others for metric in metrics]
    found = [item for item in found if item is not None]
    if not found:
        return _missing(claim, study, f"{symbol} = {best:g} and another {symbol}")
    return _finding(claim, where, found)


def mu_peaks_at_2_5(frame: pd.DataFrame) -> Finding:
    return _sweep(frame, "ablate_mu", "mu", 2.5, ("J", "F"),
                  "μ = 2.5 gives a higher J and F than every other μ run", "μ")


def sigma_peaks_at_5(frame: pd.DataFrame) -> Finding:
    return _sweep(frame, "ablate_sigma", "sigma", 5.0, ("JF",),
                  "σ = 5 gives a higher J&F than every other σ run", "σ")


CHECKS = (icam_beats_seam_on_contours, sampling_beats_max_pooling, fsl_raises_contour_f,
          spread_shrinks_with_samples, contributions_raise_jf, mu_peaks_at_2_5,
          sigma_peaks_at_5)


def mark_failed(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a column `failed`: whether the row's draw failed at any stored stage
    (`icam.analysis.robustness.draws` per study, the CAM median over each setting's draws)."""
    if frame.empty:
        return frame.assign(failed=pd.Series(dtype=bool))
    by = tuple(c for c in SETTINGS if c in frame.columns)
    failed = {}
    for study, rows in frame.groupby("study", sort=False):
        table = draws(rows, "val", by)
        failed.update({(study, t): f for t, f in zip(table["trial_id"], table["failed"],
                                                        strict=True)})
    keys = zip(frame["study"], frame["trial_id"], strict=True)
    return frame.assign(failed=[failed.get(key, False) for key in keys])


def findings(frame: pd.DataFrame) -> list[Finding]:
    """The findings measured on `frame` (the rows of `analysis.trials.read_trials`)."""
    frame = mark_failed(frame)
    return [check(frame) for check in CHECKS]


def findings_markdown(items: list[Finding]) -> str:
    lines = ["Each comparison: the two settings' means over the seeds both ran, then the mean "
             "of the per-seed differences with its 95 % t interval and the seed count, then "
             f"how many of each setting's draws failed ({FAILED}). A "
             "claim holds when every interval lies on the paper's side of its threshold "
             "(0 unless given), is contradicted when one lies on the other side, and is "
             "inconclusive otherwise.", "",
             "| Finding | Study, stage, split | Measured | Verdict |", "|---|---|---|---|"]
    for item in items:
        lines.append(f"| {item.claim} | {item.where} | {item.measured} | {item.verdict} |")
    return "\n".join(lines) + "\n"
