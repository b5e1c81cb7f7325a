"""Paired verdicts over seeds, trials shared between studies, and the paper's findings, each
worked out by hand (t and F quantiles from printed tables, not from the code under test)."""

from __future__ import annotations

import math

import pytest

from icam.analysis import read_trials
from icam.analysis.findings import (
    contributions_raise_jf,
    findings,
    findings_markdown,
    mu_peaks_at_2_5,
    sigma_peaks_at_5,
)
from icam.analysis.make_all import make_all, study_key
from icam.analysis.paired import combine, mean_difference, variance_ratio, verdict
from icam.analysis.shared import with_shared
from tests.test_analysis import row, write_csv

T_975_2 = 4.303  # Student's t, 0.975 quantile, 2 degrees of freedom (printed tables)
T_975_4 = 2.776  # 4 degrees of freedom
F_975_1_1 = 647.79  # F(0.975; 1, 1)


def test_t_interval_of_paired_differences():
    # d = 1, 2, 3: mean 2, sample std 1, half width t(0.975, 2) / sqrt(3)
    found = mean_difference([1.0, 2.0, 3.0])
    half = T_975_2 / math.sqrt(3)
    assert found.estimate == pytest.approx(2.0)
    assert (found.lo, found.hi) == (pytest.approx(2 - half, abs=1e-3),
                                    pytest.approx(2 + half, abs=1e-3))
    # five seeds: d = 2, 4, 6, 8, 10 -> mean 6, std sqrt(10), half 2.776 * sqrt(2)
    five = mean_difference([2, 4, 6, 8, 10])
    assert five.hi - five.estimate == pytest.approx(T_975_4 * math.sqrt(2), abs=1e-3)
    assert math.isnan(mean_difference([5.0]).lo)


def test_verdicts_read_the_interval_against_the_threshold():
    assert verdict(mean_difference([1, 2, 3]), 0) == "inconclusive"  # lo = -0.48
    assert verdict(mean_difference([4, 5, 6]), 0) == "holds"  # [2.52, 7.48]
    assert verdict(mean_difference([4, 5, 6]), 8) == "contradicted"
    assert verdict(mean_difference([-6, -5, -4]), 0) == "contradicted"
    assert verdict(mean_difference([3, 3]), 2) == "holds"  # no spread: the point itself
    assert verdict(mean_difference([9.0]), 0) == "inconclusive"  # one seed
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["holds", "inconclusive"]) == "inconclusive"
    assert combine(["holds", "contradicted", "inconclusive"]) == "contradicted"
    assert combine([]) == "not measured"


def test_variance_ratio_f_interval():
    # variances 2 (0, 2) and 0.5 (0, 1): ratio 4, 1 and 1 degrees of freedom
    found = variance_ratio([0.0, 2.0], [0.0, 1.0])
    assert found.estimate == pytest.approx(4.0)
    assert found.lo == pytest.approx(4 / F_975_1_1, rel=1e-3)
    assert found.hi == pytest.approx(4 * F_975_1_1, rel=1e-3)


def _frame(tmp_path, lines):
    path = write_csv(tmp_path / f"s{len(list(tmp_path.iterdir()))}" / "trials.csv", lines)
    return read_trials(path).frame


def test_a_sweep_borrows_the_presets_trials_at_its_own_stages(tmp_path):
    lines = [row("baseline", f"i{s}", s, stage, "train", 60 + s, 40, 50)
             for s in (0, 1) for stage in ("cam", "final")]
    lines += [row("baseline", f"s{s}", s, "cam", "train", 50, 30, 40, method="seam")
              for s in (0, 1)]
    lines += [row("ablate_mu", f"m{s}", s, "cam", "train", 55, 41, 48, mu=1.0) for s in (0, 1)]
    lines += [row("ablate_mu", "own", 1, "cam", "train", 99, 99, 99)]  # μ 2.5, seed 1: its own
    frame, notes = with_shared(_frame(tmp_path, lines), study_key)
    mu = frame[frame["study"] == "ablate_mu"]
    at_preset = mu[mu["mu"] == 2.5].sort_values("seed")
    # seed 0 borrowed from the baseline's ICAM cam row (J 60); seed 1 kept its own (99);
    # neither the final-stage rows (the sweep stored cam only) nor SEAM's come along
    assert at_preset["J"].tolist() == [60.0, 99.0]
    assert set(mu["stage"]) == {"cam"} and set(mu["method"]) == {"icam"}
    assert notes == ["ablate_mu: icam trials (seeds 0) shared from baseline"]
    # nothing to lend: a study outside BORROWS, or nothing stored
    assert len(with_shared(_frame(tmp_path, lines[:4]), study_key)[0]) == 4


def test_findings_as_worked_out_by_hand(tmp_path):
    lines = [
        # baseline, final val: F diffs 8, 9, 10 -> [6.52, 11.48] > 5; J diffs 0 -> holds
        *[row("baseline", f"i{s}", s, "final", "val", 60, 30 + s, 0) for s in range(3)],
        *[row("baseline", f"s{s}", s, "final", "val", 60, 22 - s, 0, method="seam")
          for s in range(3)],
        row("baseline", "i0", 0, "cam", "val", 1, 99, 0),  # another stage
        # GMP, cam train: FSL on, J diffs (λ 1 - λ 0) -1, -2, -3 -> [-4.48, 0.48]: inconclusive
        *[row("ablate_lambda", f"n1{s}", s, "cam", "train", 35, 0, 0, lam=1.0, pooling="max")
          for s in range(3)],
        *[row("ablate_lambda", f"n0{s}", s, "cam", "train", 36 + s, 0, 0, lam=0.0,
              pooling="max") for s in range(3)],
        # num_samples: J 10, 14 at 1 sample (var 8), 11, 12 at 100 (var 0.5): ratio 16
        row("ablate_num_samples", "c0", 0, "cam", "train", 10, 0, 0, samples=1),
        row("ablate_num_samples", "c1", 1, "cam", "train", 14, 0, 0, samples=1),
        row("ablate_num_samples", "d0", 0, "cam", "train", 11, 0, 0, samples=100),
        row("ablate_num_samples", "d1", 1, "cam", "train", 12, 0, 0, samples=100),
    ]
    one, two, three, four, *rest = findings(_frame(tmp_path, lines))
    assert one.verdict == "holds" and one.where == "baseline, final, val"
    assert one.measured.startswith("F (> +5): 31.0 vs 21.0, +10.0 [")
    assert two.verdict == "inconclusive" and two.where == "ablate_lambda, cam, train, GMP"
    half = T_975_2 / math.sqrt(3)  # differences -1, -2, -3: std 1
    assert two.measured == (f"FSL on, J: 35.0 vs 37.0, -2.0 [{-2 - half:+.1f}, "
                            f"{-2 + half:+.1f}] (n=3), failed 0/3 vs 0/3")
    assert three.verdict == "not measured"
    # ratio 16 with F(0.975; 1, 1) = 647.79: [0.02, 10364] contains 1
    assert four.verdict == "inconclusive" and "variance ratio 16.00 [0.02, " in four.measured
    assert [f.verdict for f in rest] == ["not measured"] * 3
    text = findings_markdown([one, two, three, four])
    assert text.count("| holds |") == 1 and text.count("| inconclusive |") == 2


def test_each_comparison_counts_the_draws_that_failed(tmp_path):
    # baseline, val, seeds 0-2. ICAM's CAM J 80, 81, 60: seed 2 lies 20 below the median 80
    # (> 15): failed at the CAM stage. SEAM's AffinityNet loses 3 on seed 1 (> 2): failed.
    # Every other later stage gains 5.
    cams = {"icam": (80, 81, 60), "seam": (50, 50, 50)}
    drops = {("seam", 1): -3}
    lines = []
    for method, js in cams.items():
        for s, j in enumerate(js):
            trial = f"{method}{s}"
            aff = j + drops.get((method, s), 5)
            for stage, value in (("cam", j), ("affinity", aff), ("final", aff + 5)):
                lines.append(row("baseline", trial, s, stage, "val", value, 30, 0,
                                 method=method))
    # a μ sweep whose settings lie 40 apart: each median is its own setting's, so none fails
    lines += [row("ablate_mu", f"m{mu}{s}", s, "cam", "train", j + s, 20, 30 + s, mu=mu)
              for mu, j in ((1.0, 40), (2.5, 80)) for s in range(3)]
    lines += [row("ablate_mu", f"m{mu}{s}", s, "cam", "val", j + s, 20, 30 + s, mu=mu)
              for mu, j in ((1.0, 40), (2.5, 80)) for s in range(3)]
    frame = _frame(tmp_path, lines)
    found = findings(frame)
    assert found[0].measured.endswith("failed 1/3 vs 1/3")
    assert "failed 1/3 vs 1/3" in found[0].measured.split("; ")[0]
    assert found[5].measured.count("failed 0/3 vs 0/3") == 2
    # a check called alone judges its own study's draws
    assert mu_peaks_at_2_5(frame).measured.count("failed 0/3 vs 0/3") == 2


def test_table4_and_fig4_verdicts(tmp_path):
    # Table 4, cam val, seeds 0-2: J&F seam 50; seam+is 52, 53, 54; seam+fsl 51, 52, 53;
    # icam 60, 61, 62: every difference's interval lies above 0
    def table4(icam):
        return [row("contributions", f"{m}{s}", s, "cam", "val", 0, 0, base + s, method=m)
                for m, base in (("seam", 50), ("seam+is", 52), ("seam+fsl", 51), ("icam", icam))
                for s in range(3)] + [row("contributions", "x", 0, "cam", "train", 0, 0, 0,
                                          method="icam")]
    found = contributions_raise_jf(_frame(tmp_path, table4(60)))
    assert found.verdict == "holds" and found.where == "contributions, cam, val"
    assert found.measured.split("; ")[0].startswith("seam+is − seam, J&F: 53.0 vs 51.0, +2.0")
    # ICAM below SEAM + IS by 1 at every seed: contradicted
    assert contributions_raise_jf(_frame(tmp_path, table4(51))).verdict == "contradicted"
    assert contributions_raise_jf(_frame(tmp_path, table4(60)[:3])).verdict == "not measured"

    # Fig. 4a, cam train: μ 2.5 against μ 1, J diffs 2, 3, 4 -> [0.52, 5.48]; F diffs 1, 1, 1
    # (no spread: the point +1 itself lies above 0)
    mu = [row("ablate_mu", f"a{s}", s, "cam", "train", 60 + s, 40, 0) for s in range(3)]
    mu += [row("ablate_mu", f"b{s}", s, "cam", "train", 58, 39, 0, mu=1.0)
           for s in range(3)]
    assert mu_peaks_at_2_5(_frame(tmp_path, mu)).verdict == "holds"
    assert mu_peaks_at_2_5(_frame(tmp_path, mu[:3])).verdict == "not measured"
    # Fig. 4b: σ 5 J&F 48, 51 against σ 2's 50, 50: diffs -2, 1 -> inconclusive
    sigma = [row("ablate_sigma", "x0", 0, "cam", "train", 0, 0, 50, sigma=2.0),
             row("ablate_sigma", "x1", 1, "cam", "train", 0, 0, 50, sigma=2.0),
             row("ablate_sigma", "y0", 0, "cam", "train", 0, 0, 48, sigma=5.0),
             row("ablate_sigma", "y1", 1, "cam", "train", 0, 0, 51, sigma=5.0)]
    found = sigma_peaks_at_5(_frame(tmp_path, sigma))
    assert found.verdict == "inconclusive"
    assert found.measured.startswith("σ 5 − 2, J&F: 49.5 vs 50.0, -0.5 [")


def test_make_all_pairs_a_sweep_against_the_baseline(tmp_path):
    # the μ sweep ran μ 1 only; the baseline's ICAM rows give μ 2.5 at the same seeds
    store = tmp_path / "store"
    write_csv(store / "baseline" / "trials.csv",
              [row("baseline", f"i{s}", s, "cam", "train", 60 + s, 40 + s, 50) for s in range(3)])
    write_csv(store / "ablate_mu" / "trials.csv",
              [row("ablate_mu", f"m{s}", s, "cam", "train", 50, 30, 40, mu=1.0)
               for s in range(3)])
    summary = make_all(str(store), str(tmp_path / "out"))
    assert "ablate_mu: icam trials (seeds 0, 1, 2) shared from baseline" in summary.notes
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "| μ = 2.5 gives a higher J and F than every other μ run | ablate_mu, cam, train | " \
           "μ 2.5 − 1, J: 61.0 vs 50.0, +11.0 [" in text
    assert "| holds |" in text
    stored = (tmp_path / "out" / "trials.csv").read_text()
    assert stored.count("ablate_mu") == 3  # the copy of the stored trials has no loans
