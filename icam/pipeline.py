"""`python -m icam.pipeline`: one configuration through the three stages on Ray Tune.

    python -m icam.pipeline [--data-root DIR] [--storage DIR] [--preset cpu|paper]
        [--method icam|seam|seam+is|seam+fsl|icam-early] [--seed S] [--gpus-per-trial G]
        [--cpus-per-trial C] [--address ADDR] [--study NAME] [--verbose]

With no --data-root it runs on the embedded synthetic benchmark (generated once into a cache
folder); with no --storage it writes to ./results. Re-running the same command resumes and
repeats nothing that finished. Prints a line per stage as it starts and ends, a progress bar
inside it, J, F and J&F per stage and split at the end, and the paths of the run's log, its
report (`<storage>/<study>/report.md`) and its qualitative figure (`qualitative.png`).
"""

from __future__ import annotations

import argparse
import sys
import time

from icam.config import METHOD_PRESETS, STAGES, TRAIN_PRESETS, pipeline_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m icam.pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", help="VOC 2012 layout folder (default: synthetic benchmark)")
    p.add_argument("--storage", default="results",
                   help="results folder or a URI Ray Tune accepts (default: ./results)")
    p.add_argument("--preset", default="cpu", choices=sorted(TRAIN_PRESETS))
    p.add_argument("--method", default="icam", choices=list(METHOD_PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpus-per-trial", default="auto",
                   help="GPU share of the trial (0.25, 1, ...) or 'auto' (default)")
    p.add_argument("--cpus-per-trial", type=int, default=None,
                   help="CPUs of the trial (default: all CPUs of the smallest node)")
    p.add_argument("--address", help="a running Ray cluster (default: start a local Ray)")
    p.add_argument("--study", default="pipeline", help="study name (default: pipeline)")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray Tune's reporter and Ray's logs (always in the log)")
    return p.parse_args(argv)


def node_cpus() -> int:
    """CPUs of the smallest alive node of the connected Ray cluster."""
    import ray

    counts = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(min((c for c in counts if c > 0), default=1)))


def format_table(df, trial_id: str) -> str:
    import pandas as pd

    rows = df[df["trial_id"] == trial_id]
    lines = [f"{'stage':<10}{'split':<7}{'J':>7}{'F':>7}{'J&F':>7}"]
    for stage in STAGES:
        for split in ("train", "val"):
            r = rows[(rows["stage"] == stage) & (rows["split"] == split)]
            if len(r):
                cells = [r.iloc[0][m] for m in ("J", "F", "JF")]
                lines.append(f"{stage:<10}{split:<7}" + "".join(
                    f"{c:7.1f}" if pd.notna(c) else f"{'n/a':>7}" for c in cells))
    return "\n".join(lines)


def run(args: argparse.Namespace, log: str) -> int:
    from icam.console import say
    from icam.harness import StudySpec, resolve_data_root, run_study, start_ray, study_paths
    from icam.report import write_report
    from icam.stages.files import trial_key
    from icam.study import parse_gpu

    config = pipeline_config(args.preset, args.method, args.seed)
    gpu = parse_gpu(args.gpus_per_trial)
    if args.cpus_per_trial is not None and args.cpus_per_trial < 1:
        raise ValueError(f"--cpus-per-trial={args.cpus_per_trial} is invalid: allowed >= 1")
    spec = StudySpec(args.study, [config])
    data_root = resolve_data_root(args.data_root)
    paths = study_paths(args.storage, spec.name)  # fails early when storage is not writable
    say(f"{spec.name}: {config.method.name}, seed {config.seed}, preset {config.preset}; data "
        f"{data_root}; results in {paths.root}")
    start_ray(args.address)
    cpus = args.cpus_per_trial or node_cpus()
    start = time.perf_counter()
    df = run_study(spec, args.storage, {"cpu": cpus, "gpu": gpu}, data_root=data_root)
    say(f"\n{trial_key(config)}: {time.perf_counter() - start:.0f} s")
    say(format_table(df, trial_key(config)))
    say(f"\nlog: {log}")
    if paths.local is None:
        say(f"trials: {paths.trials_csv} (no report for an object storage)")
        return 0
    report = write_report(spec.name, paths.local, data_root, str(paths.tune), df)
    if report.figure is not None:
        say(f"qualitative: {report.figure}")
    say(f"report: {paths.local / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from icam.cli import log_path, run_guarded

    args = parse_args(argv)
    log = log_path(args.storage, "pipeline")
    return run_guarded(lambda: run(args, log), storage=args.storage, name="pipeline",
                       verbose=args.verbose, log=log)


if __name__ == "__main__":
    sys.exit(main())
