"""The CAM stage's losses: ICAM (importance sampling + FSL on SEAM's siamese network) and SEAM.

Shapes: CAM logits and probabilities are N x K x h x w with K = 21 channels, background first;
image-level labels are N x 20 (foreground classes). Equation numbers refer to the paper.
Every loss runs in float32, also under bf16 autocast (`@float32`, icam.precision).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import MethodConfig, TrainConfig
from .precision import float32

LOGIT_EPS = 1e-3
SIAMESE_SCALE = TrainConfig.siamese_scale  # the authors' 0.3


@float32
def cam_probs(logits: torch.Tensor) -> torch.Tensor:
    # eq. 1: a = softmax over the K classes of the logits s
    return torch.softmax(logits, dim=1)


@float32
def probs_to_logits(p: torch.Tensor, eps: float = LOGIT_EPS) -> torch.Tensor:
    """Logit of a probability squeezed into [eps, 1 - eps·(1 - ...)]: the reference's clamp."""
    return torch.log(p * (1 - eps) + eps) - torch.log(1 - p * (1 - eps))


def gap_logits(logits: torch.Tensor) -> torch.Tensor:
    # eq. 3: s_k = (1/HW) sum_ij s_ijk; eq. 2 is the logistic of it (applied inside the BCE)
    return logits.mean(dim=(2, 3))


def gmp_probs(probs: torch.Tensor) -> torch.Tensor:
    # eq. 4: y_k = max_ij a_ijk
    return probs.amax(dim=(2, 3))


@float32
def sample_class_probs(probs: torch.Tensor, num_samples: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance sampling: N x K x S activations at pixels drawn from p_k ∝ a_k.

    Pixels are drawn with replacement; gradients flow through the gathered values, not through
    the draw. A pixel with zero activation is never drawn; a map that is zero everywhere
    (possible only by underflow) is drawn uniformly, which gathers zeros.
    """
    n, k, h, w = probs.shape
    flat = probs.reshape(n * k, h * w)
    weights = flat.detach().float()
    empty = weights.sum(dim=1, keepdim=True) <= 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    # eq. 5-6: (i, j) ~ p_k(I, J | x) = a_ijk / Z_k, then y~_k = a_ijk
    index = torch.multinomial(weights, num_samples, replacement=True, generator=generator)
    return flat.gather(1, index).reshape(n, k, num_samples)


def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # eq. 7: binary cross-entropy averaged over classes (and samples), then over the batch
    return F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits))


def with_background(labels: torch.Tensor) -> torch.Tensor:
    """N x 20 foreground labels -> N x 21 with the background label 1 in front."""
    return torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)


def pooled_loss(logits: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor,
                pooling: str) -> torch.Tensor:
    """L_ce of the pooled prediction y^: GAP on foreground logits or GMP on all probabilities."""
    if pooling == "avg":
        return bce(gap_logits(logits)[:, 1:], labels)
    return bce(probs_to_logits(gmp_probs(probs)), with_background(labels))


def sampled_loss(probs: torch.Tensor, labels: torch.Tensor, num_samples: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """L_ce of the sampled predictions y~ (eq. 6-7), foreground classes, mean over samples."""
    samples = sample_class_probs(probs, num_samples, generator)
    return bce(probs_to_logits(samples[:, 1:]), labels[:, :, None])


@float32
def classification_loss(logits: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor,
                        lam: float, pooling: str, num_samples: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """eq. 8: (1 - λ) L_ce(y, y^) + λ L_ce(y, y~); a term with weight 0 is not computed."""
    loss = logits.new_zeros(())
    if lam < 1:
        loss = loss + (1 - lam) * pooled_loss(logits, probs, labels, pooling)
    if lam > 0:
        loss = loss + lam * sampled_loss(probs, labels, num_samples, generator)
    return loss


@float32
def equivariance_losses(cam1: torch.Tensor, rv1: torch.Tensor, cam2: torch.Tensor,
                        rv2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ICAM's ER and ECR on probabilities; view 1 is resized to view 2's size first."""
    size = cam2.shape[2:]
    cam1 = F.interpolate(cam1, size, mode="bilinear", align_corners=True)
    rv1 = F.interpolate(rv1, size, mode="bilinear", align_corners=True)
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
    er = l1(cam1, cam2) + l1(rv1, rv2) + l1(cam1, rv1) + l1(cam2, rv2)
    ecr = l1(cam1, rv2) + l1(cam2, rv1)
    return er, ecr


def siamese_view(image: torch.Tensor, scale: float = SIAMESE_SCALE) -> torch.Tensor:
    """SEAM's second view: the crop bilinearly resized by `scale`."""
    return F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=True)


def denormalized_features(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """RGB in [0, 1] at the CAM's size: the FSL features x (Sec. 3.3)."""
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    small = F.interpolate(image, size, mode="bilinear", align_corners=True)
    return (small * std + mean).clamp(0, 1)


# --- feature similarity loss (eq. 9-13) ---------------------------------------------------


def similarity_f(d: torch.Tensor, mu) -> torch.Tensor:
    # eq. 12: f(d) = tanh(μ + log r), r = d / (1 - d) with the reference's 1e-5 guard; as
    # tanh z = 1 - 2 / (e^2z + 1): f = 1 - 2 / (e^2μ r² + 1), no log or tanh (and 1 at r² = ∞)
    q = torch.exp(2 * torch.as_tensor(mu, dtype=d.dtype)) * ((d + 1e-5) / (1 - d + 1e-5)).square()
    return 1 - 2 / (q + 1)


def spatial_weight(rho2, sigma):
    # eq. 10: w_ij = exp(-||p_i - p_j||² / (2σ²)) / (2πσ²), rho2 = ||p_i - p_j||²
    return torch.exp(-rho2 / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)


def _window_pair_sums(probs, features, mu, sigma, radius: int, need_mu: bool,
                      need_sigma: bool):
    """(G, Σ_i a_i·G_i, ∂/∂μ, ∂/∂σ) of the window's pair sum (`_WindowedFsl`); the two
    derivatives are None unless asked for."""
    n, k, h, w = probs.shape
    ry, rx = min(radius, h - 1), min(radius, w - 1)
    # per row y: the maps with a channel of ones appended (N × H × (K+1) × W), so that one
    # product gives A_i (the first K channels) and S_i (the last)
    extended = torch.cat([probs, probs.new_ones((n, 1, h, w))], dim=1).transpose(1, 2)
    sums = extended.new_zeros((1 + need_mu + need_sigma, n, h, k + 1, w))
    pixels = features.permute(0, 2, 3, 1)  # N × H × W × C
    x = torch.arange(w, dtype=probs.dtype, device=probs.device)
    dx2 = (x.view(-1, 1) - x).square()  # (x, x') of two rows
    for dy in range(ry + 1):
        rows = h - dy
        # eq. 13, d = ||x_i - x_j||_1 / C clamped to [0, 1], for pixel (y, x) against each
        # (y + dy, x'): N × rows × W × W
        d = torch.cdist(pixels[:, :rows], pixels[:, dy:], p=1).div_(pixels.shape[3]).clamp_(0, 1)
        f = similarity_f(d, mu)
        rho2 = dx2 + dy * dy
        weight = spatial_weight(rho2, sigma) * (dx2 <= rx * rx)  # the window
        if dy == 0:  # each pair once: on its own row a pixel's partners lie to the right
            weight = weight.triu(1)
        coeffs = [weight * f]  # eq. 10 times eq. 12
        if need_mu:  # ∂f/∂μ = 1 - f²
            coeffs.append(weight * (1 - f * f))
        if need_sigma:  # ∂w/∂σ = w·(ρ²/σ³ - 2/σ)
            coeffs.append(weight * f * (rho2 / sigma ** 3 - 2 / sigma))
        band = torch.stack(coeffs)  # sets × N × rows × W × W
        sums[:, :, :rows] += extended[:, dy:] @ band.transpose(-1, -2)  # i from j below
        sums[:, :, dy:] += extended[:, :rows] @ band  # j from i above
    a = extended[:, :, :k]
    pair_sums = (a * (a * sums[..., k:, :] - sums[..., :k, :])).sum(dim=(1, 2, 3, 4))
    grad = (a * sums[0, :, :, k:] - sums[0, :, :, :k]).transpose(1, 2)
    return (grad, pair_sums[0], pair_sums[1] if need_mu else None,
            pair_sums[-1] if need_sigma else None)


class _WindowedFsl(torch.autograd.Function):
    """Σ over ordered pairs in the window of w·f·½||a_i - a_j||², and its gradient.

    With S_i = Σ_j c_ij and A_i = Σ_j c_ij·a_j over the partners j of pixel i (c = w·f), the
    gradient is G_i = a_i·S_i - A_i, ∂/∂a_i = 2·G_i, and the pair sum is Σ_i a_i·G_i. One
    sweep over the window's rows dy = 0..r (on row 0 the partners to the right) gets them:
    the pairs between image rows y and y + dy form a W×W band matrix per row, so the row's
    two sums are two batched matrix products; a learned μ or σ adds the coefficients of
    ∂(w·f)/∂μ and ∂(w·f)/∂σ as further bands, whose pair sums are their gradients. Memory is
    O(N·H·W·W) per window row, never the (HW)² pair matrices. Float32 even under autocast
    (`feature_similarity_loss` is `@float32`: `torch.cdist` takes no bfloat16 on a CPU).
    """

    @staticmethod
    def forward(ctx, probs, features, mu, sigma, radius):
        need = ctx.needs_input_grad
        grad, total, dmu, dsigma = _window_pair_sums(
            probs, features, mu.detach(), sigma.detach(), radius, need[2], need[3])
        ctx.save_for_backward(grad, total if dmu is None else dmu,
                              total if dsigma is None else dsigma)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad, dmu, dsigma = ctx.saved_tensors
        need = ctx.needs_input_grad
        return (2 * grad * grad_output if need[0] else None, None,
                dmu * grad_output if need[2] else None,
                dsigma * grad_output if need[3] else None, None)


@float32
def feature_similarity_loss(features: torch.Tensor, probs: torch.Tensor, mu=2.5, sigma=5.0,
                            radius: int | None = None) -> torch.Tensor:
    """FSL (eq. 9-13) with the authors' normalisation.

    features: N x C x H x W in [0, 1] (treated as constants); probs: N x K x H x W.
    The pair sum runs over a square window of `radius` (default ceil(4σ)), exact when the
    window covers the map, and is divided by N·H·W (reference-facts.md), not by (HW)².
    `mu` and `sigma` may be tensors that require gradients (early ICAM learns them).
    """
    if features.shape[0] != probs.shape[0] or features.shape[2:] != probs.shape[2:]:
        raise ValueError(f"features {tuple(features.shape)} and probs {tuple(probs.shape)} "
                         "must share batch and spatial sizes")
    mu = torch.as_tensor(mu, dtype=probs.dtype, device=probs.device)
    sigma = torch.as_tensor(sigma, dtype=probs.dtype, device=probs.device)
    if radius is None:
        radius = math.ceil(4 * float(sigma.detach()))
    n, _, h, w = probs.shape
    features = features.detach().to(probs.dtype).clamp(0, 1)
    pair_sum = _WindowedFsl.apply(probs, features, mu, sigma, int(radius))
    # eq. 9: L_fs = -Σ_ij w_ij g(a_i, a_j) f(d(x_i, x_j)), normalised by N·H·W
    return -pair_sum / (n * h * w)


class FslParameters(torch.nn.Module):
    """Learnable μ and σ (σ through its logarithm, so it stays positive): early ICAM."""

    def __init__(self, mu: float = 2.5, sigma: float = 5.0):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.tensor(float(mu)))
        self.log_sigma = torch.nn.Parameter(torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()


# --- SEAM's own formulation (the `seam` baseline) -------------------------------------------


def max_norm(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SEAM's per-map normalisation: ReLU, then (x - min - eps)+ / (max - min + eps)."""
    cam = F.relu(cam)
    lo = cam.amin(dim=(2, 3), keepdim=True)
    hi = cam.amax(dim=(2, 3), keepdim=True)
    return F.relu(cam - lo - eps) / (hi - lo + eps)


def min_pooling_loss(cam: torch.Tensor) -> torch.Tensor:
    """SEAM: mean of the ReLU'd lowest quarter of the per-pixel max over channels."""
    n, _, h, w = cam.shape
    k = h * w // 4
    low = cam.amax(dim=1).reshape(n, -1).topk(k, dim=-1, largest=False).values
    return F.relu(low).sum() / (k * n)


def max_onehot(cam: torch.Tensor) -> torch.Tensor:
    """Keep the background channel and, per pixel, only the largest foreground value."""
    fg = cam[:, 1:]
    fg = torch.where(fg == fg.amax(dim=1, keepdim=True), fg, torch.zeros_like(fg))
    return torch.cat([cam[:, :1], fg], dim=1)


@float32
def seam_losses(out1: dict, out2: dict, image1: torch.Tensor, image2: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """SEAM's CVPR 2020 losses (GAP, ER on foreground, ECR with top-20% mining, min pooling)."""
    mask = with_background(labels)[:, :, None, None]

    def upsampled(out, image):
        size = image.shape[2:]
        cam = F.interpolate(out["logits"], size, mode="bilinear", align_corners=True)
        rv = F.interpolate(out["rv"], size, mode="bilinear", align_corners=True)
        return cam, rv

    cam1, rv1 = upsampled(out1, image1)
    cam2, rv2 = upsampled(out2, image2)
    cls = 0.5 * (bce(gap_logits(cam1)[:, 1:], labels) + bce(gap_logits(cam2)[:, 1:], labels))
    rvmin = 0.5 * (min_pooling_loss((rv1 * mask)[:, 1:]) + min_pooling_loss((rv2 * mask)[:, 1:]))
    size = cam2.shape[2:]
    cam1 = F.interpolate(max_norm(cam1), size, mode="bilinear", align_corners=True) * mask
    rv1 = F.interpolate(max_norm(rv1), size, mode="bilinear", align_corners=True) * mask
    cam2 = max_norm(cam2) * mask
    rv2 = max_norm(rv2) * mask
    er = (cam1[:, 1:] - cam2[:, 1:]).abs().mean()
    cam1 = torch.cat([1 - cam1[:, 1:].amax(dim=1, keepdim=True), cam1[:, 1:]], dim=1)
    cam2 = torch.cat([1 - cam2[:, 1:].amax(dim=1, keepdim=True), cam2[:, 1:]], dim=1)
    n, k, h, w = cam2.shape
    top = int(k * h * w * 0.2)

    def hard_mean(t):
        return t.reshape(n, -1).topk(top, dim=-1).values.mean()

    ecr = hard_mean((max_onehot(cam2.detach()) - rv1).abs()) + \
        hard_mean((max_onehot(cam1.detach()) - rv2).abs())
    loss_cls = cls + rvmin
    zero = cls.new_zeros(())
    return {"total": loss_cls + er + ecr, "cls": loss_cls, "er": er, "ecr": ecr, "fs": zero}


# --- the CAM stage's total loss ----------------------------------------------------------


@float32
def cam_losses(out1: dict, out2: dict, image1: torch.Tensor, labels: torch.Tensor,
               method: MethodConfig, generator: torch.Generator | None = None,
               fsl_params: FslParameters | None = None,
               image2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L = L_cls + L_er + L_ecr + L_fs (weights 1) for the two siamese views.

    out1, out2: CamNet outputs ({"logits", "rv"}) for view 1 (`image1`, normalised) and view
    2 (`siamese_view(image1)`, passed as `image2` or recomputed); labels: N x 20.
    """
    if method.formulation == "seam":
        return seam_losses(out1, out2, image1,
                           image2 if image2 is not None else siamese_view(image1), labels)
    cam1, cam2 = cam_probs(out1["logits"]), cam_probs(out2["logits"])
    rv1, rv2 = cam_probs(out1["rv"]), cam_probs(out2["rv"])
    cls = sum(classification_loss(out["logits"], cam, labels, method.lam, method.pooling,
                                  method.num_samples, generator)
              for out, cam in ((out1, cam1), (out2, cam2)))
    # PCM branch: GMP of the refined probabilities, all classes, weight 1
    cls = cls + sum(pooled_loss(out["rv"], rv, labels, method.rv_pooling)
                    for out, rv in ((out1, rv1), (out2, rv2)))
    fs = cam1.new_zeros(())
    if method.fsl:
        mu, sigma = method.mu, method.sigma
        if fsl_params is not None:
            mu, sigma = fsl_params.mu, fsl_params.sigma
        features = denormalized_features(image1, cam1.shape[2:])
        fs = feature_similarity_loss(features, cam1, mu, sigma)
    er, ecr = equivariance_losses(cam1, rv1, cam2, rv2)
    return {"total": cls + er + ecr + fs, "cls": cls, "er": er, "ecr": ecr, "fs": fs}


@float32
def cam_probabilities(out: dict, formulation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The maps inference averages: ICAM's softmax CAM and refined CAM (eq. 1), or SEAM's
    max-normalised CAM and its raw PCM output (SEAM infers from the latter)."""
    if formulation == "seam":
        return max_norm(out["logits"]), out["rv"]
    return cam_probs(out["logits"]), cam_probs(out["rv"])
