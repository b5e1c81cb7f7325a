"""The CAM network: a backbone, the 1x1 classifier fc8, and SEAM's pixel correlation module."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icam.models import build_backbone
from icam.models.resnet38 import freeze
from icam.precision import float32


def resolve_backbone(backbone: str | nn.Module) -> nn.Module:
    """A backbone module from its name ("resnet38" | "tiny") or the module itself."""
    return backbone if isinstance(backbone, nn.Module) else build_backbone(backbone)


def parameter_groups(model: nn.Module, new_layers: list[nn.Module]):
    """(pretrained weights, pretrained biases, new weights, new biases): trainable params only.

    The reference trains these with lr, 2 lr (no decay), 10 lr and 20 lr (no decay).
    """
    new_ids = {id(p) for layer in new_layers for p in layer.parameters()}
    groups = ([], [], [], [])
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[2 * (id(p) in new_ids) + name.endswith("bias")].append(p)
    return groups


@float32
def seam_normalised_cam(logits: Tensor) -> Tensor:
    """SEAM's PCM input: per-class max-normalised ReLU CAM, background = 1 - max foreground,
    and each pixel keeps only its largest foreground class (no gradient)."""
    with torch.no_grad():
        cam = F.relu(logits)
        peak = cam.amax(dim=(2, 3), keepdim=True) + 1e-5
        cam = F.relu(cam - 1e-5) / peak
        fg_max = cam[:, 1:].amax(dim=1, keepdim=True)
        fg = torch.where(cam[:, 1:] < fg_max, torch.zeros_like(cam[:, 1:]), cam[:, 1:])
        return torch.cat([1 - fg_max, fg], dim=1)


PCM_COLUMNS = 64
"""Without gradients on a CPU, the affinity matrix is made this many columns at a time: each
block is used while it is still in the core's cache (`python -m icam.bench pcm`)."""


def pcm(cam: Tensor, features: Tensor) -> Tensor:
    """Pixel correlation module: cam (N,K,h,w) refined by the affinity of L2-normed features.

    aff_ij = relu(f_i . f_j), normalised so that each column j sums to 1; rv_j = sum_i cam_i aff_ij.
    A row of ones under the K maps makes the column sums part of the same product, which
    divides the K x hw result rather than the hw x hw affinities. Runs in float32 even under
    autocast; without gradients on a CPU, in blocks of `PCM_COLUMNS` columns.
    """
    n, k, h, w = cam.shape
    with torch.autocast(cam.device.type, enabled=False):
        f = features.float().flatten(2)
        f = f / (f.norm(dim=1, keepdim=True) + 1e-5)
        x = torch.cat([cam.float().flatten(2), f.new_ones(n, 1, h * w)], dim=1)
        blocks = cam.device.type == "cpu" and not (
            torch.is_grad_enabled() and (cam.requires_grad or features.requires_grad))
        y = _affinity_product(x, f, PCM_COLUMNS if blocks else h * w)
        return (y[:, :k] / (y[:, k:] + 1e-5)).view(n, k, h, w)


def _affinity_product(x: Tensor, f: Tensor, columns: int) -> Tensor:
    """x @ relu(fᵀf) (N x K' x hw), `columns` columns of the hw x hw affinities at a time."""
    hw = f.shape[2]
    if columns >= hw:  # relu in place: the product itself is not needed for its gradient
        return x @ torch.relu_(f.transpose(1, 2) @ f)
    out = x.new_empty(*x.shape)
    for start in range(0, hw, columns):
        block = torch.relu_(f.transpose(1, 2) @ f[:, :, start:start + columns])
        torch.bmm(x, block, out=out[:, :, start:start + columns])
    return out


class CamNet(nn.Module):
    """Backbone -> dropout 0.5 -> fc8 (1x1, no bias) logits, plus PCM-refined CAMs.

    forward(x) -> {"logits": N x K x h x w, "rv": N x K x h x w}, h = ceil(H/8).
    pcm_source="logits" (ICAM): rv = PCM(logits), with gradients.
    pcm_source="seam": rv = PCM(seam_normalised_cam(logits)), as in SEAM.
    PCM widths are C4/8, C5/8 and their sum (64, 128, 192 for ResNet-38).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "tiny",
        num_classes: int = 21,
        pcm_source: str = "logits",
    ):
        super().__init__()
        if pcm_source not in ("logits", "seam"):
            raise ValueError(f"CamNet: pcm_source must be 'logits' or 'seam', got {pcm_source!r}")
        if num_classes < 2:
            raise ValueError(f"CamNet: num_classes must be >= 2, got {num_classes}")
        self.pcm_source = pcm_source
        self.backbone = resolve_backbone(backbone)
        c = self.backbone.channels
        c4, c5 = c["conv4"] // 8, c["conv5"] // 8
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(c["conv6"], num_classes, 1, bias=False)
        self.f8_3 = nn.Conv2d(c["conv4"], c4, 1, bias=False)
        self.f8_4 = nn.Conv2d(c["conv5"], c5, 1, bias=False)
        self.f9 = nn.Conv2d(3 + c4 + c5, c4 + c5, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        self.new_layers = [self.fc8, self.f8_3, self.f8_4, self.f9]
        freeze(self.backbone.frozen_blocks)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        d = self.backbone.forward_as_dict(x)
        logits = self.fc8(self.dropout7(d["conv6"]))
        size = logits.shape[2:]
        image = F.interpolate(x, size, mode="bilinear", align_corners=True)
        f3 = F.relu(self.f8_3(d["conv4"].detach()))
        f4 = F.relu(self.f8_4(d["conv5"].detach()))
        features = self.f9(torch.cat([image, f3, f4], dim=1))
        source = logits if self.pcm_source == "logits" else seam_normalised_cam(logits)
        return {"logits": logits, "rv": pcm(source, features)}

    def parameter_groups(self):
        return parameter_groups(self, self.new_layers)
