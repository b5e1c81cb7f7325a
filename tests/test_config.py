"""Every bad configuration value is rejected, naming the field and its allowed range."""

import json

import pytest

from icam.config import (
    CPU_DEPARTURES,
    MethodConfig,
    PipelineConfig,
    TrainConfig,
    method_config,
    pipeline_config,
    train_config,
)


@pytest.mark.parametrize("field,value,words", [
    ("lam", -0.1, "lambda"), ("lam", 1.5, "lambda"), ("lam", "0.5", "lambda"),
    ("pooling", "mean", "pooling"), ("rv_pooling", "min", "rv_pooling"),
    ("num_samples", 0, "num_samples"), ("num_samples", 2.5, "num_samples"),
    ("num_samples", True, "num_samples"), ("fsl", 1, "fsl"),
    ("mu", float("nan"), "mu"), ("mu", float("inf"), "mu"),
    ("sigma", 0.0, "sigma"), ("sigma", -1.0, "sigma"), ("sigma", float("inf"), "sigma"),
    ("formulation", "cam", "formulation"), ("name", "", "name"), ("learn_fsl", "yes", "learn"),
])
def test_bad_method_values_are_rejected(field, value, words):
    with pytest.raises(ValueError, match=words) as err:
        MethodConfig(**{field: value})
    assert "allowed" in str(err.value)


def test_seam_formulation_rejects_icam_parts():
    with pytest.raises(ValueError, match="formulation"):
        method_config("seam", fsl=True)


@pytest.mark.parametrize("field,value", [
    ("backbone", "vgg"), ("crop", 0), ("batch_size", -1), ("epochs", 0), ("lr", 0.0),
    ("momentum", 1.0), ("weight_decay", -1e-4), ("resize_long", (500, 400)),
    ("scale", (0.0, 1.0)), ("iterations", 0), ("infer_scales", ()), ("num_workers", -1),
    ("max_train_images", 0), ("poly_power", -1.0), ("output_stride", 4), ("frozen_bn", 1),
    ("siamese_scale", 0.0), ("siamese_scale", 1.5), ("bf16", "yes"), ("bf16", 1), ("bf16", None),
])
def test_bad_train_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_presets_are_the_papers_defaults():
    icam = method_config("icam")
    assert (icam.lam, icam.pooling, icam.num_samples, icam.fsl, icam.mu, icam.sigma) == (
        0.8, "avg", 100, True, 2.5, 5.0)
    early = method_config("icam-early")
    assert (early.lam, early.num_samples, early.learn_fsl) == (1.0, 1, True)
    assert method_config("seam").formulation == "seam"
    assert not method_config("seam+is").fsl and method_config("seam+fsl").lam == 0.0
    cam = train_config("paper", "cam")
    assert (cam.crop, cam.batch_size, cam.epochs, cam.lr, cam.resize_long) == (
        448, 8, 8, 0.01, (448, 768))


# (optimizer, lr, momentum, weight decay, poly power, frozen batch norm) of each stage as the
# authors' code ran it (reference-facts.md, "As run"): SGD's momentum 5e-4 in the CAM and
# AffinityNet stages (PolyOptimizer passes the weight decay as SGD's momentum), AffinityNet at
# lr 0.01, the final stage with a real momentum and batch statistics.
AS_RUN = {"cam": ("sgd", 0.01, 5e-4, 5e-4, 0.9, True),
          "affinity": ("sgd", 0.01, 5e-4, 5e-4, 0.9, True),
          "final": ("sgd", 0.001, 0.9, 5e-4, 0.9, False)}


@pytest.mark.parametrize("preset", ["paper", "cpu"])
@pytest.mark.parametrize("stage", ["cam", "affinity", "final"])
def test_both_presets_train_as_the_authors_code_ran(preset, stage):
    """The cpu preset too, except where it declares a departure (CPU_DEPARTURES)."""
    cfg = train_config(preset, stage)
    fields = ("optimizer", "lr", "momentum", "weight_decay", "poly_power", "frozen_bn")
    for field, as_run in zip(fields, AS_RUN[stage], strict=True):
        if preset == "cpu" and (stage, field) in CPU_DEPARTURES:
            assert getattr(cfg, field) != as_run
        else:
            assert getattr(cfg, field) == as_run, field
    paper = train_config("paper", stage)
    assert paper.bn_momentum == 3e-4  # resnet38d.py's bn_mom
    assert (paper.rw_alpha, paper.rw_logt) == (6, 6)  # infer_aff.py's walk
    assert paper.siamese_scale == 0.3  # train_SEAM.py's second view
    # Table 1's written momentum stays reachable as an ordinary setting
    assert train_config(preset, stage, momentum=0.9).momentum == 0.9


def test_the_cpu_preset_differs_from_the_paper_preset_only_in_sizes_and_declared_departures():
    sizes = {"backbone", "weights", "output_stride", "crop", "resize_long", "batch_size",
             "epochs", "iterations", "steps_per_report", "infer_scales"}
    layout = {"channels_last"}  # how tensors lie in memory (CPU speed), not what is computed
    precision = {"bf16"}  # the paper preset's "auto" (where it pays), the cpu preset's fp32
    for stage in ("cam", "affinity", "final"):
        paper, cpu = train_config("paper", stage), train_config("cpu", stage)
        differ = {f for f in paper.__dataclass_fields__ if getattr(paper, f) != getattr(cpu, f)}
        declared = {f for s, f in CPU_DEPARTURES if s == stage}
        allowed = sizes | layout | precision | declared
        assert differ <= allowed, (stage, differ - allowed)
        assert declared <= differ, (stage, declared - differ)  # no stale declaration


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="method"):
        method_config("deeplab")
    with pytest.raises(ValueError, match="unknown method field 'lamda'"):
        method_config("icam", lamda=0.5)
    with pytest.raises(ValueError, match="preset"):
        train_config("gpu", "cam")
    with pytest.raises(ValueError, match="seed"):
        pipeline_config(seed=-1)


def test_lambda_alias_and_trials_columns():
    m = method_config("icam", **{"lambda": 0.4, "mu": 2.0})
    assert m.lam == 0.4
    assert m.columns() == {"method": "icam", "lambda": 0.4, "pooling": "avg",
                           "num_samples": 100, "fsl": True, "mu": 2.0, "sigma": 5.0}


def test_pipeline_config_survives_json():
    cfg = pipeline_config("paper", "seam+fsl", seed=4, mu=1.5)
    assert cfg.cam.bf16 == "auto"
    assert PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_bf16_is_auto_in_the_paper_preset_and_off_in_the_cpu_preset():
    """The cpu preset's Lite0 trains in fp32 on every device, and its trial keys stay those of
    the studies stored before bf16 took "auto"."""
    for stage in ("cam", "affinity", "final"):
        assert train_config("paper", stage).bf16 == "auto"
        assert train_config("cpu", stage).bf16 is False
    assert TrainConfig().bf16 is False and TrainConfig(bf16=True).bf16 is True
