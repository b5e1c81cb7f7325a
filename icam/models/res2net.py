"""Res2Net-101 v1b 26w×4s at output stride 8: the backbone of PMM's and ICAM's "R2N" rows.

Res2Net (Gao et al., TPAMI 2021): a bottleneck whose 3x3 conv is split into `scale` groups of
`width` channels; group i (i >= 1) adds the previous group's output before its own 3x3 conv,
so one block sees several receptive fields; the last group passes through (average-pooled in
a stage's first block). v1b: a deep stem (three 3x3 convs, 32-32-64) and shortcuts that
average-pool before their 1x1 projection. For segmentation (PMM's mmsegmentation config
`pspnet_res2net_20k_voc12aug.py`: strides 1, 2, 1, 1, dilations 1, 1, 2, 4) layers 3 and 4
keep stride 1 and dilate their 3x3 convs by 2 and 4, so the output stride is 8.

Module names and shapes are those of the published ImageNet file
`res2net101_v1b_26w_4s-0812c246.pth` (conv1.0/1/3/4/6, bn1, layer<i>.<j>.conv1/bn1/convs.<k>/
bns.<k>/conv3/bn3/downsample.1/2), which loads with `load_pretrained(..., strict=False)`;
its ImageNet classifier `fc` has no counterpart here and is skipped. With `frozen_bn=False`
batch norm trains, statistics and affine parameters, as PMM's config sets (`norm_eval=False`);
`frozen_bn=True` keeps both at their pre-trained values, as the other backbones do.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from icam.models.resnet38 import freeze_batchnorm


def _bn_relu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class Bottle2neck(nn.Module):
    """1x1 conv to `scale` groups of `width` channels -> hierarchical 3x3 convs -> 1x1 conv
    to 4·planes, plus the shortcut. `first`: the first block of a layer (groups do not chain,
    the last group is average-pooled, the shortcut is projected)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, base_width: int = 26, scale: int = 4,
                 stride: int = 1, dilation: int = 1, first: bool = False):
        super().__init__()
        width = math.floor(planes * base_width / 64)
        c_out = planes * self.expansion
        self.width, self.scale, self.first = width, scale, first
        self.conv1 = nn.Conv2d(c_in, width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False)
            for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(3, stride, padding=1) if first else None
        self.conv3 = nn.Conv2d(width * scale, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if first:  # v1b: average-pool, then the 1x1 projection (index 0 holds no weights)
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        groups = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, dim=1)
        outputs, y = [], None
        for k, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            y = groups[k] if k == 0 or self.first else y + groups[k]
            y = self.relu(bn(conv(y)))
            outputs.append(y)
        outputs.append(self.pool(groups[-1]) if self.first else groups[-1])
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Res2Net(nn.Module):
    """Res2Net v1b backbone at output stride 8 (no classifier).

    layers: blocks per stage (101: 3, 4, 23, 3); base_width, scale: 26w×4s.
    `forward_as_dict(x)` gives conv4 = layer2 (512 ch), conv5 = layer3 (1024 ch) and
    conv6 = layer4 (2048 ch), all at ceil(H/8) x ceil(W/8). `frozen_blocks` (the stem and
    layer1) are what the CAM and AffinityNet heads freeze, like ResNet-38's conv1a and b2.
    """

    channels = {"conv4": 512, "conv5": 1024, "conv6": 2048}
    stride = 8

    def __init__(self, layers: tuple[int, ...] = (3, 4, 23, 3), base_width: int = 26,
                 scale: int = 4, frozen_bn: bool = True):
        super().__init__()
        self.frozen_bn = frozen_bn
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"Res2Net: layers must be four counts >= 1, got {layers}")
        if scale < 2 or base_width < 1:
            raise ValueError(f"Res2Net: scale must be >= 2 and base_width >= 1, got "
                             f"scale={scale}, base_width={base_width}")
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, padding=1, bias=False), *_bn_relu(32),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), *_bn_relu(32),
            nn.Conv2d(32, 64, 3, padding=1, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        c_in, stages = 64, []
        for planes, blocks, stride, dilation in zip((64, 128, 256, 512), layers, (1, 2, 1, 1),
                                                    (1, 1, 2, 4), strict=True):
            stage = [Bottle2neck(c_in, planes, base_width, scale, stride, dilation, first=True)]
            c_in = planes * Bottle2neck.expansion
            stage += [Bottle2neck(c_in, planes, base_width, scale, dilation=dilation)
                      for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.train()

    @property
    def frozen_blocks(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_bn:
            freeze_batchnorm(self)
        return self

    def forward_as_dict(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        conv4 = self.layer2(self.layer1(x))
        conv5 = self.layer3(conv4)
        return {"conv4": conv4, "conv5": conv5, "conv6": self.layer4(conv5)}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_as_dict(x)["conv6"]


def res2net101_v1b_26w_4s(frozen_bn: bool = True) -> Res2Net:
    """The variant PMM's segmentation configs use (`res2net101_v1b_26w_4s-0812c246.pth`)."""
    return Res2Net((3, 4, 23, 3), base_width=26, scale=4, frozen_bn=frozen_bn)
