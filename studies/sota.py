"""Table 5: the four ICAM rows trained here, beside other methods' released predictions.

Rows: early ICAM, ICAM, ICAM Res38 et and ICAM R2N et; "et" is PMM's extended training of
the final stage (final.extended: pretended under-fitting, one cyclic pseudo-mask round), and
R2N a Res2Net-101 final stage (`--res2net-weights` gives its ImageNet .pth on the paper
preset). On the cpu preset EfficientNet-Lite0 stands in for ResNet-38 and Res2Net-101 alike.

Other methods enter as folders of PNG label maps (`<id>.png`) for the validation images:
`--external PMM=/path/to/pmm_val --external MCTformer=/path/to/mct_val`. Each is evaluated
against the data root's ground truth and added to trials.csv as a final-stage val row.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from icam.study import Study, Variant, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--external", action="append", default=[], metavar="NAME=DIR",
                        help="another method's val predictions (PNG label maps)")
    parser.add_argument("--res2net-weights", metavar="PTH",
                        help="ImageNet weights of Res2Net-101 for the R2N row on the paper "
                        "preset (res2net101_v1b_26w_4s-0812c246.pth)")


def variants(args: argparse.Namespace) -> dict[str, Variant]:
    """Table 5's ICAM rows; the R2N row's final backbone depends on the preset."""
    if args.res2net_weights and not Path(args.res2net_weights).is_file():
        raise FileNotFoundError(f"--res2net-weights {args.res2net_weights}: no such file")
    if args.preset == "paper":
        r2n = {"backbone": "res2net101", "weights": args.res2net_weights, "extended": True}
        note = "" if args.res2net_weights else ("no --res2net-weights: Res2Net-101 starts "
                                                "from random weights")
    else:
        r2n = {"backbone": "lite0-r2n", "extended": True}
        note = ("cpu preset: EfficientNet-Lite0 stands in for Res2Net-101 (backbone "
                "'lite0-r2n', the same network as 'lite0')")
    return {"icam-early": Variant("icam-early"), "icam": Variant("icam"),
            "icam-res38-et": Variant("icam", {"final": {"extended": True}}),
            "icam-r2n-et": Variant("icam", {"final": r2n}, note)}


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
    from icam.evaluate import evaluate_folders
    from icam.harness import resolve_data_root

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
    grid={"variant": ["icam-early", "icam", "icam-res38-et", "icam-r2n-et"]},
    extra_arguments=add_arguments,
    variants=variants,
    compare="paper",
)

if __name__ == "__main__":
    sys.exit(run(STUDY, after=evaluate_external))
