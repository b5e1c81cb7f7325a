"""`python -m icam.pipeline`: bad input ends in exit code 2 with one clear line (the traceback
goes to a log), and the final table."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from icam.pipeline import format_table, main


def _last_line(capsys) -> tuple[str, str]:
    err = capsys.readouterr().err
    return err.strip().splitlines()[-1], err


def test_missing_data_root(tmp_path, capsys):
    code = main(["--data-root", str(tmp_path / "nowhere"), "--storage", str(tmp_path / "r")])
    line, err = _last_line(capsys)
    assert code == 2
    assert line.startswith("error:") and str(tmp_path / "nowhere") in line
    assert "Traceback" not in err
    log = Path(line.split("traceback: ")[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()
    assert log.parent == tmp_path / "r" / "logs"


def test_invalid_hyperparameter_names_the_field(tmp_path, capsys):
    code = main(["--seed", "-1", "--storage", str(tmp_path)])
    line, _ = _last_line(capsys)
    assert code == 2 and "seed=-1" in line
    code = main(["--gpus-per-trial", "lots", "--storage", str(tmp_path)])
    line, _ = _last_line(capsys)
    assert code == 2 and "--gpus-per-trial" in line


def test_unwritable_storage(tmp_path, capsys):
    data = tmp_path / "voc"
    from icam.data.synthetic import generate

    generate(data, num_train=2, num_val=1, size=(32, 32))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["--data-root", str(data), "--storage", str(blocker)])
    line, err = _last_line(capsys)
    assert code == 2 and "storage" in line and str(blocker) in line
    assert "Traceback" not in err


def test_unknown_method_is_rejected_by_the_parser():
    proc = subprocess.run([sys.executable, "-m", "icam.pipeline", "--method", "cam9"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'cam9'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_table_lists_stages_and_splits_of_the_trial():
    df = pd.DataFrame([
        {"trial_id": "t", "stage": "final", "split": "val", "J": 61.234, "F": 40.0,
         "JF": 50.617},
        {"trial_id": "t", "stage": "cam", "split": "train", "J": 50.0, "F": None, "JF": None},
        {"trial_id": "other", "stage": "cam", "split": "val", "J": 1.0, "F": 1.0, "JF": 1.0},
    ])
    lines = format_table(df, "t").splitlines()
    assert lines[0].split() == ["stage", "split", "J", "F", "J&F"]
    assert lines[1].split() == ["cam", "train", "50.0", "n/a", "n/a"]
    assert lines[2].split() == ["final", "val", "61.2", "40.0", "50.6"]
    assert len(lines) == 3


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for option in ("--data-root", "--storage", "--preset", "--method", "--seed",
                   "--gpus-per-trial", "--address"):
        assert option in out
