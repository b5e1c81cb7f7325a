"""Each loss against a direct implementation of its equation on small inputs."""

import math

import pytest
import torch

from icam import losses
from icam.config import method_config


@pytest.fixture(autouse=True)
def float64():
    """Exact comparisons in double precision, restored for the other test modules."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def direct_bce(p, y):
    # eq. 7 written out: -(1/K) Σ y log p + (1 - y) log(1 - p), then the batch mean
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def all_pairs_fsl(x, a, mu, sigma, radius=None):
    """eq. 9-13 over all ordered pairs (optionally only pairs in a square window)."""
    n, c, h, w = x.shape
    xf = x.reshape(n, c, -1).transpose(1, 2)
    af = a.reshape(n, a.shape[1], -1).transpose(1, 2)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    p = torch.stack([ys.flatten(), xs.flatten()], 1).to(x.dtype)
    diff = p[:, None] - p[None]
    wgt = torch.exp(-diff.square().sum(-1) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    if radius is not None:
        wgt = wgt * (diff.abs().amax(-1) <= radius)
    d = ((xf[:, :, None] - xf[:, None]).abs().sum(-1) / c).clamp(0, 1)
    f = torch.tanh(mu + torch.log((d + 1e-5) / (1 - d + 1e-5)))
    g = 0.5 * (af[:, :, None] - af[:, None]).square().sum(-1)
    return -(wgt * f * g).sum() / (n * h * w)


def test_probs_to_logits_is_the_reference_clamp():
    p = torch.tensor([0.0, 0.25, 1.0])
    e = 1e-3
    expected = torch.log(p * (1 - e) + e) - torch.log(1 - p * (1 - e))
    assert torch.allclose(losses.probs_to_logits(p), expected)
    # at p = 1 the logit is finite: log(1) - log(e)
    assert losses.probs_to_logits(torch.tensor(1.0)).item() == pytest.approx(-math.log(e))


def test_gap_loss_matches_eq_2_3_7():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    s = logits.sum(dim=(2, 3)) / 15  # eq. 3
    y_hat = torch.exp(s) / (torch.exp(s) + 1)  # eq. 2
    expected = direct_bce(y_hat[:, 1:], labels)
    got = losses.pooled_loss(logits, logits.softmax(1), labels, "avg")
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)


def test_gmp_loss_uses_max_probability_with_background_label():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    probs = logits.softmax(1)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = 1e-3
    y_hat = probs.reshape(2, 3, -1).max(-1).values  # eq. 4
    squeezed = y_hat * (1 - e) + e  # the logit clamp, as a probability
    expected = direct_bce(squeezed / (squeezed + 1 - y_hat * (1 - e)),
                          torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    got = losses.pooled_loss(logits, probs, labels, "max")
    assert got.item() == pytest.approx(expected.item(), rel=1e-9)


def test_sampled_mean_matches_importance_weighted_mean():
    # E[a at a pixel drawn with p ∝ a] = Σ a² / Σ a; bound: 5 standard errors
    gen = torch.Generator().manual_seed(3)
    probs = torch.rand(1, 2, 6, 7, generator=gen)
    s = 200_000
    samples = losses.sample_class_probs(probs, s, generator=gen)
    assert samples.shape == (1, 2, s)
    for k in range(2):
        a = probs[0, k].flatten()
        mean = (a * a).sum() / a.sum()
        var = (a * a * a).sum() / a.sum() - mean**2
        assert abs(samples[0, k].mean() - mean) < 5 * math.sqrt(var / s)


def test_zero_activation_pixels_are_never_drawn():
    probs = torch.zeros(1, 1, 4, 4)
    probs[0, 0, 1, 2] = 0.3
    probs[0, 0, 3, 0] = 0.6
    samples = losses.sample_class_probs(probs, 5000, torch.Generator().manual_seed(0))
    assert set(samples.unique().tolist()) == {0.3, 0.6}


def test_sampling_gradient_flows_through_gathered_values_only():
    probs = torch.tensor([[[[0.2, 0.8], [0.0, 0.0]]]], requires_grad=True)
    gen = torch.Generator().manual_seed(5)
    samples = losses.sample_class_probs(probs, 1000, gen)
    samples.sum().backward()
    counts = probs.grad.flatten()
    # d(Σ samples)/da_i = number of times pixel i was drawn
    assert counts.sum().item() == 1000
    assert counts[2].item() == 0 and counts[3].item() == 0
    assert abs(counts[1].item() / 1000 - 0.8) < 0.05


def test_sampling_is_reproducible_from_generator():
    probs = torch.rand(2, 3, 5, 5)
    a = losses.sample_class_probs(probs, 10, torch.Generator().manual_seed(7))
    b = losses.sample_class_probs(probs, 10, torch.Generator().manual_seed(7))
    c = losses.sample_class_probs(probs, 10, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_classification_loss_is_the_lambda_mixture_of_eq_8():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 5, 5)
    probs = logits.softmax(1)
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    pooled = losses.pooled_loss(logits, probs, labels, "max")
    sampled = losses.sampled_loss(probs, labels, 50, torch.Generator().manual_seed(4))
    for lam in (0.0, 0.3, 1.0):
        got = losses.classification_loss(logits, probs, labels, lam, "max", 50,
                                         torch.Generator().manual_seed(4))
        assert got.item() == pytest.approx(((1 - lam) * pooled + lam * sampled).item())


def test_sampled_loss_is_bce_of_the_sampled_values():
    probs = torch.full((1, 3, 2, 2), 1 / 3)
    labels = torch.tensor([[1.0, 0.0]])
    e = 1e-3
    p = (1 / 3) * (1 - e) + e
    q = 1 - (1 / 3) * (1 - e)
    y = torch.tensor(p / (p + q))
    expected = 0.5 * (-torch.log(y) - torch.log(1 - y))
    assert losses.sampled_loss(probs, labels, 4).item() == pytest.approx(expected.item())


def test_equivariance_losses_match_their_definition():
    torch.manual_seed(3)
    cam1, rv1 = torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4)
    cam2, rv2 = torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4)
    er, ecr = losses.equivariance_losses(cam1, rv1, cam2, rv2)
    m = lambda a, b: (a - b).abs().sum() / a.numel()  # noqa: E731
    assert er.item() == pytest.approx((m(cam1, cam2) + m(rv1, rv2) + m(cam1, rv1)
                                       + m(cam2, rv2)).item())
    assert ecr.item() == pytest.approx((m(cam1, rv2) + m(cam2, rv1)).item())


def test_equivariance_resizes_view_one_to_view_two():
    cam1 = torch.ones(1, 2, 8, 8)
    cam2 = torch.ones(1, 2, 3, 3)
    er, ecr = losses.equivariance_losses(cam1, cam1, cam2, cam2)
    assert er.item() == 0 and ecr.item() == 0


@pytest.mark.parametrize("shape,mu,sigma", [((2, 3, 5, 6), 2.5, 5.0), ((1, 3, 7, 4), 0.0, 1.5)])
def test_fsl_with_covering_window_equals_all_pairs(shape, mu, sigma):
    torch.manual_seed(4)
    x = torch.rand(shape)
    logits = torch.randn(shape[0], 4, *shape[2:], requires_grad=True)
    got = losses.feature_similarity_loss(x, logits.softmax(1), mu, sigma, radius=max(shape))
    (g1,) = torch.autograd.grad(got, logits)
    expected = all_pairs_fsl(x, logits.softmax(1), mu, sigma)
    (g2,) = torch.autograd.grad(expected, logits)
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    assert torch.allclose(g1, g2, rtol=1e-8, atol=1e-12)


def test_fsl_default_window_is_ceil_four_sigma():
    torch.manual_seed(5)
    x = torch.rand(1, 3, 9, 9)
    a = torch.randn(1, 3, 9, 9).softmax(1)
    got = losses.feature_similarity_loss(x, a, 1.0, 0.7)  # radius ceil(2.8) = 3
    assert got.item() == pytest.approx(all_pairs_fsl(x, a, 1.0, 0.7, radius=3).item(),
                                       rel=1e-12)
    # pairs just outside the window weigh ~1e-7 of the total, visible in float64
    assert got.item() != pytest.approx(all_pairs_fsl(x, a, 1.0, 0.7, radius=4).item(),
                                       rel=1e-10)


def test_fsl_gradients_for_learned_mu_and_sigma():
    torch.manual_seed(6)
    x = torch.rand(1, 3, 5, 5)
    a = torch.randn(1, 3, 5, 5).softmax(1)
    mu = torch.tensor(0.7, requires_grad=True)
    sigma = torch.tensor(1.3, requires_grad=True)
    got = torch.autograd.grad(losses.feature_similarity_loss(x, a, mu, sigma, radius=5),
                              [mu, sigma])
    expected = torch.autograd.grad(all_pairs_fsl(x, a, mu, sigma), [mu, sigma])
    for g, e in zip(got, expected, strict=True):
        assert g.item() == pytest.approx(e.item(), rel=1e-8)


def test_fsl_signs_follow_section_3_3():
    # identical colours (f < 0): different predictions cost; an edge (f > 0) rewards them
    flat = torch.zeros(1, 3, 1, 2)
    edge = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    assert losses.feature_similarity_loss(flat, a, 2.5, 1.0).item() > 0
    assert losses.feature_similarity_loss(edge, a, 2.5, 1.0).item() < 0


def test_fsl_never_builds_pair_matrices():
    # (HW)² for 300x300 would be 8.1e9 entries; the window's band sums need H·W·W per row
    x = torch.rand(1, 3, 300, 300, dtype=torch.float32)
    a = torch.rand(1, 2, 300, 300, dtype=torch.float32, requires_grad=True)
    loss = losses.feature_similarity_loss(x, a, 2.5, 0.5)
    loss.backward()
    assert a.grad.shape == a.shape


def test_fsl_learnable_parameters_keep_sigma_positive():
    params = losses.FslParameters(mu=1.0, sigma=3.0)
    assert params.sigma.item() == pytest.approx(3.0)
    x, a = torch.rand(1, 3, 6, 6), torch.randn(1, 3, 6, 6).softmax(1)
    losses.feature_similarity_loss(x, a, params.mu, params.sigma).backward()
    assert params.mu.grad is not None and params.log_sigma.grad is not None


def fake_outputs(n, k, h, w, seed):
    gen = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(n, k, h, w, generator=gen, requires_grad=True),
            "rv": torch.randn(n, k, h, w, generator=gen, requires_grad=True)}


def test_cam_losses_sum_their_terms_and_fsl_uses_view_one():
    torch.manual_seed(7)
    image = torch.randn(2, 3, 32, 32)
    out1, out2 = fake_outputs(2, 21, 4, 4, 0), fake_outputs(2, 21, 2, 2, 1)
    labels = torch.zeros(2, 20)
    labels[0, 3] = labels[1, 7] = 1
    method = method_config("icam", num_samples=5)
    parts = losses.cam_losses(out1, out2, image, labels, method, torch.Generator())
    total = parts["cls"] + parts["er"] + parts["ecr"] + parts["fs"]
    assert parts["total"].item() == pytest.approx(total.item())
    feats = losses.denormalized_features(image, (4, 4))
    fs = losses.feature_similarity_loss(feats, out1["logits"].softmax(1), 2.5, 5.0)
    assert parts["fs"].item() == pytest.approx(fs.item())
    parts["total"].backward()
    assert out1["logits"].grad.abs().sum() > 0 and out2["rv"].grad.abs().sum() > 0


def test_cam_losses_without_fsl_and_importance_sampling():
    image = torch.randn(1, 3, 16, 16)
    out1, out2 = fake_outputs(1, 21, 4, 4, 2), fake_outputs(1, 21, 2, 2, 3)
    labels = torch.zeros(1, 20)
    labels[0, 0] = 1
    parts = losses.cam_losses(out1, out2, image, labels, method_config("seam+fsl", fsl=False))
    expected = sum(losses.pooled_loss(o["logits"], o["logits"].softmax(1), labels, "avg")
                   + losses.pooled_loss(o["rv"], o["rv"].softmax(1), labels, "max")
                   for o in (out1, out2))
    assert parts["fs"].item() == 0
    assert parts["cls"].item() == pytest.approx(expected.item())


def test_seam_helpers_on_hand_made_maps():
    cam = torch.tensor([[[[-1.0, 1.0], [3.0, 5.0]]]])
    # relu -> [0, 1, 3, 5]; min 0, max 5: (x - 1e-5)+ / (5 + 1e-5)
    expected = torch.tensor([0.0, 1 - 1e-5, 3 - 1e-5, 5 - 1e-5]) / (5 + 1e-5)
    assert torch.allclose(losses.max_norm(cam).flatten(), expected)
    maps = torch.tensor([[[[0.1, 0.9], [0.5, 0.2]], [[0.3, 0.4], [0.7, 0.6]]]])
    # per-pixel max over channels: [0.3, 0.9, 0.7, 0.6]; lowest quarter (1 value): 0.3
    assert losses.min_pooling_loss(maps).item() == pytest.approx(0.3)
    three = torch.tensor([[[[0.5]], [[0.2]], [[0.6]]]])
    assert losses.max_onehot(three).flatten().tolist() == [0.5, 0.0, 0.6]


def test_seam_formulation_runs_and_reports_no_fsl():
    image = torch.randn(2, 3, 24, 24)
    out1, out2 = fake_outputs(2, 21, 3, 3, 4), fake_outputs(2, 21, 1, 1, 5)
    labels = torch.zeros(2, 20)
    labels[:, 2] = 1
    parts = losses.cam_losses(out1, out2, image, labels, method_config("seam"))
    assert parts["fs"].item() == 0
    assert parts["total"].item() == pytest.approx(
        (parts["cls"] + parts["er"] + parts["ecr"]).item())
    parts["total"].backward()
    assert out1["logits"].grad.abs().sum() > 0


@pytest.mark.parametrize("mu", [0.0, 2.5, -3.0, 60.0])
def test_similarity_f_is_eq_12(mu):
    # tanh(μ + log(d / (1 - d))) with the 1e-5 guard, in float64, at both ends and inside
    d = torch.tensor([0.0, 1e-4, 0.1, 0.5, 0.93, 1.0])
    expected = torch.tanh(mu + torch.log((d.double() + 1e-5) / (1 - d.double() + 1e-5)))
    got = losses.similarity_f(d, mu)
    assert torch.isfinite(got).all()
    assert torch.allclose(got.double(), expected, atol=1e-6)


def test_fsl_stays_float32_under_autocast():
    # bf16 band products would move the loss by ~4e-5 of itself
    torch.manual_seed(8)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float32)
    a = torch.randn(2, 5, 12, 12, dtype=torch.float32).softmax(1)
    plain = losses.feature_similarity_loss(x, a, 2.5, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = losses.feature_similarity_loss(x, a, 2.5, 2.0)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(plain.item(), rel=1e-6)
