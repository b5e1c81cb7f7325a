"""Studies on Ray Tune: a grid of trial configurations through the stages, one Tuner per stage.

    df = run_study(StudySpec("ablate_mu", trials), storage="results",
                   resources={"cpu": 2, "gpu": 0.25})

Layout of a study, in its storage (a local folder, or an s3:// or gs:// URI, whose query such
as `?endpoint_override=127.0.0.1:9000&scheme=http` stays at the end of every path):

    <storage>/<study>/tune/<stage>[-<hash>]/   Ray Tune experiments (results, checkpoints)
    <storage>/<study>/artefacts/<trial_key>/   config.json and, per stage, the products and
                                               DONE.json (the stage's J/F): shared by the
                                               three stages of a trial
    <storage>/<study>/experiments.json         which trials each Tune experiment holds
    <storage>/<study>/trials.csv               one row per trial x stage x split

Everything goes through `icam.storage` (pyarrow's filesystems), so on a cluster the storage is
the only thing nodes share: a trial's next stage may run on any node. Nodes keep a cache of
the label folders their training sets read (`workdir`, default each node's own
`icam.storage.cache_root()`), deletable between runs.

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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray import tune

from icam import progress
from icam.allocator import MALLOC_ENV
from icam.cli import ReportedError
from icam.config import STAGES, PipelineConfig
from icam.stages.files import read_done, trial_key
from icam.storage import Storage, tune_location

SPLITS = ("train", "val")
METRICS = ("J", "F", "JF")
CSV_COLUMNS = ("study", "trial_id", "seed", "stage", "split", "J", "F", "JF")
SHARES = ("fg", "fg_truth", "flooded")
"""Beside J/F: the foreground share predicted and true (percent) and the flooded images
(`icam.stages.scoring`); blank for stages stored before they were recorded."""
EXPERIMENTS = "experiments.json"
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


@dataclass(frozen=True)
class StudyPaths:
    root: Storage  # <storage>/<study>
    workdir: str | None  # the nodes' cache folder (None: each node's default)

    @property
    def local(self) -> Path | None:
        """The study's folder on this machine's disk; None for an object store."""
        return self.root.local

    @property
    def tune(self) -> Storage:
        return self.root / "tune"

    @property
    def artefacts(self) -> Storage:
        return self.root / "artefacts"

    @property
    def trials_csv(self) -> Storage:
        return self.root / "trials.csv"


def study_paths(storage: str | os.PathLike, study: str,
                workdir: str | os.PathLike | None = None) -> StudyPaths:
    """The study's folder in `storage` (checked writable when local) and the cache folder."""
    root = Storage.open(storage) / study
    root.make_folder()
    if workdir is not None:
        cache = Storage.open(workdir)
        if cache.local is None:
            raise ValueError(f"workdir {workdir}: a node's cache is a local folder, not a URI")
        cache.make_folder("workdir")
        workdir = str(cache.local)
    return StudyPaths(root, workdir)


# --- trials.csv --------------------------------------------------------------------------------


def collect_trials(study: str, artefacts: str | os.PathLike | Storage) -> pd.DataFrame:
    """One row per trial x finished stage x split, from the DONE.json files of a study."""
    artefacts = Storage.open(artefacts)
    rows = []
    for key in sorted(artefacts.folders()):
        trial = artefacts / key
        if not trial.exists("config.json"):
            continue
        pipeline = PipelineConfig.from_dict(trial.read_json("config.json"))
        for stage in STAGES:
            done = read_done(trial / stage)
            if done is None:
                continue
            for split in SPLITS:
                row = {"study": study, "trial_id": key,
                       "seed": pipeline.seed, "stage": stage, "split": split}
                row.update({m: done.get(f"{stage}/{split}/{m}") for m in (*METRICS, *SHARES)})
                row.update(pipeline.method.columns())
                row.update(getattr(pipeline, stage).columns())
                rows.append(row)
    defaults = PipelineConfig()
    columns = [*CSV_COLUMNS, *SHARES, *defaults.method.columns(), *defaults.final.columns()]
    return pd.DataFrame(rows, columns=columns)


def write_trials_csv(study: str, paths: StudyPaths) -> pd.DataFrame:
    df = collect_trials(study, paths.artefacts)
    paths.trials_csv.write_bytes(df.to_csv(index=False).encode())
    return df


# --- resources ---------------------------------------------------------------------------------


def _probe_peak_memory(stage: str, pipeline: dict) -> tuple[int, int]:
    from icam.stages.trainer import measure_training

    config = PipelineConfig.from_dict(pipeline)
    trainer = trainer_classes()[stage](config, max_iterations=2)
    m = measure_training(trainer, steps=1, batch_size=getattr(config, stage).batch_size)
    return m["peak_bytes"], m["total_bytes"]


def trials_per_gpu(peak_bytes: int, total_bytes: int, headroom: float = GPU_HEADROOM) -> int:
    """The largest k (at least 1) such that k trials fit on one GPU with `headroom` spare."""
    return max(1, math.floor((1 - headroom) * total_bytes / max(1, peak_bytes)))


def gpu_packing(peak_bytes: int, total_bytes: int, headroom: float = GPU_HEADROOM) -> float:
    """The GPU fraction 1/k of `trials_per_gpu`'s k."""
    k = trials_per_gpu(peak_bytes, total_bytes, headroom)
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
    """{"cpu": c, "gpu": g, "custom": {name: amount}} for a stage from a shared or a per-stage
    resource dict; "custom" holds Ray custom resources (a node started with
    `--resources '{"cam_node": 1}'` takes the trials that ask for "cam_node")."""
    resources = resources or {}
    if any(key in STAGES for key in resources):
        resources = resources.get(stage, {})
    unknown = set(resources) - {"cpu", "gpu", "custom"}
    if unknown:
        raise ValueError(f"resources: unknown key(s) {sorted(unknown)}: allowed cpu, gpu, "
                         "custom")
    cpu = resources.get("cpu", 1)
    if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 1:
        raise ValueError(f"cpu={cpu!r} is invalid: allowed an integer >= 1")
    custom = dict(resources.get("custom", {}))
    for name, amount in custom.items():
        if (not isinstance(name, str) or name in ("CPU", "GPU", "cpu", "gpu", "memory")
                or isinstance(amount, bool) or not isinstance(amount, (int, float))
                or not amount > 0):
            raise ValueError(f"custom resource {name!r}: {amount!r} is invalid: allowed a "
                             "resource name (not CPU, GPU or memory) and an amount > 0")
    return {"cpu": cpu, "gpu": resources.get("gpu", "auto"), "custom": custom}


def trial_resources(res: dict, gpu: float, stage: str):
    """Ray Tune's resource request of one trial from `stage_resources` and its GPU share: a
    function of the trial's config, since a trial asks for at least its stage's `threads`."""
    from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

    def request(config: dict):
        cpus = getattr(PipelineConfig.from_dict(config["pipeline"]), stage).cpus(res["cpu"])
        return resource_dict_to_pg_factory({**res["custom"], "cpu": cpus, "gpu": gpu})

    return request


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
        progress.finish(self._owner(trial), "stopped after {elapsed} (an error or a lost "
                        "worker: see the log); retrying from its last checkpoint", ended=False)

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
    record = paths.root.read_json(EXPERIMENTS) if paths.root.exists(EXPERIMENTS) else {}
    experiments = record.setdefault(stage, {})
    tune_path, tune_fs = tune_location(paths.tune)

    def done(key: str) -> bool:
        return read_done(paths.artefacts / key / stage) is not None

    res = stage_resources(resources, stage)
    cls = stage_classes()[stage]
    errors = {}

    def fit(tuner) -> None:
        for result in tuner.fit():
            if result.error is not None:
                errors[_trial_name(result)] = _failure(stage, result)

    def unfinished() -> list[tuple[str, str]]:
        """The failures of trials still without their DONE.json (a restored experiment that
        fails, say because its checkpoint is gone, is followed by a fresh one that may finish)."""
        return [failure for key, failure in errors.items() if not done(key)]

    # interrupted experiments continue from their checkpoints
    for name, entry in experiments.items():
        path = f"{tune_path}/{name}"
        if not all(done(k) for k in entry["trials"]) and tune.Tuner.can_restore(
                path, storage_filesystem=tune_fs):
            trainable = tune.with_resources(cls, trial_resources(res, entry["gpu"], stage))
            fit(tune.Tuner.restore(path, trainable=trainable, resume_errored=True,
                                   storage_filesystem=tune_fs))
    wanted = {trial_key(t): t for t in trials}
    pending = [t for k, t in wanted.items() if not done(k)]
    if not pending:
        return unfinished()
    gpu = resolve_gpu(res["gpu"], stage, pending[0])
    name = _experiment_name(stage, [trial_key(t) for t in pending], experiments)
    experiments[name] = {"trials": [trial_key(t) for t in pending], "gpu": gpu}
    paths.root.write_json(EXPERIMENTS, record)
    param_space = {
        "pipeline": tune.grid_search([t.to_dict() for t in pending]),
        "data_root": data_root, "artefacts": str(paths.artefacts), "cache": paths.workdir,
        "cpus": res["cpu"], "gpu_fraction": gpu,
    }
    tuner = tune.Tuner(
        tune.with_resources(cls, trial_resources(res, gpu, stage)),
        param_space=param_space,
        tune_config=tune.TuneConfig(trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=name, storage_path=tune_path, storage_filesystem=tune_fs, stop={"done": True},
            verbose=verbose, callbacks=[TrialConsole(stage)],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_frequency=1,
                                                    checkpoint_at_end=True)))
    fit(tuner)
    return unfinished()


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
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"env_vars": MALLOC_ENV})  # icam.allocator


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
        (paths.artefacts / trial_key(trial)).write_json("config.json", trial.to_dict())
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
