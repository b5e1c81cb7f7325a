"""The committed results regenerate identically from the committed trials: the studies on the
embedded benchmark (`analysis/results/synthetic` -> `docs/synthetic_results`) and the
robustness draws at the frozen preset, there and on the second dataset
(`analysis/results/robustness/{guard,second_guard}` -> `docs/robustness_results{,_second}`)."""

import importlib
from pathlib import Path

import pytest

make_all = importlib.import_module("icam.analysis.make_all")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {  # committed trials -> the tables made from them
    "current": (ROOT / "analysis" / "results" / "synthetic", ROOT / "docs" / "synthetic_results"),
    "robustness": (ROOT / "analysis" / "results" / "robustness" / "guard",
                   ROOT / "docs" / "robustness_results"),
    "second": (ROOT / "analysis" / "results" / "robustness" / "second_guard",
               ROOT / "docs" / "robustness_results_second"),
}


def committed_tables(tables: Path) -> list[Path]:
    return sorted(p for p in tables.glob("*") if p.suffix in (".md", ".csv", ".tex"))


@pytest.mark.parametrize("version", RESULTS)
def test_there_are_committed_trials_and_tables(version):
    trials, tables = RESULTS[version]
    assert sorted(trials.glob("**/trials.csv")), f"no committed trials under {trials}"
    assert committed_tables(tables), f"no committed tables under {tables}"


@pytest.mark.parametrize("version, name", [(v, p.name) for v, (_, tables) in RESULTS.items()
                                           for p in committed_tables(tables)])
def test_committed_table_regenerates_identically(version, name, tmp_path_factory):
    trials, tables = RESULTS[version]
    out = tmp_path_factory.getbasetemp() / f"synthetic_results_{version}"
    if not out.exists():
        assert make_all.main(["--results", str(trials), "--out", str(out)]) == 0
    assert (out / name).read_text() == (tables / name).read_text()
