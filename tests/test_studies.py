"""The study scripts: the paper's grids in dry runs, bad values before Ray, a tiny real run."""

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from icam.data.synthetic import generate
from icam.study import parse_gpu, parse_grid, parse_seeds, parse_settings

ROOT = Path(__file__).resolve().parents[1]

PAPER_GRIDS = {  # trials at --seeds 5: grid points x 5
    "ablate_lambda": 6 * 2 * 2 * 5,
    "ablate_mu": 9 * 5,
    "ablate_sigma": 6 * 5,
    "ablate_num_samples": 7 * 5,
    "baseline": 2 * 5,
    "contributions": 4 * 5,
    "sota": 4 * 5,  # early ICAM, ICAM, ICAM Res38 et, ICAM R2N et
}


def load(name: str) -> dict:
    return runpy.run_path(str(ROOT / "studies" / f"{name}.py"), run_name="study_under_test")


def test_every_study_has_a_script():
    scripts = {p.stem for p in (ROOT / "studies").glob("*.py")}
    assert scripts == set(PAPER_GRIDS) | {"search", "robustness"}


def test_the_robustness_study_crosses_methods_seeds_and_threads(capsys):
    module = load("robustness")
    assert module["run"](module["STUDY"], ["--dry-run", "--seeds", "10"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("40 trials")
    rows = [line.split() for line in out.splitlines() if line.startswith(("icam-", "seam-"))]
    assert sorted({(r[2], r[-1]) for r in rows}) == [
        ("icam", "1"), ("icam", "2"), ("seam", "1"), ("seam", "2")]


@pytest.mark.parametrize("name,count", sorted(PAPER_GRIDS.items()))
def test_dry_run_shows_the_papers_grid(name, count, capsys):
    module = load(name)
    assert module["run"](module["STUDY"], ["--dry-run", "--seeds", "5"]) == 0
    lines = [line for line in capsys.readouterr().out.strip().splitlines()
             if not line.startswith("note: ")]
    assert lines[-1] == f"{count} trials"
    assert len(lines) == count + 3  # header line, column names, one row per trial, count
    assert "'gpu': 'auto'" in lines[0]


def test_dry_run_of_ablate_mu_lists_each_mu_for_each_seed(capsys):
    module = load("ablate_mu")
    module["run"](module["STUDY"], ["--dry-run", "--seeds", "5", "--gpus-per-trial", "0.25"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out[2:-1]]
    mus = sorted({float(r[-2]) for r in rows})
    assert mus == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]
    assert sorted({int(r[1]) for r in rows}) == [0, 1, 2, 3, 4]
    assert {r[-1] for r in rows} == {"5.0"}  # sigma fixed
    assert "'gpu': 0.25" in out[0]


def test_search_dry_run_counts_its_proposals(capsys):
    module = load("search")
    assert module["main"](["--dry-run", "--num-trials", "12"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "12 trials"


def test_grid_override_from_the_command_line(capsys):
    module = load("ablate_lambda")
    module["run"](module["STUDY"], ["--dry-run", "--seeds", "2", "--grid", "lambda=0,1",
                                    "--grid", "fsl=on"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{2 * 2 * 1 * 2} trials"


@pytest.mark.parametrize("argv,words", [
    (["--grid", "mu=1,abc"], "mu='abc'"),
    (["--grid", "sigma=0"], "sigma=0.0"),
    (["--grid", "lambda=1.5"], "lambda=1.5"),
    (["--seeds", "0"], "--seeds"),
    (["--set", "cam.crop=0"], "crop=0"),
    (["--set", "cam.cropp=3"], "cam.cropp"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial '-1'"),
    (["--gpus-per-trial", "3.7"], "--gpus-per-trial '3.7'"),
])
def test_invalid_values_fail_before_ray_starts(argv, words, capsys, tmp_path):
    import ray

    module = load("ablate_mu")
    assert module["run"](module["STUDY"], [*argv, "--storage", str(tmp_path)]) == 2
    assert words in capsys.readouterr().err
    assert not ray.is_initialized()


@pytest.mark.parametrize("text,value", [("auto", "auto"), ("0", 0.0), ("0.25", 0.25),
                                        ("1", 1.0), ("2", 2.0), ("8.0", 8.0)])
def test_gpus_per_trial_takes_auto_zero_a_fraction_or_whole_gpus(text, value):
    assert parse_gpu(text) == value


@pytest.mark.parametrize("text", ["3.7", "1.5", "-1", "-0.5", "abc", "", "nan", "inf", "Auto"])
def test_gpus_per_trial_refuses_anything_else_naming_the_value(text):
    with pytest.raises(ValueError, match=re.escape(f"--gpus-per-trial {text!r} is invalid: "
                                                   "allowed 'auto', 0, a fraction in (0, 1] or "
                                                   "a whole number")):
        parse_gpu(text)


def test_a_bad_gpus_per_trial_is_one_line_before_the_trial_table(tmp_path):
    result = subprocess.run([sys.executable, "studies/ablate_mu.py", "--gpus-per-trial", "3.7",
                             "--dry-run", "--storage", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --gpus-per-trial '3.7' is invalid: "
                                                   "allowed 'auto', 0, a fraction in (0, 1]")


def test_parsers():
    assert parse_grid(["mu=0,2.5", "fsl=off,on", "num_samples=1,10"]) == {
        "mu": [0.0, 2.5], "fsl": [False, True], "num_samples": [1, 10]}
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4,9") == [4, 9]
    assert parse_seeds("7,") == [7]
    assert parse_settings(["cam.resize_long=96,144", "final.iterations=7"]) == {
        "cam": {"resize_long": (96, 144)}, "final": {"iterations": 7}}


TINY = ["--set", "cam.crop=64", "--set", "cam.resize_long=64,96", "--set", "cam.epochs=1",
        "--set", "cam.infer_scales=1.0", "--set", "cam.batch_size=4"]


@pytest.fixture
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_tiny_study_runs_and_a_rerun_trains_nothing(tmp_path, capsys, local_ray):
    data = generate(tmp_path / "data", num_train=8, num_val=4, seed=0, size=(64, 80))
    storage = tmp_path / "results"
    argv = ["--data-root", str(data), "--storage", str(storage), "--seeds", "1",
            "--grid", "mu=1,2.5", "--stages", "cam", "--gpus-per-trial", "0", *TINY]
    module = load("ablate_mu")
    assert module["run"](module["STUDY"], argv) == 0
    out = capsys.readouterr().out
    csv = storage / "ablate_mu" / "trials.csv"
    assert f"trials: {csv}" in out and "wrote: " in out
    # the console: a start and an end line per trial (with J and F), the report's paths last;
    # Ray Tune's reporter only in the run's log
    keys = [p.name for p in (storage / "ablate_mu" / "artefacts").iterdir()]
    lines = out.splitlines()
    for key in keys:
        assert f"cam      {key}  started" in lines
        assert any(re.fullmatch(rf"cam      {key}  done in 0:\d\d  val J \d+\.\d F \d+\.\d "
                                r"\(train J \d+\.\d F \d+\.\d\)", line) for line in lines)
    assert lines[-1] == f"report: {storage / 'ablate_mu' / 'report.md'}"
    assert lines[-2] == f"qualitative: {storage / 'ablate_mu' / 'qualitative.png'}"
    log = Path(lines[-3].removeprefix("log: "))
    assert "Trial status" in log.read_text() and "Trial status" not in out
    df = pd.read_csv(csv)
    assert len(df) == 2 * 2  # two mu values x (train, val), CAM stage only
    assert set(df["stage"]) == {"cam"} and sorted(set(df["mu"])) == [1.0, 2.5]
    assert df[["J", "F", "JF"]].notna().all().all()
    done = sorted((storage / "ablate_mu" / "artefacts").glob("*/cam/DONE.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    assert len(done) == 2

    assert module["run"](module["STUDY"], argv) == 0
    assert [p.stat().st_mtime_ns for p in done] == stamps
    again = pd.read_csv(csv)
    pd.testing.assert_frame_equal(again, df)
