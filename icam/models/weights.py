"""Load pretrained weights: MXNet `.params` (the ResNet-38 ImageNet file) or PyTorch state dicts."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from icam.models.mxnet_params import read_ndarray_list
from icam.models.resnet38 import ResNet38, mxnet_to_torch_name

BUILTIN_WEIGHTS = {"tiny-generic": Path(__file__).with_name("tiny_generic.npz")}
"""Weights shipped with the package (the tiny backbone pre-trained by icam.models.tiny_pretrain)."""


@dataclass
class LoadResult:
    """Names (in the model) that were loaded, model names left as they were, file names skipped."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _listing(names) -> str:
    names = sorted(names)
    more = f" ... ({len(names)} in all)" if len(names) > 8 else ""
    return ", ".join(names[:8]) + more


def _state_names(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def _check_shapes(path, tensors: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]):
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(target[name].shape):
            raise ValueError(
                f"{path}: {name} has shape {tuple(value.shape)}, "
                f"the model wants {tuple(target[name].shape)}"
            )


def _load_mxnet(model: nn.Module, path: Path) -> LoadResult:
    if isinstance(model, ResNet38):
        backbone, prefix = model, ""
    elif isinstance(getattr(model, "backbone", None), ResNet38):
        backbone, prefix = model.backbone, "backbone."
    else:
        raise ValueError(
            f"{path}: MXNet .params weights fit ResNet-38 only, "
            f"and {type(model).__name__} has no ResNet-38 backbone"
        )
    tensors, skipped = {}, []
    for name, array in read_ndarray_list(path).items():
        try:
            torch_name = mxnet_to_torch_name(name)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        if torch_name is None:
            skipped.append(name)
        else:
            tensors[torch_name] = torch.from_numpy(array)
    target = _state_names(backbone)
    missing, unexpected = target.keys() - tensors.keys(), tensors.keys() - target.keys()
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not match ResNet-38; "
            f"missing: [{_listing(missing)}]; unexpected: [{_listing(unexpected)}]"
        )
    _check_shapes(path, tensors, target)
    backbone.load_state_dict(tensors, strict=False)
    loaded = sorted(prefix + k for k in tensors)
    return LoadResult(loaded, sorted(_state_names(model).keys() - set(loaded)), skipped)


def _read_state(path: Path) -> Mapping:
    """A state dict from `.npz` (no pickles allowed) or a weights-only torch file."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {k: torch.from_numpy(arrays[k]) for k in arrays.files}
        except Exception as err:
            raise ValueError(f"{path}: cannot read as an .npz of arrays: {err}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot read as a weights-only torch file: {err}") from None


def _load_state(model: nn.Module, path: Path, strict: bool) -> LoadResult:
    state = _read_state(path)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path}: expected a state dict (parameter name -> tensor)")
    target = _state_names(model)
    tensors, unexpected = {}, []
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if name in target:
            tensors[name] = value
        elif "backbone." + name in target:  # checkpoints of the authors' backbone-less models
            tensors["backbone." + name] = value
        else:
            unexpected.append(name)
    missing = target.keys() - tensors.keys()
    if strict and (missing or unexpected):
        raise ValueError(
            f"{path}: does not match {type(model).__name__}; "
            f"missing: [{_listing(missing)}]; unexpected: [{_listing(unexpected)}]"
        )
    _check_shapes(path, tensors, target)
    model.load_state_dict(tensors, strict=False)
    return LoadResult(sorted(tensors), sorted(missing), sorted(unexpected))


def resolve_weights(name: str | Path) -> Path:
    """The file of a weights name: a built-in name (BUILTIN_WEIGHTS) or a path."""
    if str(name) in BUILTIN_WEIGHTS:
        return BUILTIN_WEIGHTS[str(name)]
    return Path(name).expanduser()


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load `path` (or a BUILTIN_WEIGHTS name) into `model` in place.

    `.params`: the MXNet ResNet-38 ImageNet file into a ResNet38 or a model whose `backbone` is
    one; every backbone tensor must be present (the classifier linear1000 is skipped).
    `.pth` / `.pt` / `.npz`: a state dict read with `torch.load(weights_only=True)` or
    `np.load(allow_pickle=False)`; names without the `backbone.` prefix are matched to it.
    With strict=True, missing or unexpected names raise; otherwise they are reported in the
    result (`missing`, `skipped`).
    """
    path = resolve_weights(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".params":
        return _load_mxnet(model, path)
    if path.suffix in (".pth", ".pt", ".npz"):
        return _load_state(model, path, strict)
    raise ValueError(f"{path}: unknown weights format (want .params, .pth, .pt or .npz)")
