"""Table 5: early ICAM and ICAM trained here, beside other methods' released predictions.

Other methods enter as folders of PNG label maps (`<id>.png`) for the validation images:
`--external PMM=/path/to/pmm_val --external MCTformer=/path/to/mct_val`. Each is evaluated
against the data root's ground truth and added to trials.csv as a final-stage val row.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from icam.study import Study, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                        help="another method's val predictions (PNG label maps)")


def parse_external(items: list[str]) -> dict[str, Path]:
    folders = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--external {item!r} is invalid: expected NAME=DIR")
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--external {name}: folder {folder} does not exist")
        folders[name] = Path(folder)
    return folders


def evaluate_external(args, df: pd.DataFrame, study_dir) -> list[Path]:
    """Evaluate the external folders and append their rows to trials.csv (atomically;
    `study_dir` is the study's `icam.storage.Storage`)."""
    from icam.data.voc import VOCLayout
    from icam.harness import resolve_data_root
    from icam.metrics import evaluate_folders

    folders = parse_external(args.external)
    if not folders:
        return []
    layout = VOCLayout(resolve_data_root(args.data_root))
    gt_dir = Path(layout.mask_path(layout.ids("val")[0])).parent
    rows = []
    for name, folder in folders.items():
        result = evaluate_folders(folder, gt_dir, ids=layout.ids("val"), progress=True)
        rows.append({"study": "sota", "trial_id": f"external-{name}", "stage": "final",
                     "split": "val", "J": result["J"], "F": result["F"], "JF": result["JF"],
                     "method": name})
    table = pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
    (study_dir / "trials.csv").write_bytes(table.to_csv(index=False).encode())
    return []


STUDY = Study(
    name="sota",
    description=__doc__,
    grid={"method": ["icam-early", "icam"]},
    extra_arguments=add_arguments,
)

if __name__ == "__main__":
    sys.exit(run(STUDY, after=evaluate_external))
