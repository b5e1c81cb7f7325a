"""Seeds and random states: randomness flows from the trial's seed.

torch, numpy and `random` are seeded from it, the importance sampler gets its own generator,
the data order of epoch e is a permutation drawn from (seed, stage, e), and each item's
augmentation from (seed, epoch, index). A checkpoint carries every random state
(`capture_rng`), so a resumed stage draws what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from the trial seed and any strings/ints (stage, purpose, epoch)."""
    words = [int.from_bytes(hashlib.sha1(str(k).encode()).digest()[:4], "little") for k in keys]
    state = np.random.SeedSequence([seed, *words]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator | None = None) -> dict:
    """Global torch/CUDA/numpy/python RNG states (and `generator`'s) as tensors and plain values."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict, generator: torch.Generator | None = None) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        generator.set_state(state["generator"])

