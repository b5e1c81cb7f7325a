"""Table 5's ICAM rows: the sota study's four variants, their trials.csv columns, and where
they land beside the published numbers."""

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from icam.analysis import paper, tables
from icam.analysis.trials import parse_trials_csv
from icam.config import STAGES, pipeline_config
from icam.harness import collect_trials
from icam.stages.files import trial_key, write_json
from icam.study import build_parser, resolve
from tests.test_studies import load


def _trials(argv):
    study = load("sota")["STUDY"]
    return resolve(study, build_parser(study).parse_args(argv))[2]


def test_dry_run_lists_four_rows_per_seed_and_names_the_stand_in(capsys):
    module = load("sota")
    assert module["run"](module["STUDY"], ["--dry-run", "--seeds", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "20 trials"
    assert any(line.startswith("note: icam-r2n-et") and "EfficientNet-Lite0 stands in for "
               "Res2Net-101" in line for line in out)
    rows = [line.split() for line in out if line.startswith("icam")]
    assert sorted({(r[2], r[3], r[4]) for r in rows}) == [
        ("icam", "lite0", "-"), ("icam", "lite0", "et"), ("icam", "lite0-r2n", "et"),
        ("icam-early", "lite0", "-")]


def test_rows_differ_in_the_final_stage_only(tmp_path):
    weights = tmp_path / "r2n.pth"
    weights.write_bytes(b"")
    trials = _trials(["--seeds", "2", "--preset", "paper", "--res2net-weights", str(weights),
                      "--weights", "res38.params"])
    assert len(trials) == 8 and len({trial_key(t) for t in trials}) == 8
    by_row = {(t.method.name, t.final.backbone, t.final.extended): t for t in trials
              if t.seed == 1}
    icam = pipeline_config("paper", "icam", seed=1)
    assert set(by_row) == {("icam-early", "resnet38", False), ("icam", "resnet38", False),
                           ("icam", "resnet38", True), ("icam", "res2net101", True)}
    for (method, backbone, extended), t in by_row.items():
        assert t.cam.weights == t.affinity.weights == "res38.params"
        assert t.final == replace(icam.final, backbone=backbone, extended=extended,
                                  weights=str(weights) if backbone == "res2net101"
                                  else "res38.params")
        if method == "icam":  # the three ICAM rows share their CAM and AffinityNet stages
            assert t.method == icam.method
            assert t.cam == replace(icam.cam, weights="res38.params")
            assert t.affinity == replace(icam.affinity, weights="res38.params")


def test_a_missing_res2net_file_or_variant_fails_before_ray(tmp_path, capsys):
    module = load("sota")
    code = module["run"](module["STUDY"], ["--dry-run", "--res2net-weights",
                                           str(tmp_path / "none.pth")])
    assert code == 2 and "--res2net-weights" in capsys.readouterr().err
    code = module["run"](module["STUDY"], ["--dry-run", "--grid", "variant=icam-r3n"])
    assert code == 2 and "variant='icam-r3n'" in capsys.readouterr().err


def test_trials_csv_carries_backbone_and_training(tmp_path):
    base = pipeline_config("cpu", "icam", seed=0)
    et = replace(base, final=replace(base.final, backbone="lite0-r2n", extended=True))
    for trial in (base, et):
        write_json(tmp_path / trial_key(trial) / "config.json", trial.to_dict())
        for stage in STAGES:
            write_json(tmp_path / trial_key(trial) / stage / "DONE.json",
                       {f"{stage}/val/J": 50.0, f"{stage}/val/F": 40.0, f"{stage}/val/JF": 45})
    df = collect_trials("sota", tmp_path)
    final = df[(df.stage == "final") & (df.split == "val")].set_index("trial_id")
    assert final.loc[trial_key(et), ["backbone", "training"]].tolist() == ["lite0-r2n", "et"]
    assert final.loc[trial_key(base), ["backbone", "training"]].tolist() == ["lite0", ""]
    cam = df[(df.stage == "cam") & (df.trial_id == trial_key(et))]
    assert set(cam.backbone) == {"lite0"} and set(cam.training) == {""}


def test_table5_places_the_four_rows_beside_the_published_ones():
    rows = []
    for seed in (0, 1):
        for k, (method, backbone, training) in enumerate([
                ("icam-early", "lite0", ""), ("icam", "lite0", ""), ("icam", "lite0", "et"),
                ("icam", "lite0-r2n", "et")]):
            rows.append(dict(study="sota", trial_id=f"t{k}-{seed}", seed=seed, stage="final",
                             split="val", J=50 + k + seed, F=30 + k, JF=40 + k + seed / 2,
                             method=method, backbone=backbone, training=training))
    text = pd.DataFrame(rows).to_csv(index=False)
    frame = parse_trials_csv(text, "trials.csv")
    table = tables.from_trials("table5", frame, paper.summary(paper.load(), "table5"))
    # published J of early ICAM Res38, ICAM Res38, ICAM Res38 et and ICAM R2N et (Table 5)
    expected = [("early ICAM", "Lite0", "63.9 ± 0.6"), ("ICAM", "Lite0", "67.2 ± 0.3"),
                ("ICAM (et)", "Lite0", "69.1 ± 0.5"), ("ICAM (et)", "Lite0 for R2N", "70.1 ± 0.2")]
    assert [(r[0], r[1], r[3]) for r in table.rows] == expected
    assert [r[2] for r in table.rows] == ["50.5 ± 0.7", "51.5 ± 0.7", "52.5 ± 0.7",
                                          "53.5 ± 0.7"]


def test_the_study_summary_keeps_extended_training_apart():
    # the same method and backbone, one trial trained plainly (J 40) and one extended (J 44):
    # two rows of their own, never one row of mean 42 ± 2.8 (n=2)
    rows = [dict(study="sota", trial_id=f"t{k}", seed=0, stage="final", split="val", J=j,
                 F=20.0, JF=(j + 20.0) / 2, method="icam", backbone="lite0", training=training)
            for k, (j, training) in enumerate([(40.0, ""), (44.0, "et")])]
    frame = parse_trials_csv(pd.DataFrame(rows).to_csv(index=False), "trials.csv")
    table = tables.summary_table(frame, "sota")
    assert table.header[:3] == ["Stage", "Split", "Method"]
    assert sorted((r[2], r[3]) for r in table.rows) == [("ICAM", "40.0"), ("ICAM (et)", "44.0")]


def test_the_report_meets_the_r2n_stand_in_with_the_published_r2n_row():
    from icam.report import paper_tables

    # trials.csv as the study writes it: the harness's backbone names, blank training cells
    text = ("study,trial_id,seed,stage,split,J,F,JF,method,backbone,training\n"
            "sota,a,0,final,val,30,20,25,icam,lite0,et\n"
            "sota,b,0,final,val,31,21,26,icam,lite0-r2n,et\n"
            "sota,c,0,final,val,32,22,27,icam,lite0,\n")
    frame = pd.read_csv(io.StringIO(text))
    [table] = paper_tables(frame, "sota")
    # Table 5's published J: ICAM Res38 et 69.1 ± 0.5, ICAM R2N et 70.1 ± 0.2, ICAM 67.2 ± 0.3
    assert "| ICAM (et) | Lite0 for R2N | 31.0 | 70.1 ± 0.2 | -39.1 |" in table
    assert "| ICAM (et) | Lite0 | 30.0 | 69.1 ± 0.5 | -39.1 |" in table
    assert "| ICAM | Lite0 | 32.0 | 67.2 ± 0.3 | -35.2 |" in table


@pytest.mark.parametrize("label,published", [("Lite0 for R2N", "R2N"), ("Res38", "Res38"),
                                             (None, None)])
def test_stand_in_labels(label, published):
    from icam.analysis.methods import published_backbone

    assert published_backbone(label) == published


def test_external_predictions_become_val_rows(tmp_path):
    from argparse import Namespace

    from icam.data.synthetic import generate
    from icam.data.voc import VOCLayout, load_mask, save_mask

    root = generate(tmp_path / "voc", num_train=2, num_val=3, seed=0, size=(32, 48))
    evaluate_external = load("sota")["evaluate_external"]
    df = pd.DataFrame([dict(study="sota", trial_id="t", seed=0, stage="final", split="val",
                            J=1.0, F=2.0, JF=1.5, method="icam")])
    preds = tmp_path / "preds"
    layout = VOCLayout(root)
    for image_id in layout.ids("val"):  # the ground truth, its void band as background
        mask = load_mask(layout.mask_path(image_id))
        save_mask(preds / f"{image_id}.png", np.where(mask == 255, 0, mask))
    args = Namespace(external=[f"GT={preds}"], data_root=str(root))
    evaluate_external(args, df, tmp_path)
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert len(rows) == 2
    external = rows[rows.trial_id == "external-GT"].iloc[0]
    # the ground truth as predictions: perfect regions and contours (void counts as background)
    assert (external.J, external.F, external.JF, external.method) == (100.0, 100.0, 100.0, "GT")
