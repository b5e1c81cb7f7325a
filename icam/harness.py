"""Studies on Ray Tune: a grid of trial configurations through the stages, one Tuner per stage.

    df = run_study(StudySpec("ablate_mu", trials), storage="results",
                   resources={"cpu": 2, "gpu": 0.25})

Layout of a study (local storage):

    <storage>/<study>/tune/<stage>[-<hash>]/   Ray Tune experiments (results, checkpoints)
    <storage>/<study>/artefacts/<trial_key>/   config.json and, per stage, the products and
                                               DONE.json (the stage's J/F): shared by the
                                               three stages of a trial
    <storage>/<study>/experiments.json         which trials each Tune experiment holds
    <storage>/<study>/trials.csv               one row per trial x stage x split

With a URI storage (s3://, gs://, anything Ray Tune accepts) Tune's experiments go there and
everything else to the local `workdir` (default `./results/<study>`); trials.csv is copied to
`<storage>/<study>/trials.csv`. On a multi-node cluster `workdir` must be a folder every node
shares (NFS), since a trial's next stage may run on another node.

Resuming: a trial's stage is done once its DONE.json exists, and is never run again. An
interrupted experiment is restored with `Tuner.restore` (unfinished and errored trials
continue from their last checkpoint); trials still without a DONE.json (a widened grid) go to
a new experiment. trials.csv is rebuilt from every DONE.json of the study, so it stays
complete and free of duplicates after any interruption.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray import tune

from icam import progress
from icam.atomic import atomic_write
from icam.cli import ReportedError
from icam.config import STAGES, PipelineConfig
from icam.stages.common import read_done, read_json, trial_key, write_json

SPLITS = ("train", "val")
METRICS = ("J", "F", "JF")
CSV_COLUMNS = ("study", "trial_id", "seed", "stage", "split", "J", "F", "JF")
GPU_HEADROOM = 0.15
"""`gpu="auto"` keeps this fraction of GPU memory free when packing trials."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class StudyError(ReportedError):
    """Some trials failed. The first line names the first failure's trial, stage and cause;
    the next lines hold every failure in full (Ray's traceback) and its Tune folder."""


@dataclass(frozen=True)
class StudySpec:
    """A study: its name, the trial configurations (a grid already expanded), and the stages
    to run (a prefix of cam, affinity, final: stop after the last one)."""

    name: str
    trials: tuple[PipelineConfig, ...]
    stages: tuple[str, ...] = STAGES

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"study name {self.name!r} is invalid: letters, digits and _.+- "
                             "(starting with a letter or digit)")
        trials = tuple(self.trials)
        if not trials or not all(isinstance(t, PipelineConfig) for t in trials):
            raise ValueError("trials must be a non-empty list of PipelineConfig")
        unique = list({trial_key(t): t for t in trials}.values())
        object.__setattr__(self, "trials", tuple(unique))
        stages = tuple(self.stages)
        if not stages or stages != STAGES[:len(stages)]:
            raise ValueError(f"stages={stages!r} is invalid: allowed a prefix of {STAGES}")
        object.__setattr__(self, "stages", stages)


def stage_classes() -> dict:
    from icam.stages import AffinityStage, CamStage, FinalStage

    return {"cam": CamStage, "affinity": AffinityStage, "final": FinalStage}


def trainer_classes() -> dict:
    return {stage: cls.trainer_cls for stage, cls in stage_classes().items()}


# --- storage -----------------------------------------------------------------------------------


def is_uri(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def _writable_dir(path: Path, what: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{what} {path} is not writable: {err.strerror or err}") from None
    return path


@dataclass(frozen=True)
class StudyPaths:
    tune: str  # Tune's storage_path (local path or URI)
    local: Path  # our files: artefacts, experiments.json, trials.csv
    csv_uri: str | None  # where trials.csv is copied for URI storage

    @property
    def artefacts(self) -> Path:
        return self.local / "artefacts"


def study_paths(storage: str | os.PathLike, study: str,
                workdir: str | os.PathLike | None = None) -> StudyPaths:
    if is_uri(storage):
        base = str(storage).rstrip("/") + f"/{study}"
        local = Path(workdir or Path("results") / study).expanduser().resolve()
        return StudyPaths(base + "/tune", _writable_dir(local, "workdir"), base + "/trials.csv")
    local = _writable_dir(Path(storage).expanduser().resolve() / study, "storage")
    return StudyPaths(str(local / "tune"), local, None)


def _upload(local: Path, uri: str) -> None:
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path + ".tmp") as out:
        out.write(local.read_bytes())
    fs.move(path + ".tmp", path)


# --- trials.csv --------------------------------------------------------------------------------


def collect_trials(study: str, artefacts: str | os.PathLike) -> pd.DataFrame:
    """One row per trial x finished stage x split, from the DONE.json files of a study."""
    rows = []
    for config_path in sorted(Path(artefacts).glob("*/config.json")):
        pipeline = PipelineConfig.from_dict(read_json(config_path))
        for stage in STAGES:
            done = read_done(config_path.parent / stage)
            if done is None:
                continue
            for split in SPLITS:
                row = {"study": study, "trial_id": config_path.parent.name,
                       "seed": pipeline.seed, "stage": stage, "split": split}
                row.update({m: done.get(f"{stage}/{split}/{m}") for m in METRICS})
                row.update(pipeline.method.columns())
                row.update(getattr(pipeline, stage).columns())
                rows.append(row)
    defaults = PipelineConfig()
    columns = [*CSV_COLUMNS, *defaults.method.columns(), *defaults.final.columns()]
    return pd.DataFrame(rows, columns=columns)


def write_trials_csv(study: str, paths: StudyPaths) -> pd.DataFrame:
    df = collect_trials(study, paths.artefacts)
    target = paths.local / "trials.csv"
    with atomic_write(target, "w", newline="") as f:
        df.to_csv(f, index=False)
    if paths.csv_uri:
        _upload(target, paths.csv_uri)
    return df


# --- resources ---------------------------------------------------------------------------------


def _probe_peak_memory(stage: str, pipeline: dict) -> tuple[int, int]:
    from icam.stages.common import measure_training

    config = PipelineConfig.from_dict(pipeline)
    trainer = trainer_classes()[stage](config, max_iterations=2)
    m = measure_training(trainer, steps=1, batch_size=getattr(config, stage).batch_size)
    return m["peak_bytes"], m["total_bytes"]


def gpu_packing(peak_bytes: int, total_bytes: int, headroom: float = GPU_HEADROOM) -> float:
    """The GPU fraction 1/k with the largest k such that k trials fit with `headroom` spare."""
    k = max(1, math.floor((1 - headroom) * total_bytes / max(1, peak_bytes)))
    return math.floor(10000 / k) / 10000  # Ray resolves fractions to 1e-4


def resolve_gpu(gpu, stage: str, pipeline: PipelineConfig) -> float:
    """A trial's GPU share: a number, or "auto" (one training step's peak memory on one GPU
    decides how many trials share it; 0 on a cluster without GPUs)."""
    if gpu != "auto":
        if not isinstance(gpu, (int, float)) or isinstance(gpu, bool) or gpu < 0:
            raise ValueError(f"gpu={gpu!r} is invalid: allowed a number >= 0 or 'auto'")
        return float(gpu)
    import ray

    if ray.cluster_resources().get("GPU", 0) < 1:
        return 0.0
    probe = ray.remote(_probe_peak_memory).options(num_gpus=1, num_cpus=1)
    peak, total = ray.get(probe.remote(stage, pipeline.to_dict()))
    return gpu_packing(peak, total)


def stage_resources(resources: dict | None, stage: str) -> dict:
    """{"cpu": c, "gpu": g} for a stage from a shared or a per-stage resource dict."""
    resources = resources or {}
    if any(key in STAGES for key in resources):
        resources = resources.get(stage, {})
    unknown = set(resources) - {"cpu", "gpu"}
    if unknown:
        raise ValueError(f"resources: unknown key(s) {sorted(unknown)}: allowed cpu, gpu")
    cpu = resources.get("cpu", 1)
    if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 1:
        raise ValueError(f"cpu={cpu!r} is invalid: allowed an integer >= 1")
    return {"cpu": cpu, "gpu": resources.get("gpu", "auto")}


# --- running -----------------------------------------------------------------------------------


def _trial_name(trial) -> str:
    """A Tune trial's (or result's) name: the trial key of its configuration (Tune's name for
    a trial without one, such as the search's)."""
    if "pipeline" not in trial.config:
        return str(trial)
    return trial_key(PipelineConfig.from_dict(trial.config["pipeline"]))


class TrialConsole(tune.Callback):
    """A line per trial of `stage` as it starts, fails or ends (elapsed time, J/F), and the
    trials' running tasks on the status line (`icam.progress`). Tune stores its callbacks with
    the experiment, so this holds only the stage's name."""

    def __init__(self, stage: str):
        self.stage = stage

    def _owner(self, trial) -> str:
        return f"{self.stage} {_trial_name(trial)}"

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        progress.announce(self._owner(trial))

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        progress.finish(self._owner(trial), "lost its worker after {elapsed}; resuming from "
                        "its last checkpoint", ended=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        progress.finish(self._owner(trial), "failed after {elapsed}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        metrics = progress.result_line(self.stage, result)
        # the worker's time from its setup (Tune announces a trial once set up)
        seconds = result["wall_time"] - result["setup_at"] if "setup_at" in result else None
        progress.finish(self._owner(trial), "done in {elapsed}" + (
            f"  {metrics}" if metrics else ""), seconds=seconds)

    def on_step_end(self, iteration, trials, **info) -> None:
        progress.show_board()


def _cause(error: BaseException) -> BaseException:
    """The trial's own exception inside Ray's wrappers (RayTaskError keeps it as `cause`)."""
    while isinstance(getattr(error, "cause", None), BaseException):
        error = error.cause
    return error


def _failure(stage: str, result) -> tuple[str, str]:
    """(one line, full text) of a failed trial: its stage, name and the error's cause."""
    cause = _cause(result.error)
    lines = str(cause).strip().splitlines() or [""]
    line = f"{stage} {_trial_name(result)}: {type(cause).__name__}: {lines[0]}"
    return line, f"{line}\n{result.error}\n(Tune folder: {result.path})"


def _experiment_name(stage: str, keys: list[str], existing: dict) -> str:
    if stage not in existing:
        return stage
    digest = hashlib.sha1(json.dumps(sorted(keys)).encode()).hexdigest()[:8]
    return f"{stage}-{digest}"


def _run_stage(stage: str, trials: list[PipelineConfig], paths: StudyPaths, data_root: str,
               resources: dict, max_failures: int, verbose: int) -> list[tuple[str, str]]:
    """Run `stage` for the trials that lack its DONE.json; returns its failures (`_failure`)."""
    record_path = paths.local / "experiments.json"
    record = read_json(record_path) if record_path.is_file() else {}
    experiments = record.setdefault(stage, {})

    def done(key: str) -> bool:
        return read_done(paths.artefacts / key / stage) is not None

    res = stage_resources(resources, stage)
    cls = stage_classes()[stage]
    errors = []

    def fit(tuner) -> None:
        for result in tuner.fit():
            if result.error is not None:
                errors.append(_failure(stage, result))

    # interrupted experiments continue from their checkpoints
    for name, entry in experiments.items():
        path = f"{paths.tune}/{name}"
        if not all(done(k) for k in entry["trials"]) and tune.Tuner.can_restore(path):
            trainable = tune.with_resources(cls, {"cpu": res["cpu"], "gpu": entry["gpu"]})
            fit(tune.Tuner.restore(path, trainable=trainable, resume_errored=True))
    wanted = {trial_key(t): t for t in trials}
    pending = [t for k, t in wanted.items() if not done(k)]
    if not pending:
        return errors
    gpu = resolve_gpu(res["gpu"], stage, pending[0])
    name = _experiment_name(stage, [trial_key(t) for t in pending], experiments)
    experiments[name] = {"trials": [trial_key(t) for t in pending], "gpu": gpu}
    write_json(record_path, record)
    param_space = {
        "pipeline": tune.grid_search([t.to_dict() for t in pending]),
        "data_root": data_root, "artefacts": str(paths.artefacts),
        "cpus": res["cpu"], "gpu_fraction": gpu,
    }
    tuner = tune.Tuner(
        tune.with_resources(cls, {"cpu": res["cpu"], "gpu": gpu}),
        param_space=param_space,
        tune_config=tune.TuneConfig(trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=paths.tune, stop={"done": True}, verbose=verbose,
            callbacks=[TrialConsole(stage)],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_frequency=1,
                                                    checkpoint_at_end=True)))
    fit(tuner)
    return errors


def resolve_data_root(data_root: str | os.PathLike | None) -> str:
    """An absolute VOC-layout root (trials run in their own working directory); None means
    the embedded synthetic benchmark."""
    from icam.data.voc import VOCLayout

    if data_root is None:
        from icam.data.synthetic import ensure_default

        data_root = ensure_default()
    root = Path(data_root).expanduser().resolve()
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist")
    layout = VOCLayout(root)
    for split in ("train", "val"):
        layout.ids(split)
    return str(root)


def start_ray(address: str | None = None) -> None:
    """Connect to `address` (a running cluster, default $RAY_ADDRESS) or start a local Ray,
    unless connected.

    Workers' output stays in Ray's session logs (the driver's, Tune's reporter included, goes
    to the run's log: `icam.console`), Tune does not print failed trials' tracebacks
    (run_study puts them in its StudyError, which the command line writes to its log) nor
    warn about its frequent experiment-state snapshots.
    """
    import ray

    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # every trial checkpoints each step, so Tune's forced state snapshots come often; on a
    # study's scale they are cheap and its warning about them is noise
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not ray.is_initialized():
        # without an address Ray would join any Ray it finds running on this machine (another
        # user's included): start a local one unless told otherwise (RAY_ADDRESS, as `ray job
        # submit` sets it)
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, log_to_driver=False)


def run_study(spec: StudySpec, storage: str | os.PathLike = "results",
              resources: dict | None = None, data_root: str | os.PathLike | None = None,
              max_failures: int = 1, verbose: int = 1,
              workdir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Run every trial of `spec` through its stages and return trials.csv as a DataFrame.

    resources: {"cpu": c, "gpu": g} per trial, or {stage: {...}} per stage; g a number (0.25
    lets four trials share a GPU) or "auto" (the default). Starts a local Ray when none runs.
    Raises StudyError (after writing trials.csv) when trials failed, and KeyboardInterrupt
    when Tune was interrupted (Ctrl-C: it stops its trials and saves its state).
    """
    for stage in STAGES:
        stage_resources(resources, stage)
    root = resolve_data_root(data_root)
    paths = study_paths(storage, spec.name, workdir)
    for trial in spec.trials:
        write_json(paths.artefacts / trial_key(trial) / "config.json", trial.to_dict())
    start_ray()
    progress.open_board()
    errors = []
    trials = list(spec.trials)
    for stage in spec.stages:
        failed = _run_stage(stage, trials, paths, root, resources, max_failures, verbose)
        errors += failed
        done = [t for t in trials
                if read_done(paths.artefacts / trial_key(t) / stage) is not None]
        if len(trials) - len(done) > len(failed):
            # Tune ended trials that neither finished nor failed: it was interrupted (Ctrl-C),
            # so the study stops here rather than going on to the next stage
            write_trials_csv(spec.name, paths)
            raise KeyboardInterrupt(f"{stage}: {len(trials) - len(done)} trial(s) interrupted")
        trials = done
    df = write_trials_csv(spec.name, paths)
    if errors or len(trials) < len(spec.trials):
        lost = len(spec.trials) - len(trials)
        first = errors[0][0] if errors else f"see the Tune logs under {paths.tune}"
        details = "\n\n".join(full for _, full in errors)
        raise StudyError(f"{lost} of {len(spec.trials)} trials did not finish; {first}\n\n"
                         f"{details}")
    return df
