"""The common command line of the study scripts in `studies/`.

A study is declarative: a base method, a grid over method settings, and the seeds. This module
expands it into trial configurations, prints the dry-run table, runs it through
`icam.harness.run_study`, and writes the study's tables and figures with `icam.analysis`.

    python studies/ablate_mu.py                     # embedded default: reduced grid, 1 seed
    python studies/ablate_mu.py --dry-run --seeds 5 # the paper's grid: 45 trials
    python studies/ablate_mu.py --preset paper --data-root VOCdevkit --gpus-per-trial 0.5
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from icam.config import STAGES, TrainConfig, method_config, pipeline_config, train_config

_BOOLEAN = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}


@dataclass(frozen=True)
class Variant:
    """A row of a study that differs in more than method settings: a method preset and
    training overrides per stage (Table 5's rows with extended training or another final
    backbone); `note` is printed with the trials (e.g. what stands in for what)."""

    method: str
    train: dict[str, dict] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Study:
    """A grid of method settings over a base method preset.

    grid: {field: values}; the field "method" picks method presets (baseline comparisons),
    the field "variant" picks rows of `variants`, the field "threads" sets every stage's torch
    threads (`TrainConfig.threads`: the machine's rounding as an axis).
    quick: the reduced grid of the embedded default (no arguments).
    variants: the parsed command line -> {name: Variant} (the preset may decide a row's
    backbone); the variant's training overrides win over --set and --weights.
    compare: "paper" sets the study's tables beside the published numbers.
    """

    name: str
    description: str
    grid: dict[str, Sequence]
    base: str = "icam"
    fixed: dict = field(default_factory=dict)
    quick: dict[str, Sequence] | None = None
    stages: tuple[str, ...] = STAGES
    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    variants: Callable[[argparse.Namespace], dict[str, Variant]] | None = None
    compare: str | None = None  # "paper": its tables beside the published numbers


def parse_value(key: str, text: str):
    """A grid value from the command line: booleans for fsl, numbers where they parse."""
    lowered = text.strip().lower()
    if key in ("fsl", "learn_fsl"):
        if lowered not in _BOOLEAN:
            raise ValueError(f"grid value {key}={text!r} is invalid: allowed true | false")
        return _BOOLEAN[lowered]
    if key in ("method", "variant", "pooling", "formulation", "rv_pooling"):
        return text.strip()
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"grid value {key}={text!r} is invalid: not a number") from None
    if key in ("num_samples", "threads"):
        if not number.is_integer() or number < 1:
            raise ValueError(f"grid value {key}={text!r} is invalid: an integer >= 1")
        return int(number)
    return number


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """`--grid mu=0,1,2 --grid fsl=on,off` -> {"mu": [0.0, 1.0, 2.0], "fsl": [True, False]}."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ValueError(f"--grid {item!r} is invalid: expected KEY=V1,V2,...")
        grid[key] = [parse_value(key, v) for v in values.split(",")]
    return grid


def parse_settings(items: Sequence[str]) -> dict[str, dict]:
    """`--set cam.epochs=4 --set cam.resize_long=96,144` -> {"cam": {"epochs": 4, ...}}."""
    settings: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        if not sep or not dot or stage not in STAGES or not name or not text.strip():
            raise ValueError(f"--set {item!r} is invalid: expected STAGE.FIELD=VALUE with "
                             f"STAGE in {', '.join(STAGES)}")
        values = []
        for part in text.split(","):
            part = part.strip()
            try:
                values.append(int(part))
            except ValueError:
                try:
                    values.append(float(part))
                except ValueError:
                    values.append({"true": True, "false": False, "none": None}.get(
                        part.lower(), part))
        settings.setdefault(stage, {})[name] = tuple(values) if len(values) > 1 else values[0]
    return settings


def parse_seeds(text: str) -> list[int]:
    """`5` -> seeds 0..4; `3,7,9` -> those seeds; `1,` -> seed 1 alone."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.rstrip(",").split(",")]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise ValueError(f"--seeds {text!r} is invalid: a count (5) or a list (0,3,7; one "
                         "seed: 7,)") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} is invalid: distinct seeds >= 0, at least one")
    return seeds


def parse_custom_resources(items: Sequence[str]) -> dict[str, dict[str, float]]:
    """`--resource cam:cam_node=1 --resource final:big_gpu=0.5` ->
    {"cam": {"cam_node": 1.0}, "final": {"big_gpu": 0.5}}."""
    custom: dict[str, dict[str, float]] = {}
    for item in items:
        stage, colon, rest = item.partition(":")
        name, sep, amount = rest.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not colon or stage.strip() not in STAGES or not name.strip() or not sep or value <= 0:
            raise ValueError(f"--resource {item!r} is invalid: expected STAGE:NAME=AMOUNT with "
                             f"STAGE in {', '.join(STAGES)} and AMOUNT > 0")
        custom.setdefault(stage.strip(), {})[name.strip()] = value
    return custom


def parse_gpu(text: str) -> float | str:
    """`--gpus-per-trial`: "auto", or the GPUs of a trial as Ray grants them: 0, a fraction of
    one GPU in (0, 1], or a whole number of GPUs."""
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and (value <= 1 or value.is_integer())):
        raise ValueError(f"--gpus-per-trial {text!r} is invalid: allowed 'auto', 0, a fraction "
                         "in (0, 1] or a whole number")
    return value


def expand(study: Study, grid: dict[str, Sequence], seeds: Sequence[int], preset: str,
           train_overrides: dict | None = None,
           variants: dict[str, Variant] | None = None) -> list:
    """Every combination of the grid (in order) x seeds, as validated PipelineConfigs."""
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        variant = _variant(point.pop("variant", None), variants)
        base = point.pop("method", variant.method if variant else study.base)
        threads = {"threads": point.pop("threads")} if "threads" in point else {}
        settings = {**study.fixed, **point}
        method_config(base, **settings)  # validates before any seed is expanded
        overrides = {s: {**(train_overrides or {}).get(s, {}), **threads,
                         **(variant.train.get(s, {}) if variant else {})} for s in STAGES}
        for seed in seeds:
            config = pipeline_config(preset, base, seed=seed, **settings)
            if any(overrides.values()):
                config = replace(config, **{s: replace(getattr(config, s), **overrides[s])
                                            for s in STAGES})
            trials.append(config)
    return trials


def _variant(name: str | None, variants: dict[str, Variant] | None) -> Variant | None:
    if name is None:
        return None
    if not variants or name not in variants:
        allowed = " | ".join(variants or {}) or "none in this study"
        raise ValueError(f"grid value variant={name!r} is invalid: allowed {allowed}")
    return variants[name]


QUICK_TRAIN = {
    "cam": {"epochs": 10},
    "affinity": {},
    "final": {"iterations": 100, "steps_per_report": 50},
}
"""The embedded default's shorter training (cpu preset), so a study ends in minutes: half the
CAM stage's 20 epochs and a third of the final stage's iterations. At 10 CAM epochs the CAMs
localise (ICAM train J 74.1, 64.6, 72.3 on seeds 0-2; 81.2, 79.6, 84.2 at 20) but ICAM's loss
still falls about 10 % an epoch at the end; on 120 of the 300 training images (150 CAM
updates) the CAMs of `studies/ablate_mu.py` stayed at the all-background score (train J 11.9
and 12.8). AffinityNet keeps its whole schedule."""


def build_parser(study: Study) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python studies/{study.name}.py", description=study.description,
        epilog="With no arguments: the embedded default (synthetic data, cpu preset, a "
               "reduced grid, one seed, shorter training).")
    parser.add_argument("--data-root", help="VOC2012 (or VOCdevkit) folder; default: the "
                        "synthetic benchmark, generated once into a cache folder")
    parser.add_argument("--storage", default="results",
                        help="local folder or URI (s3://, gs://) for the study (default: "
                        "./results)")
    parser.add_argument("--seeds", default="5", help="a count (default 5, as the paper) or a "
                        "comma-separated list of seeds (one seed: '7,')")
    parser.add_argument("--preset", default="cpu", choices=("cpu", "paper"),
                        help="training settings: cpu (tiny backbone, small crops) or paper "
                        "(ResNet-38, Table 1)")
    parser.add_argument("--gpus-per-trial", default="auto",
                        help="GPU share of each trial: a fraction (0.25: four trials per GPU), "
                        "a whole number of GPUs, or auto (measure one step's memory, keep 15%% "
                        "headroom)")
    parser.add_argument("--cpus-per-trial", default=1, type=int)
    parser.add_argument("--workdir", help="each node's cache of stored label folders, deletable "
                        "between runs (default: ~/.cache/icam/storage, or $ICAM_CACHE/storage)")
    parser.add_argument("--resource", action="append", default=[], metavar="STAGE:NAME=AMOUNT",
                        help="a Ray custom resource the trials of STAGE ask for, pinning them to "
                        "the nodes that have it, e.g. --resource final:big_gpu=1")
    parser.add_argument("--address", help="a running Ray cluster (e.g. 'auto' on its head "
                        "node); default: start Ray locally")
    parser.add_argument("--stages", default=STAGES[-1], choices=STAGES,
                        help="run the stages up to and including this one")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="replace one axis of the paper's grid, e.g. --grid mu=1,2.5")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                        help="override a training setting, e.g. --set cam.epochs=4 "
                        "--set final.iterations=2000")
    parser.add_argument("--weights", help="backbone weights for every stage: ImageNet "
                        ".params/.pth/.npz for the paper preset (the cpu preset has "
                        "lite0-imagenet)")
    parser.add_argument("--quick", action="store_true",
                        help="the embedded default's reduced grid and shorter training")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the trials and their resources; run nothing")
    parser.add_argument("--out", help="where tables and figures go (default: "
                        "<storage>/<study>/analysis)")
    parser.add_argument("--verbose", action="store_true", help="also show Ray Tune's "
                        "reporter and Ray's logs (always in the run's log)")
    if study.extra_arguments:
        study.extra_arguments(parser)
    return parser


def resolve(study: Study, args: argparse.Namespace):
    """(grid, seeds, trials, resources) from the parsed command line; raises ValueError."""
    grid = {k: list(v) for k, v in (study.quick if args.quick and study.quick
                                   else study.grid).items()}
    grid.update(parse_grid(args.grid))
    seeds = parse_seeds(args.seeds)
    overrides = {s: dict(QUICK_TRAIN[s]) for s in STAGES} if args.quick else {}
    if args.weights:
        for stage in STAGES:
            overrides.setdefault(stage, {})["weights"] = args.weights
    for stage, values in parse_settings(args.set).items():
        overrides.setdefault(stage, {}).update(values)
    defaults = TrainConfig()
    for values in overrides.values():
        for name, value in values.items():
            if isinstance(getattr(defaults, name, None), tuple) and not isinstance(value, tuple):
                values[name] = (value,)
    known = {f.name for f in fields(TrainConfig)}
    for stage in STAGES:
        unknown = sorted(set(overrides.get(stage, {})) - known)
        if unknown:
            raise ValueError(f"--set {stage}.{unknown[0]}: unknown setting; allowed "
                             f"{', '.join(sorted(known))}")
        train_config(args.preset, stage, **overrides.get(stage, {}))
    variants = study.variants(args) if study.variants else None
    trials = expand(study, grid, seeds, args.preset, overrides, variants)
    if args.cpus_per_trial < 1:
        raise ValueError(f"--cpus-per-trial {args.cpus_per_trial} is invalid: an integer >= 1")
    resources = {"cpu": args.cpus_per_trial, "gpu": parse_gpu(args.gpus_per_trial)}
    custom = parse_custom_resources(args.resource)
    if custom:
        resources = {stage: {**resources, "custom": custom.get(stage, {})} for stage in STAGES}
    return grid, seeds, trials, resources


def print_dry_run(study: Study, trials: list, resources: dict, stages: tuple[str, ...]) -> None:
    from icam.console import say
    from icam.stages.files import trial_key

    columns = ["trial_id", "seed", "method", "lambda", "pooling", "num_samples", "fsl", "mu",
               "sigma"]
    if study.variants:  # the final stage's network and training set the rows apart
        columns[3:3] = ["backbone", "training"]
    if any(t.final.threads is not None for t in trials):
        columns.append("threads")
    rows = []
    for t in trials:
        cols = {**t.method.columns(), **t.final.columns()}
        rows.append([trial_key(t), str(t.seed)] + [str(cols[c]) or "-" for c in columns[2:]])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    shared = resources.get(STAGES[0], resources)
    custom = {s: resources[s]["custom"] for s in stages if resources.get(s, {}).get("custom")}
    say(f"study {study.name}: stages {', '.join(stages)}; each trial requests "
        f"{{'cpu': {shared['cpu']}, 'gpu': {shared['gpu']!r}}} per stage"
        + "".join(f"; {s} also {c}" for s, c in custom.items()))
    say("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        say("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    say(f"{len(trials)} trials")


def run(study: Study, argv: Sequence[str] | None = None,
        after: Callable[[argparse.Namespace, object, object], list] | None = None) -> int:
    """The command line of one study script. `after(args, df, study_dir)` (the study's
    `icam.storage.Storage`) may add rows or outputs (the state-of-the-art study evaluates
    external predictions there)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(study)
    args = parser.parse_args(argv)
    if not argv:
        args.quick, args.seeds = True, "1"
        print(f"{study.name}: no arguments, running the embedded default (synthetic data, "
              "cpu preset, reduced grid, one seed); --help lists the options")
    from icam.cli import log_path, run_guarded

    log = log_path(args.storage, study.name)
    return run_guarded(lambda: _run(study, args, after, log), storage=args.storage,
                       name=study.name, verbose=args.verbose, log=log)


def _run(study: Study, args: argparse.Namespace, after, log) -> int:
    """Validate the command line (before Ray starts), then print the dry run or execute."""
    from icam.console import say

    grid, _, trials, resources = resolve(study, args)
    if study.variants:
        variants = study.variants(args)
        for name in grid.get("variant", []):
            if variants[name].note:
                say(f"note: {name}: {variants[name].note}")
    stages = STAGES[:STAGES.index(args.stages) + 1]
    if study.stages != STAGES:
        stages = tuple(s for s in stages if s in study.stages)
    if args.dry_run:
        print_dry_run(study, trials, resources, stages)
        return 0
    return _execute(study, args, trials, resources, stages, after, log)


def _execute(study, args, trials, resources, stages, after, log) -> int:
    from icam.console import say
    from icam.harness import StudySpec, resolve_data_root, run_study, start_ray, study_paths

    data_root = resolve_data_root(args.data_root)
    paths = study_paths(args.storage, study.name, args.workdir)
    say(f"{study.name}: {len(trials)} trial(s), stages {', '.join(stages)}; data {data_root}; "
        f"results in {paths.root}")
    if args.address:
        start_ray(args.address)
    df = run_study(StudySpec(study.name, tuple(trials), stages), storage=args.storage,
                   resources=resources, data_root=data_root, workdir=args.workdir)
    outputs = list(after(args, df, paths.root)) if after else []
    outputs += write_outputs(study.name, paths.root, Path(args.out) if args.out else None,
                             study.compare)
    finish_report(study.name, paths, data_root, log, outputs)
    return 0


def write_outputs(name: str, root, out: Path | None, compare: str | None = None) -> list[str]:
    """The study's tables and figures from `<root>/trials.csv` into `out` (beside the
    published numbers with `compare`); by default into `<root>/analysis`, uploaded there when
    the storage is an object store."""
    import tempfile

    from icam.analysis.make_all import write_study_outputs

    csv = str(root / "trials.csv")
    if out is not None or root.local is not None:
        return write_study_outputs(csv, name, str(out or root.local / "analysis"), compare)
    with tempfile.TemporaryDirectory() as folder:
        written = write_study_outputs(csv, name, folder, compare)
        target = root / "analysis"
        for path in map(Path, written):
            relative = path.relative_to(folder).as_posix()
            target.write_bytes(path.read_bytes(), relative)
        return [str(target / Path(p).relative_to(folder).as_posix()) for p in written]


def finish_report(name: str, paths, data_root: str, log, outputs: list) -> None:
    """The study's report (`icam.report`; on a local storage) and the last lines: the J/F
    table, then the paths of the tables and figures, the log, the qualitative figure and the
    report."""
    from icam.console import say
    from icam.report import write_report

    report = None
    if paths.local is not None:
        report = write_report(name, paths.local, data_root, str(paths.tune))
        say("")
        say(report.table.strip())
        say("")
    say(f"trials: {paths.trials_csv}")
    for path in outputs:
        say(f"wrote: {path}")
    say(f"log: {log}")
    if report is None:
        say(f"report: none for an object storage; the tables are in {paths.root / 'analysis'}")
        return
    if report.figure is not None:
        say(f"qualitative: {report.figure}")
    say(f"report: {paths.local / 'report.md'}")
