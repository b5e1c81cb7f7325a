"""Networks: the ResNet-38, Res2Net-101, EfficientNet-Lite0 and tiny backbones, and (in
submodules) the CAM, AffinityNet and DeepLab-v1 heads."""

from torch import nn

from icam.models.efficientnet_lite import EfficientNetLite
from icam.models.res2net import Res2Net, res2net101_v1b_26w_4s
from icam.models.resnet38 import ResNet38
from icam.models.tiny import TinyBackbone

BACKBONES = ("resnet38", "res2net101", "lite0", "lite0-r2n", "tiny")

LITE0_CUT = dict(depth=11, features=(4, 7, 10), frozen=3)
"""The cpu preset's Lite0: blocks 0-10 (to 112 channels), conv4 / conv5 / conv6 after blocks 4, 7
and 10, the stem and blocks 0-2 frozen (docs/benchmark.md, "The cpu preset's backbone")."""


def build_backbone(name: str, output_stride: int = 8, frozen_bn: bool = True) -> nn.Module:
    """A fresh backbone by name: "resnet38" (ResNet-38 A1, output stride 8), "res2net101"
    (Res2Net-101 v1b 26w×4s, output stride 8), "lite0" (EfficientNet-Lite0 cut after block 10,
    `LITE0_CUT`, output stride 4 or 8), "lite0-r2n": the same Lite0 under the name of the
    Res2Net-101 it stands in for on the cpu preset, so that a study's R2N row stays its own
    trial and its own row of Table 5, or "tiny" (TinyBackbone(width=16), output stride 4 or 8,
    randomly initialised: the tests' fast network). `frozen_bn` as in their constructors."""
    if name in ("resnet38", "res2net101") and output_stride != 8:
        raise ValueError(f"{name} has output stride 8, got output_stride={output_stride}")
    if name == "resnet38":
        return ResNet38(frozen_bn=frozen_bn)
    if name == "res2net101":
        return res2net101_v1b_26w_4s(frozen_bn=frozen_bn)
    if name in ("lite0", "lite0-r2n"):
        return EfficientNetLite(output_stride=output_stride, frozen_bn=frozen_bn, **LITE0_CUT)
    if name == "tiny":
        return TinyBackbone(width=16, output_stride=output_stride, frozen_bn=frozen_bn)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "LITE0_CUT", "EfficientNetLite", "Res2Net", "ResNet38", "TinyBackbone",
           "build_backbone"]
