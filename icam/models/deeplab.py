"""DeepLab-v1 with the LargeFOV head on a stride-8 backbone (the final segmentation stage)."""

import torch.nn.functional as F
from torch import Tensor, nn

from icam.models.cam import parameter_groups, resolve_backbone
from icam.models.resnet38 import freeze

MIN_WIDTH = 128
"""A narrow backbone's head keeps this many channels: with C6/8 (14 for Lite0's 112) the
dropout of half the channels leaves the classifier too little to predict anything but the
background (docs/recipe.md)."""


class DeepLabV1(nn.Module):
    """Backbone conv6 -> 3x3 conv dilation 12 -> BN -> ReLU -> 1x1 conv -> BN -> ReLU ->
    dropout 0.5 -> 1x1 classifier (with bias). Head width `width`, by default C6/8 (512 for
    ResNet-38), and at least `MIN_WIDTH`.

    forward(x) -> N x K x ceil(H/8) x ceil(W/8) logits; the reference upsamples them bilinearly
    (align_corners=True) to the input size before the loss. The whole backbone trains, conv1a
    included (the authors' train_final.py); batch norm everywhere keeps updating its running
    statistics (the head's with momentum 3e-4) but not its affine parameters, which the
    reference never hands to the optimiser.
    """

    def __init__(self, backbone: str | nn.Module = "tiny", num_classes: int = 21,
                 width: int | None = None):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"DeepLabV1: num_classes must be >= 2, got {num_classes}")
        self.backbone = resolve_backbone(backbone)
        c6 = self.backbone.channels["conv6"]
        width = width or max(c6 // 8, MIN_WIDTH)
        self.conv_fov = nn.Conv2d(c6, width, 3, padding=12, dilation=12, bias=False)
        self.bn_fov = nn.BatchNorm2d(width, momentum=3e-4)
        self.conv_fov2 = nn.Conv2d(width, width, 1, bias=False)
        self.bn_fov2 = nn.BatchNorm2d(width, momentum=3e-4)
        self.dropout1 = nn.Dropout(0.5)
        self.cls_conv = nn.Conv2d(width, num_classes, 1)
        self.new_layers = [self.conv_fov, self.conv_fov2, self.cls_conv]
        for layer in self.new_layers:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        freeze([self.bn_fov, self.bn_fov2])

    def forward(self, x: Tensor) -> Tensor:
        f = self.backbone.forward_as_dict(x)["conv6"]
        f = F.relu(self.bn_fov(self.conv_fov(f)))
        f = F.relu(self.bn_fov2(self.conv_fov2(f)))
        return self.cls_conv(self.dropout1(f))

    def parameter_groups(self):
        return parameter_groups(self, self.new_layers)
