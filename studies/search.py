"""Beyond the paper: Optuna search over λ, μ, σ and the number of samples, maximising J&F.

Each Tune trial runs its stages in order and reports once per stage (the stage's J&F on the
`--split`, train by default as in the paper's ablations); ASHA stops trials whose CAM-stage J&F
is poor before their AffinityNet and final stages, and Optuna proposes the next settings from
the finished ones. Every trial lands in the study's trials.csv like any other study's.
"""

import argparse
import sys
from pathlib import Path

from icam.config import STAGES
from icam.study import QUICK_TRAIN, Study, build_parser, parse_gpu

SPACE = {"lam": (0.0, 1.0), "mu": (0.0, 4.0), "sigma": (1.0, 9.0),
         "num_samples": [1, 2, 5, 10, 20, 50, 100]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-trials", type=int, default=40,
                        help="settings Optuna proposes (default 40)")
    parser.add_argument("--split", default="train", choices=("train", "val"),
                        help="the split whose J&F is maximised (default train)")


STUDY = Study(name="search", description=__doc__, grid={}, extra_arguments=add_arguments)


def search_space():
    from ray import tune

    return {"lam": tune.uniform(*SPACE["lam"]), "mu": tune.uniform(*SPACE["mu"]),
            "sigma": tune.uniform(*SPACE["sigma"]),
            "num_samples": tune.choice(SPACE["num_samples"])}


def trial_function(config: dict) -> None:
    """One proposed setting through the stages, reporting each stage's J&F."""
    from dataclasses import replace

    from ray import tune

    from icam.config import PipelineConfig, method_config
    from icam.harness import stage_classes

    base = PipelineConfig.from_dict(config["base"])
    method = {k: config[k] for k in ("lam", "mu", "sigma", "num_samples")}
    pipeline = replace(base, method=method_config("icam", **method))
    for stage in config["stages"]:
        trainable = stage_classes()[stage](config={
            "pipeline": pipeline.to_dict(), "data_root": config["data_root"],
            "artefacts": config["artefacts"], "cache": config.get("cache"),
            "cpus": config["cpus"]})
        result = {"done": False}
        while not result["done"]:
            result = trainable.step()
        split = config["split"]
        tune.report({"JF": result[f"{stage}/{split}/JF"], "J": result[f"{stage}/{split}/J"],
                     "F": result[f"{stage}/{split}/F"], "stage": stage})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(STUDY)
    args = parser.parse_args(argv)
    if not argv:
        args.quick, args.num_trials, args.stages = True, 2, "cam"
        print("search: no arguments, running the embedded default (synthetic data, cpu "
              "preset, 2 proposals, CAM stage only); --help lists the options")
    if args.num_trials < 1:
        parser.exit(2, f"error: --num-trials {args.num_trials} is invalid: an integer >= 1\n")
    stages = STAGES[:STAGES.index(args.stages) + 1]
    try:
        gpu = parse_gpu(args.gpus_per_trial)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    if args.dry_run:
        print(f"study search: Optuna over {SPACE}, ASHA on the CAM stage's J&F, stages "
              f"{', '.join(stages)}; each trial requests {{'cpu': {args.cpus_per_trial}, "
              f"'gpu': {gpu!r}}}")
        print(f"{args.num_trials} trials")
        return 0

    from icam.cli import log_path, run_guarded

    log = log_path(args.storage, "search")
    return run_guarded(lambda: run_search(args, stages, gpu, log), storage=args.storage,
                       name="search", verbose=args.verbose, log=log)


def run_search(args, stages: tuple, gpu, log) -> int:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from icam import progress
    from icam.config import pipeline_config
    from icam.console import say
    from icam.harness import (
        TrialConsole,
        resolve_data_root,
        resolve_gpu,
        start_ray,
        study_paths,
        write_trials_csv,
    )
    from icam.storage import tune_location
    from icam.study import finish_report, parse_seeds, write_outputs

    seed = parse_seeds(args.seeds)[0]
    base = pipeline_config(args.preset, "icam", seed=seed)
    if args.quick:
        from dataclasses import replace

        base = replace(base, **{s: replace(getattr(base, s), **QUICK_TRAIN[s]) for s in STAGES})
    start_ray(args.address)
    data_root = resolve_data_root(args.data_root)
    paths = study_paths(args.storage, "search", args.workdir)
    say(f"search: {args.num_trials} proposals, stages {', '.join(stages)}; data {data_root}; "
        f"results in {paths.root}")
    progress.open_board()
    share = resolve_gpu(gpu, "cam", base)
    trainable = tune.with_resources(trial_function, {"cpu": args.cpus_per_trial, "gpu": share})
    tune_path, tune_fs = tune_location(paths.tune)
    path = f"{tune_path}/optuna"
    if tune.Tuner.can_restore(path, storage_filesystem=tune_fs):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True,
                                   storage_filesystem=tune_fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={**search_space(), "base": base.to_dict(), "stages": list(stages),
                         "data_root": data_root, "artefacts": str(paths.artefacts),
                         "cache": paths.workdir, "split": args.split,
                         "cpus": args.cpus_per_trial},
            tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric="JF", mode="max", seed=seed),
                scheduler=ASHAScheduler(metric="JF", mode="max", max_t=len(stages),
                                        grace_period=1, reduction_factor=2),
                num_samples=args.num_trials),
            run_config=tune.RunConfig(name="optuna", storage_path=tune_path,
                                      storage_filesystem=tune_fs,
                                      callbacks=[TrialConsole("search")]))
    best = tuner.fit().get_best_result(metric="JF", mode="max", scope="last")
    write_trials_csv("search", paths)
    outputs = write_outputs("search", paths.root, Path(args.out) if args.out else None)
    say(f"best: J&F {best.metrics['JF']:.1f} at "
        + ", ".join(f"{k}={best.config[k]:.3g}" for k in ("lam", "mu", "sigma"))
        + f", num_samples={best.config['num_samples']}")
    finish_report("search", paths, data_root, log, outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
