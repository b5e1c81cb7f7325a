"""Networks: the ResNet-38 and tiny backbones, and (in submodules) the CAM, AffinityNet and
DeepLab-v1 heads."""

from torch import nn

from icam.models.resnet38 import ResNet38
from icam.models.tiny import TinyBackbone

BACKBONES = ("resnet38", "tiny")


def build_backbone(name: str, output_stride: int = 8, frozen_bn: bool = True) -> nn.Module:
    """A fresh backbone by name: "resnet38" (ResNet-38 A1, output stride 8) or "tiny"
    (TinyBackbone(width=16), output stride 4 or 8); `frozen_bn` as in their constructors."""
    if name == "resnet38":
        if output_stride != 8:
            raise ValueError(f"resnet38 has output stride 8, got output_stride={output_stride}")
        return ResNet38(frozen_bn=frozen_bn)
    if name == "tiny":
        return TinyBackbone(width=16, output_stride=output_stride, frozen_bn=frozen_bn)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "ResNet38", "TinyBackbone", "build_backbone"]
