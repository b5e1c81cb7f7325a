"""The committed synthetic-benchmark results regenerate identically from the committed trials."""

import importlib
from pathlib import Path

import pytest

make_all = importlib.import_module("analysis.make_all")

ROOT = Path(__file__).resolve().parents[1]
TRIALS = ROOT / "analysis" / "results" / "synthetic"
TABLES = ROOT / "docs" / "synthetic_results"


def committed_tables() -> list[Path]:
    return sorted(p for p in TABLES.glob("*") if p.suffix in (".md", ".csv", ".tex"))


def test_there_are_committed_trials_and_tables():
    assert sorted(TRIALS.glob("*/trials.csv")), "no committed trials under analysis/results"
    assert committed_tables(), "no committed tables under docs/synthetic_results"


@pytest.mark.parametrize("name", [p.name for p in committed_tables()])
def test_committed_table_regenerates_identically(name, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "synthetic_results"
    if not out.exists():
        assert make_all.main(["--results", str(TRIALS), "--out", str(out)]) == 0
    assert (out / name).read_text() == (TABLES / name).read_text()
