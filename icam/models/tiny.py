"""A small CPU backbone with ResNet-38's interface, for the embedded benchmark and the tests.

Same layout as ResNet-38 in miniature: a stem, three stride-2 stages to output stride 8, then two
dilated blocks (dilation 2 and 4) and a final norm + ReLU. The cpu preset starts it from the
`tiny-synthetic` weights (icam.models.tiny_pretrain); either way its batch norm learns
(ResNet-38's is frozen with ImageNet statistics). Batch norm, not GroupNorm: on the synthetic
benchmark the GroupNorm version did not get past the label prior in 150 Adam steps on 32
images, while this one fits them (measured with a plain GAP classifier).
"""

import torch.nn.functional as F
from torch import Tensor, nn


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


class TinyBlock(nn.Module):
    """Pre-activation residual block: norm -> ReLU -> 3x3 conv, twice; 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.norm_a = _norm(c_in)
        self.conv_a = nn.Conv2d(c_in, c_mid, 3, stride, padding=1, bias=False)
        self.norm_b = _norm(c_mid)
        self.conv_b = nn.Conv2d(c_mid, c_out, 3, padding=dilation, dilation=dilation, bias=False)
        self.project = None
        if c_in != c_out or stride != 1:
            self.project = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the block output and its pre-activated input relu(norm(x))."""
        pre = F.relu(self.norm_a(x))
        shortcut = x if self.project is None else self.project(pre)
        y = self.conv_b(F.relu(self.norm_b(self.conv_a(pre))))
        return shortcut + y, pre


class TinyBackbone(nn.Module):
    """Output stride 8; conv4, conv5, conv6 have 4w, 8w and 16w channels (w = `width`).

    `stem` (a stride-2 3x3 conv) is the one frozen block, like ResNet-38's conv1a.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        if width < 1:
            raise ValueError(f"TinyBackbone: width must be >= 1, got {width}")
        w = width
        self.channels = {"conv4": 4 * w, "conv5": 8 * w, "conv6": 16 * w}
        self.conv_stem = nn.Conv2d(3, w, 3, 2, padding=1, bias=False)
        self.b2 = TinyBlock(w, 2 * w, 2 * w, stride=2)
        self.b3 = TinyBlock(2 * w, 4 * w, 4 * w, stride=2)
        self.b4 = TinyBlock(4 * w, 4 * w, 4 * w, dilation=2)
        self.b5 = TinyBlock(4 * w, 4 * w, 8 * w, dilation=2)
        self.b6 = TinyBlock(8 * w, 4 * w, 16 * w, dilation=4)
        self.norm6 = _norm(16 * w)

    @property
    def stem(self) -> nn.Module:
        return self.conv_stem

    @property
    def frozen_blocks(self) -> list[nn.Module]:
        return [self.conv_stem]

    def forward_as_dict(self, x: Tensor) -> dict[str, Tensor]:
        x = self.conv_stem(x)
        x, _ = self.b2(x)
        x, _ = self.b3(x)
        x, _ = self.b4(x)
        x, conv4 = self.b5(x)
        x, conv5 = self.b6(x)
        return {"conv4": conv4, "conv5": conv5, "conv6": F.relu(self.norm6(x))}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_as_dict(x)["conv6"]
