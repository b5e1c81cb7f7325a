"""Networks: the ResNet-38 and tiny backbones, and (in submodules) the CAM, AffinityNet and
DeepLab-v1 heads."""

from torch import nn

from icam.models.resnet38 import ResNet38
from icam.models.tiny import TinyBackbone

BACKBONES = ("resnet38", "tiny")


def build_backbone(name: str) -> nn.Module:
    """A fresh backbone by name: "resnet38" (ResNet-38 A1) or "tiny" (TinyBackbone(width=16))."""
    if name == "resnet38":
        return ResNet38()
    if name == "tiny":
        return TinyBackbone(width=16)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "ResNet38", "TinyBackbone", "build_backbone"]
