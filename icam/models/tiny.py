"""A small CPU backbone with ResNet-38's interface, for the embedded benchmark and the tests.

Same layout as ResNet-38 in miniature: a stride-2 stem, two more stride-2 blocks to output
stride 8, then three dilated blocks and a final norm + ReLU. `output_stride=4` drops the last
block's stride and doubles every later dilation (the way DeepLab turns a classification net
into a dense one), so the same weights serve both strides. As in ResNet-38, batch-norm affine
parameters never train, and `frozen_bn=True` keeps the pre-trained running statistics.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from icam.models.resnet38 import freeze_batchnorm

OUTPUT_STRIDES = (4, 8)


class TinyBlock(nn.Module):
    """Pre-activation residual block: norm -> ReLU -> 3x3 conv, twice; 1x1 projection shortcut.
    `dilation` = (first conv, second conv)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1)):
        super().__init__()
        d_a, d_b = dilation
        self.norm_a = nn.BatchNorm2d(c_in)
        self.conv_a = nn.Conv2d(c_in, c_mid, 3, stride, padding=d_a, dilation=d_a, bias=False)
        self.norm_b = nn.BatchNorm2d(c_mid)
        self.conv_b = nn.Conv2d(c_mid, c_out, 3, padding=d_b, dilation=d_b, bias=False)
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
    """conv4, conv5, conv6 have 4w, 8w and 16w channels (w = `width`) at `output_stride`.

    `frozen_blocks` (the stem and b2) are frozen by the CAM and AffinityNet heads, like
    ResNet-38's conv1a and b2 blocks.
    """

    def __init__(self, width: int = 16, output_stride: int = 8, frozen_bn: bool = True):
        super().__init__()
        if width < 1:
            raise ValueError(f"TinyBackbone: width must be >= 1, got {width}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"TinyBackbone: output_stride must be 4 or 8, got {output_stride}")
        w, m = width, 8 // output_stride  # m: dilation multiplier after the dropped stride
        self.stride = output_stride
        self.frozen_bn = frozen_bn
        self.channels = {"conv4": 4 * w, "conv5": 8 * w, "conv6": 16 * w}
        self.conv_stem = nn.Conv2d(3, w, 3, 2, padding=1, bias=False)
        self.b2 = TinyBlock(w, 2 * w, 2 * w, stride=2)
        self.b3 = TinyBlock(2 * w, 4 * w, 4 * w, stride=2 if m == 1 else 1, dilation=(1, m))
        self.b4 = TinyBlock(4 * w, 4 * w, 4 * w, dilation=(m, 2 * m))
        self.b5 = TinyBlock(4 * w, 4 * w, 8 * w, dilation=(m, 2 * m))
        self.b6 = TinyBlock(8 * w, 4 * w, 16 * w, dilation=(m, 4 * m))
        self.norm6 = nn.BatchNorm2d(16 * w)
        freeze_batchnorm(self, self.frozen_bn)

    @property
    def frozen_blocks(self) -> list[nn.Module]:
        return [self.conv_stem, self.b2]

    def train(self, mode: bool = True):
        super().train(mode)
        freeze_batchnorm(self, self.frozen_bn)
        return self

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
