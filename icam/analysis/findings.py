"""Whether the paper's main findings hold on a set of stored trials.

1. ICAM's final F beats SEAM's by at least 5 points, its J not lower by more than 1 (Table 3,
   val); 2. with GMP, importance sampling alone (λ = 1) beats GMP alone (λ = 0) on J; 3. with
   GAP, the FSL raises F at every λ (both Fig. 3, train); 4. the spread of J over seeds shrinks
   from the fewest to the most sampled pixels (Table 2, train); 5. each contribution alone
   raises J&F above SEAM's and both together the most (Table 4, val); 6. μ = 2.5 gives the
   highest J and F of the μ values run (Fig. 4a, train); 7. σ = 5 gives the highest J&F of the
   σ values run (Fig. 4b, train). Each uses the stage the paper shows (final) or, when a study
   stopped earlier, its latest stored stage, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from icam.analysis.stats import select

F_MARGIN = 5.0  # finding 1: ICAM's F at least this much above SEAM's
J_TOLERANCE = 1.0  # finding 1: ICAM's J at most this much below SEAM's


@dataclass(frozen=True)
class Finding:
    claim: str
    where: str  # study, stage and split the measurement used
    measured: str  # means over seeds (and the seed count)
    holds: bool | None  # None: the trials to measure it are not stored


def _study(frame: pd.DataFrame, study: str, split: str):
    """The study's rows at the final stage (or its latest stored one) and `split`."""
    view = select(frame[frame["study"] == study], "final", split)
    return view.frame, f"{study}, {view.stage}, {view.split}"


def _missing(claim: str, study: str, what: str) -> Finding:
    return Finding(claim, study, f"not stored: {what}", None)


def _means(rows: pd.DataFrame, key: str, metric: str) -> pd.Series:
    return rows.groupby(key)[metric].mean()


def _stds(rows: pd.DataFrame, key: str, metric: str) -> pd.Series:
    """' ± sample std' per value of `key` ('' where a value has one seed)."""
    std = rows.groupby(key)[metric].std(ddof=1)
    return std.map(lambda s: "" if pd.isna(s) else f" ± {s:.1f}")


def _paired(rows: pd.DataFrame, group: str, key: str, better, worse, metric: str,
            label) -> tuple[list[str], list[bool]]:
    """Per value of `group`: mean `metric` at `key` = `better` against `key` = `worse`
    (groups lacking either are left out); the texts and whether `better` wins."""
    parts, holds = [], []
    for value, rows_of in rows.groupby(group, sort=True):
        m = _means(rows_of, key, metric)
        if {better, worse} <= set(m.index):
            parts.append(f"{label(value)}: {metric} {m[better]:.1f} vs {m[worse]:.1f} "
                         f"({m[better] - m[worse]:+.1f})")
            holds.append(bool(m[better] > m[worse]))
    return parts, holds


def icam_beats_seam_on_contours(frame: pd.DataFrame) -> Finding:
    claim = (f"ICAM's final F exceeds SEAM's by ≥ {F_MARGIN:g}, J not lower by more than "
             f"{J_TOLERANCE:g}")
    rows, where = _study(frame, "baseline", "val")
    methods = set(rows["method"])
    if not {"icam", "seam"} <= methods:
        return _missing(claim, "baseline", "trials of both icam and seam")
    j, f = _means(rows, "method", "J"), _means(rows, "method", "F")
    dj, df = j["icam"] - j["seam"], f["icam"] - f["seam"]
    seeds = rows.groupby("method")["seed"].nunique().min()
    measured = (f"F {f['icam']:.1f} vs {f['seam']:.1f} ({df:+.1f}); J {j['icam']:.1f} vs "
                f"{j['seam']:.1f} ({dj:+.1f}); {seeds} seeds")
    return Finding(claim, where, measured, bool(df >= F_MARGIN and dj >= -J_TOLERANCE))


def sampling_beats_max_pooling(frame: pd.DataFrame) -> Finding:
    claim = "with GMP, λ = 1 (importance sampling) beats λ = 0 on J"
    rows, where = _study(frame, "ablate_lambda", "train")
    rows = rows[rows["pooling"] == "max"]
    parts, holds = _paired(rows, "fsl", "lambda", 1.0, 0.0, "J",
                           lambda fsl: f"FSL {'on' if fsl else 'off'}")
    if not holds:
        return _missing(claim, "ablate_lambda", "GMP trials at λ = 0 and 1")
    return Finding(claim, where + ", GMP", "; ".join(parts), all(holds))


def fsl_raises_contour_f(frame: pd.DataFrame) -> Finding:
    claim = "with GAP, FSL on beats FSL off on F at every λ"
    rows, where = _study(frame, "ablate_lambda", "train")
    rows = rows[rows["pooling"] == "avg"]
    parts, holds = _paired(rows, "lambda", "fsl", True, False, "F", lambda lam: f"λ {lam:g}")
    if not holds:
        return _missing(claim, "ablate_lambda", "GAP trials with FSL on and off at one λ")
    return Finding(claim, where + ", GAP", "; ".join(parts), all(holds))


def spread_shrinks_with_samples(frame: pd.DataFrame) -> Finding:
    claim = "the spread of J over seeds shrinks from the fewest to the most samples"
    rows, where = _study(frame, "ablate_num_samples", "train")
    std = rows.groupby("num_samples")["J"].std(ddof=1).dropna()
    if len(std) < 2:
        return _missing(claim, "ablate_num_samples", "two sample counts with 2+ seeds each")
    parts = [f"{int(n)}: std {s:.2f}" for n, s in std.items()]
    return Finding(claim, where, "; ".join(parts), bool(std.iloc[-1] < std.iloc[0]))


def contributions_raise_jf(frame: pd.DataFrame) -> Finding:
    claim = "each contribution alone raises J&F above SEAM's, both together the most"
    rows, where = _study(frame, "contributions", "val")
    jf = _means(rows, "method", "JF")
    methods = ["seam+is", "seam+fsl", "icam"]
    if not {"seam", *methods} <= set(jf.index):
        return _missing(claim, "contributions", "trials of seam, seam+is, seam+fsl and icam")
    parts = [f"{m}: J&F {jf[m]:.1f} vs {jf['seam']:.1f} ({jf[m] - jf['seam']:+.1f})"
             for m in methods]
    above = all(jf[m] > jf["seam"] for m in methods)
    return Finding(claim, where, "; ".join(parts), bool(above and jf.idxmax() == "icam"))


def _sweep(frame: pd.DataFrame, study: str, key: str, value: float):
    """A sweep study's train rows (None unless `value` and another value of `key` are stored)."""
    rows, where = _study(frame, study, "train")
    stored = set(rows[key])
    return (rows if value in stored and len(stored) > 1 else None), where


def mu_peaks_at_2_5(frame: pd.DataFrame) -> Finding:
    claim = "μ = 2.5 gives the highest J and the highest F of the μ values run"
    rows, where = _sweep(frame, "ablate_mu", "mu", 2.5)
    if rows is None:
        return _missing(claim, "ablate_mu", "μ = 2.5 and another μ")
    j, f = _means(rows, "mu", "J"), _means(rows, "mu", "F")
    sj, sf = _stds(rows, "mu", "J"), _stds(rows, "mu", "F")
    parts = [f"μ {mu:g}: J {j[mu]:.1f}{sj[mu]} F {f[mu]:.1f}{sf[mu]}" for mu in j.index]
    return Finding(claim, where, "; ".join(parts), bool(j.idxmax() == f.idxmax() == 2.5))


def sigma_peaks_at_5(frame: pd.DataFrame) -> Finding:
    claim = "σ = 5 gives the highest J&F of the σ values run"
    rows, where = _sweep(frame, "ablate_sigma", "sigma", 5.0)
    if rows is None:
        return _missing(claim, "ablate_sigma", "σ = 5 and another σ")
    jf, std = _means(rows, "sigma", "JF"), _stds(rows, "sigma", "JF")
    parts = [f"σ {sigma:g}: J&F {value:.2f}{std[sigma]}" for sigma, value in jf.items()]
    return Finding(claim, where, "; ".join(parts), bool(jf.idxmax() == 5.0))


CHECKS = (icam_beats_seam_on_contours, sampling_beats_max_pooling, fsl_raises_contour_f,
          spread_shrinks_with_samples, contributions_raise_jf, mu_peaks_at_2_5,
          sigma_peaks_at_5)


def findings(frame: pd.DataFrame) -> list[Finding]:
    """The findings measured on `frame` (the rows of `analysis.trials.read_trials`)."""
    return [check(frame) for check in CHECKS]


def findings_markdown(items: list[Finding]) -> str:
    lines = ["| Finding | Study, stage, split | Measured (means over seeds) | Holds |",
             "|---|---|---|---|"]
    for item in items:
        holds = {True: "yes", False: "no", None: "not measured"}[item.holds]
        lines.append(f"| {item.claim} | {item.where} | {item.measured} | {holds} |")
    return "\n".join(lines) + "\n"
