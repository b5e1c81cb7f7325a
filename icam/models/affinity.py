"""AffinityNet (Ahn & Kwak, as run by SEAM and ICAM): pixel features at stride 8, affinities to
the neighbours within a radius, the training labels and loss, and the random walk.

Pairs follow the reference's half-plane: offsets (dy, dx) with dy = 0, 0 < dx < r, or
0 < dy < r, |dx| < r, and dy^2 + dx^2 < r^2 (34 offsets for r = 5), taken from the "source"
pixels (y, x) with 0 <= y < h - r + 1 and r - 1 <= x < w - r + 1, so that every partner lies
inside the map. Pair arrays are N x P x h' x w' with P offsets, h' = h - r + 1, w' = w - 2r + 2;
flattened (N x P x h'w') they equal the reference's layout.
"""

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icam.models.cam import parameter_groups, resolve_backbone
from icam.models.resnet38 import freeze
from icam.precision import float32


def affinity_offsets(radius: int = 5) -> list[tuple[int, int]]:
    """The (dy, dx) neighbour offsets, in the reference's order."""
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [
        (dy, dx)
        for dy in range(1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    return offsets


def _source_size(h: int, w: int, radius: int) -> tuple[int, int]:
    """(h', w'): the number of source rows and columns of an h x w map."""
    hs, ws = h - radius + 1, w - 2 * (radius - 1)
    if hs < 1 or ws < 1:
        raise ValueError(
            f"feature map {h}x{w} is too small for radius {radius}: "
            f"need height >= {radius} and width >= {2 * radius - 1}"
        )
    return hs, ws


def _pairs(x: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """(source, partners): ... x h' x w' and ... x P x h' x w' views of x (... x h x w)."""
    hs, ws = _source_size(*x.shape[-2:], radius)
    r1 = radius - 1
    source = x[..., :hs, r1 : r1 + ws]
    partners = [x[..., dy : dy + hs, r1 + dx : r1 + dx + ws] for dy, dx in affinity_offsets(radius)]
    return source, torch.stack(partners, dim=-3)


@float32
def affinities(features: Tensor, radius: int = 5) -> Tensor:
    """aff = exp(-mean_c |f_i - f_j|) for each source pixel i and partner j: N x P x h' x w'."""
    hs, ws = _source_size(*features.shape[-2:], radius)
    r1 = radius - 1
    source = features[..., :hs, r1 : r1 + ws]
    aff = [  # one offset at a time: no N x C x P x h' x w' stack of partner features
        torch.exp(-(features[..., dy : dy + hs, r1 + dx : r1 + dx + ws] - source).abs().mean(1))
        for dy, dx in affinity_offsets(radius)
    ]
    return torch.stack(aff, dim=1)


def affinity_labels(labels: Tensor, radius: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """(bg, fg, neg) float masks, N x P x h' x w', from N x h x w stride-8 labels (255 = unsure).

    bg: both pixels background; fg: both the same foreground class; neg: two different classes,
    neither unsure.
    """
    source, partners = _pairs(labels, radius)
    source = source.unsqueeze(1)
    same = source == partners
    valid = (source != 255) & (partners != 255)
    bg = same & (source == 0)
    fg = same & (source != 0) & valid
    neg = ~same & valid
    return bg.float(), fg.float(), neg.float()


@float32
def affinity_loss(aff: Tensor, bg: Tensor, fg: Tensor, neg: Tensor) -> Tensor:
    """bg/4 + fg/4 + neg/2, each the mean of -log(aff) (-log(1 - aff) for neg) over its pairs."""

    def mean(loss, mask):
        return (loss * mask).sum() / (mask.sum() + 1e-5)

    pos = -torch.log(aff + 1e-5)
    return mean(pos, bg) / 4 + mean(pos, fg) / 4 + mean(-torch.log(1 + 1e-5 - aff), neg) / 2


@functools.lru_cache(maxsize=8)
def _transition_layout(h: int, w: int, radius: int, device: torch.device):
    """Where the transition's entries go, for an h x w map: (cols, order, ccol, rows). The
    entries are made as the pairs (i, j), the pairs (j, i) and the diagonal; `cols` holds their
    columns, `order` sorts them by column and then row, `ccol` and `rows` are the CSC indices.
    Cached: a set of few image sizes reuses it (maps of other sizes get their own)."""
    hw = h * w
    index = torch.arange(hw, device=device).view(1, 1, h, w)
    source, partners = _pairs(index, radius)
    src = source[0, 0].expand_as(partners[0, 0]).flatten()
    dst = partners.flatten()
    diagonal = torch.arange(hw, device=device)
    rows, cols = torch.cat([src, dst, diagonal]), torch.cat([dst, src, diagonal])
    order = torch.argsort(cols * hw + rows)
    ccol = torch.cat([cols.new_zeros(1), torch.bincount(cols, minlength=hw).cumsum(0)])
    return cols, order, ccol, rows[order]


@float32
def random_walk_transition(features: Tensor, radius: int = 5, beta: float = 8) -> Tensor:
    """Transition matrices N x hw x hw, sparse (CSC): A = affinity^beta with A_ii = 1 and A
    symmetric over the pairs of `affinities`, normalised so that each column sums to 1. Only
    the pairs within the radius are stored (about 70 per pixel for r = 5, not hw); as CSC, the
    transpose the walk multiplies by is a CSR matrix without reordering anything."""
    n, _, h, w = features.shape
    cols, order, ccol, rows = _transition_layout(h, w, radius, features.device)
    aff = affinities(features, radius).flatten(1)
    a = torch.cat([aff, aff, aff.new_ones(n, h * w)], dim=1).pow(beta)
    a = a / a.new_zeros(n, h * w).index_add_(1, cols, a)[:, cols]  # column sums 1
    with warnings.catch_warnings():  # torch calls its compressed layouts beta
        warnings.filterwarnings("ignore", "Sparse CSC tensor support is in beta")
        return torch.sparse_csc_tensor(ccol.expand(n, -1), rows.expand(n, -1), a[:, order],
                                       (n, h * w, h * w), check_invariants=False)


def _transposed_csr(t: Tensor) -> Tensor:
    """The CSR matrix of tᵀ (hw x hw): a view for CSC (`random_walk_transition`'s), else made."""
    if t.layout == torch.sparse_csc:
        return t.t()
    with warnings.catch_warnings():  # torch calls its CSR layout beta; it is the fast one
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return (t.coalesce() if t.is_sparse else t).t().to_sparse_csr()


@float32
def random_walk(cams: Tensor, transition: Tensor, logt: int = 6) -> Tensor:
    """Propagate cams (N x K x h x w) by transition^(2^logt): cam_j <- sum_i cam_i T_ij.

    Applies the (sparse) T 2^logt times to the K x hw maps instead of powering the hw x hw
    matrix: each step is one product of T's transpose (CSR) with the hw x K maps.
    """
    n, k, h, w = cams.shape
    walked = []
    for b, cam in enumerate(cams.flatten(2).to(transition.dtype)):
        step = _transposed_csr(transition[b])
        v = cam.t()  # hw x K
        for _ in range(2**logt):
            v = step @ v
        walked.append(v.t())
    return torch.stack(walked).view(n, k, h, w)


class AffinityNet(nn.Module):
    """Backbone -> ELU(1x1) reductions of conv4, conv5, conv6 (C4/8, C5/8, C6/16 channels: 64,
    128, 256 for ResNet-38), concatenated -> ELU(1x1) -> N x D x h x w features (D = 448)."""

    def __init__(self, backbone: str | nn.Module = "tiny"):
        super().__init__()
        self.backbone = resolve_backbone(backbone)
        c = self.backbone.channels
        c3, c4, c5 = c["conv4"] // 8, c["conv5"] // 8, c["conv6"] // 16
        self.f8_3 = nn.Conv2d(c["conv4"], c3, 1, bias=False)
        self.f8_4 = nn.Conv2d(c["conv5"], c4, 1, bias=False)
        self.f8_5 = nn.Conv2d(c["conv6"], c5, 1, bias=False)
        self.f9 = nn.Conv2d(c3 + c4 + c5, c3 + c4 + c5, 1, bias=False)
        self.feature_dim = c3 + c4 + c5
        for layer in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(layer.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        self.new_layers = [self.f8_3, self.f8_4, self.f8_5, self.f9]
        freeze(self.backbone.frozen_blocks)

    def forward(self, x: Tensor) -> Tensor:
        d = self.backbone.forward_as_dict(x)
        f3, f4 = F.elu(self.f8_3(d["conv4"])), F.elu(self.f8_4(d["conv5"]))
        f5 = F.elu(self.f8_5(d["conv6"]))
        return F.elu(self.f9(torch.cat([f3, f4, f5], dim=1)))

    def parameter_groups(self):
        return parameter_groups(self, self.new_layers)
