"""A dilated depthwise convolution whose backward pass on CPU costs about what its forward does.

PyTorch's CPU backward of a dilated depthwise convolution is 20-60x slower than its forward
(oneDNN runs the forward, not that backward): in the cpu preset's CAM step the dilated 5x5
depthwise convolutions of Lite0's last blocks took 0.5 of its 0.7 s. Both gradients are
sums of the forward's cost, so this computes them directly (`python -m icam.bench depthwise`
measures both ways; undilated ones keep PyTorch's backward, which is faster for them):

    y[n,c] = sum_{i,j} w[c,i,j] · x[n,c, · + d·i, · + d·j]           (valid, dilation d)
    dL/dx[n,c] = g[n,c] padded by (k-1)·d, convolved with w[c] flipped   (dilation d)
    dL/dw[c,i,j] = sum_{n,y,x} g[n,c,y,x] · x[n,c, y + d·i, x + d·j]

The result equals autograd's up to the order of float sums. CUDA keeps cuDNN's kernels, and
bf16 autocast keeps PyTorch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _DepthwiseConv(torch.autograd.Function):
    """`F.conv2d(x, weight, dilation=dilation, groups=channels)`, stride 1, no padding."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, dilation: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        return F.conv2d(x, weight, dilation=dilation, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        (dh, dw), (kh, kw) = ctx.dilation, weight.shape[-2:]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            ph, pw = (kh - 1) * dh, (kw - 1) * dw
            grad_x = F.conv2d(F.pad(grad, (pw, pw, ph, ph)), weight.flip(-2, -1),
                              dilation=(dh, dw), groups=weight.shape[0])
        if ctx.needs_input_grad[1]:
            h, w = grad.shape[-2:]
            grad_w = torch.stack([
                torch.stack([(x[:, :, dh * i:dh * i + h, dw * j:dw * j + w] * grad).sum((0, 2, 3))
                             for j in range(kw)], dim=-1)
                for i in range(kh)], dim=-2).unsqueeze(1)
        return grad_x, grad_w, None


def depthwise_conv2d(x: Tensor, weight: Tensor, dilation: tuple[int, int]) -> Tensor:
    """A stride-1 depthwise convolution (`weight`: channels x 1 x kh x kw), no padding; on CPU
    in float32 with the backward above, elsewhere (CUDA, autocast) `F.conv2d`."""
    if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return F.conv2d(x, weight, dilation=dilation, groups=weight.shape[0])
    return _DepthwiseConv.apply(x, weight, tuple(dilation))
