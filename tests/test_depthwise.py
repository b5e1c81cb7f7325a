"""The dilated depthwise convolution with its own CPU backward (icam.models.depthwise)."""

import pytest
import torch
import torch.nn.functional as F

from icam.models.depthwise import depthwise_conv2d
from icam.models.efficientnet_lite import SameConv2d


def direct(x: torch.Tensor, weight: torch.Tensor, dilation: tuple[int, int]) -> torch.Tensor:
    """y[n,c,u,v] = sum_{i,j} w[c,i,j] x[n,c,u + d_h i, v + d_w j], written out."""
    (dh, dw), (kh, kw) = dilation, weight.shape[-2:]
    h, w = x.shape[-2] - (kh - 1) * dh, x.shape[-1] - (kw - 1) * dw
    y = torch.zeros(x.shape[0], x.shape[1], h, w, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, dh * i:dh * i + h, dw * j:dw * j + w]
            y += weight[:, 0, i, j].view(1, -1, 1, 1) * window
    return y


@pytest.mark.parametrize("kernel,dilation", [((3, 3), (2, 2)), ((5, 5), (2, 2)), ((3, 5), (3, 1))])
def test_forward_is_the_sum_and_both_gradients_pass_finite_differences(kernel, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 13, 14, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, *kernel, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(depthwise_conv2d(x, weight, dilation), direct(x, weight, dilation))
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv2d(a, b, dilation), (x, weight))


def test_gradients_match_the_direct_sum_in_float32_channels_last():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 16, 20, 20, generator=g).to(memory_format=torch.channels_last)
    weight = torch.randn(16, 1, 5, 5, generator=g)
    grad = torch.randn(4, 16, 12, 12, generator=g)
    grads = []
    for fn in (depthwise_conv2d, direct):
        a, b = x.clone().requires_grad_(), weight.clone().requires_grad_()
        fn(a, b, (2, 2)).backward(grad)
        grads.append((a.grad, b.grad))
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_lite0s_dilated_layer_takes_it_and_gives_conv2ds_result():
    conv = SameConv2d(8, 8, 5, dilation=2, groups=8)
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    y = conv(x)
    reference = F.conv2d(F.pad(x, (4, 4, 4, 4)), conv.weight, dilation=2, groups=8)
    assert y.grad_fn.name().endswith("_DepthwiseConvBackward")
    torch.testing.assert_close(y, reference)


def test_under_cpu_autocast_it_leaves_the_convolution_to_pytorch():
    conv = SameConv2d(8, 8, 3, dilation=2, groups=8)
    x = torch.randn(1, 8, 10, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and "_DepthwiseConv" not in y.grad_fn.name()
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(conv.weight.grad).all()
