"""ResNet-38 ("Wider or Deeper", model A1) at output stride 8, as used by SEAM and ICAM.

Pre-activation residual blocks (BN -> ReLU -> conv). Strides 2 in b2, b3 and b4; b5 is dilated
by 2 and b6, b7 by 4 instead of striding. Module names follow the authors' PyTorch port so their
checkpoints load; `mxnet_to_torch_name` maps the published MXNet names
(`ilsvrc-cls_rna-a1_cls1000_ep-0001.params`) onto them.
"""

import re

import torch.nn.functional as F
from torch import Tensor, nn


def freeze_batchnorm(module: nn.Module, statistics: bool = True) -> None:
    """Stop the affine parameters of every batch-norm layer of `module` and, when
    `statistics`, also put it in eval mode (running statistics, never updated)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            if statistics:
                m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """The running-statistics momentum of every batch-norm layer of `module`."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def freeze(modules: list[nn.Module]) -> None:
    """Stop gradients to all parameters of `modules`."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


class ResBlock(nn.Module):
    """Two 3x3 convs (`b33`); a 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in, c_mid, c_out, stride=1, first_dilation=None, dilation=1):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = c_in == c_out and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(c_in)
        self.conv_branch2a = nn.Conv2d(
            c_in, c_mid, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(c_mid)
        self.conv_branch2b1 = nn.Conv2d(
            c_mid, c_out, 3, padding=dilation, dilation=dilation, bias=False
        )
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the block output and its pre-activated input relu(bn(x))."""
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(y)))
        return shortcut + y, pre


class BottleneckBlock(nn.Module):
    """1x1 -> dilated 3x3 -> 1x1 (`b131`) with channel dropout, always with a projection."""

    def __init__(self, c_in, c_out, dilation=1, dropout=0.0):
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(c_in)
        self.conv_branch2a = nn.Conv2d(c_in, c_out // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(c_out // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            c_out // 4, c_out // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(c_out // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(c_out // 2, c_out, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        pre = F.relu(self.bn_branch2a(x))
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return self.conv_branch1(pre) + y, pre


class ResNet38(nn.Module):
    """ResNet-38 A1 backbone. Batch-norm affine parameters never train; `frozen_bn=True` (the
    CAM and AffinityNet stages) also keeps the ImageNet running statistics (always eval), while
    `frozen_bn=False` (the authors' train_final.py) normalises with batch statistics in training.

    `forward_as_dict(x)` gives conv4 (512 ch), conv5 (1024 ch) and conv6 (4096 ch), all at
    ceil(H/8) x ceil(W/8). The CAM and AffinityNet heads freeze `frozen_blocks` (conv1a, b2,
    b2_1, b2_2); DeepLab trains them all, conv1a included, as the authors' train_final.py.
    Running statistics update with momentum `bn_momentum` (the authors' resnet38d.py: 3e-4).
    """

    channels = {"conv4": 512, "conv5": 1024, "conv6": 4096}
    stride = 8

    def __init__(self, frozen_bn: bool = True, bn_momentum: float = 3e-4):
        super().__init__()
        self.frozen_bn = frozen_bn
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = ResBlock(64, 128, 128, stride=2)
        self.b2_1 = ResBlock(128, 128, 128)
        self.b2_2 = ResBlock(128, 128, 128)
        self.b3 = ResBlock(128, 256, 256, stride=2)
        self.b3_1 = ResBlock(256, 256, 256)
        self.b3_2 = ResBlock(256, 256, 256)
        self.b4 = ResBlock(256, 512, 512, stride=2)
        self.b4_1 = ResBlock(512, 512, 512)
        self.b4_2 = ResBlock(512, 512, 512)
        self.b4_3 = ResBlock(512, 512, 512)
        self.b4_4 = ResBlock(512, 512, 512)
        self.b4_5 = ResBlock(512, 512, 512)
        self.b5 = ResBlock(512, 512, 1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = ResBlock(1024, 512, 1024, dilation=2)
        self.b6 = BottleneckBlock(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = BottleneckBlock(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        set_bn_momentum(self, bn_momentum)
        freeze_batchnorm(self, self.frozen_bn)

    @property
    def frozen_blocks(self) -> list[nn.Module]:
        return [self.conv1a, self.b2, self.b2_1, self.b2_2]

    def train(self, mode: bool = True):
        super().train(mode)
        freeze_batchnorm(self, self.frozen_bn)
        return self

    def forward_as_dict(self, x: Tensor) -> dict[str, Tensor]:
        x = self.conv1a(x)
        for block in (self.b2, self.b2_1, self.b2_2, self.b3, self.b3_1, self.b3_2):
            x, _ = block(x)
        for block in (self.b4, self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5):
            x, _ = block(x)
        x, conv4 = self.b5(x)
        x, _ = self.b5_1(x)
        x, _ = self.b5_2(x)
        x, conv5 = self.b6(x)
        x, _ = self.b7(x)
        return {"conv4": conv4, "conv5": conv5, "conv6": F.relu(self.bn7(x))}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_as_dict(x)["conv6"]


_BN_SUFFIX = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_var": "running_var",
}
_BLOCK_NAME = re.compile(
    r"(res|bn)(\d)(a|b\d+)_(branch\d[a-z0-9]*)_(weight|gamma|beta|moving_mean|moving_var)"
)


def mxnet_to_torch_name(name: str) -> str | None:
    """Torch name of a published MXNet parameter; None for the ImageNet classifier (linear1000).

    `arg:res2b1_branch2a_weight` -> `b2_1.conv_branch2a.weight`,
    `aux:bn5a_branch2b1_moving_var` -> `b5.bn_branch2b1.running_var`,
    `arg:bn7_gamma` -> `bn7.weight`, `arg:conv1a_weight` -> `conv1a.weight`.
    Raises ValueError for a name that has no place in ResNet-38.
    """
    bare = name.split(":", 1)[-1]
    if bare.startswith("linear1000_"):
        return None
    if bare == "conv1a_weight":
        return "conv1a.weight"
    if bare.startswith("bn7_") and bare[4:] in _BN_SUFFIX:
        return "bn7." + _BN_SUFFIX[bare[4:]]
    match = _BLOCK_NAME.fullmatch(bare)
    if match is None:
        raise ValueError(f"MXNet parameter {name!r} has no counterpart in ResNet-38")
    kind, stage, unit, branch, suffix = match.groups()
    block = f"b{stage}" if unit == "a" else f"b{stage}_{unit[1:]}"
    if kind == "res":
        if suffix != "weight":
            raise ValueError(f"MXNet parameter {name!r}: a conv has only a weight")
        return f"{block}.conv_{branch}.weight"
    if suffix == "weight":
        raise ValueError(f"MXNet parameter {name!r}: batch norm has gamma/beta, not weight")
    return f"{block}.bn_{branch}.{_BN_SUFFIX[suffix]}"
