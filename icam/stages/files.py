"""A stage's files: JSON and state files written atomically, a trial's folder name
(`trial_key`) and the DONE marker that tells a finished stage."""

from __future__ import annotations

import hashlib
import json
import os

import torch

from icam.atomic import atomic_path, atomic_write
from icam.config import STAGES, PipelineConfig
from icam.storage import Storage

STATE_FILE = "state.pt"
DONE_FILE = "DONE.json"


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def save_state(path: str | os.PathLike, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


KEY_NEUTRAL = {"extended": False, "threads": None, "rw_floor": False, "rw_keep": 0.0,
               "warmup": 0, "clip_grad": None}
"""Stage settings added after studies were stored: at these values they stay out of the
trial key, so stored trials keep their folders (and resume) across the addition."""

KEY_FREE = {"num_workers": 0}
"""Stage settings that change how fast a trial runs, never its numbers (a batch's augmentation
is drawn from (seed, epoch, image) in whichever process loads it): hashed at these values."""


def trial_key(pipeline: PipelineConfig) -> str:
    """`<method>-s<seed>-<hash of the whole configuration>`: a trial's folder name."""
    values = pipeline.to_dict()
    for stage in STAGES:
        for name, neutral in KEY_NEUTRAL.items():
            if values[stage].get(name) == neutral:
                del values[stage][name]
        values[stage].update(KEY_FREE)
    text = json.dumps(values, sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{pipeline.method.name}-s{pipeline.seed}-{digest}"


def read_done(stage_dir: str | os.PathLike | Storage) -> dict | None:
    """The metrics of a finished stage (its DONE.json in storage), or None."""
    stage_dir = Storage.open(stage_dir)
    return stage_dir.read_json(DONE_FILE) if stage_dir.exists(DONE_FILE) else None

