"""bfloat16: where it pays, and which ops run in it.

Only the network runs in bf16. `run_network` calls a model under torch's bf16 autocast,
which runs the network's convolutions and matrix products (autocast's lower-precision list:
conv2d, linear, matmul, bmm, ...) in bf16; the ops between them (batch norm, ReLU, ELU,
dropout, pooling, resizing of activations) take those bf16 outputs as they come. The model's
outputs leave it as float32, and everything after that runs in float32: the losses,
softmax and log, the PCM, CAM inference's normalisation, the CRF's inputs and the random walk.
Those functions are also marked `@float32`, so that they stay float32 when called under
autocast (the PCM runs inside the network's forward). On float32 tensors outside autocast
both are no-ops: with bf16 off, the code computes exactly what it computes without them.
"""

from __future__ import annotations

import contextlib
import functools

import torch

DENSE_BACKBONES = ("resnet38", "res2net101")
"""Backbones whose convolutions are wide enough for bf16 to pay on a CPU with bf16 matrix
instructions; Lite0's depthwise convolutions and the tiny backbone stay fp32 on a CPU."""

AUTOCAST_DEVICES = ("cpu", "cuda")
HALF = (torch.bfloat16, torch.float16)


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU has bfloat16 matrix instructions: AMX tiles or AVX512-BF16."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def use_bf16(setting: bool | str, device: torch.device, backbone: str) -> bool:
    """Whether a stage runs its network in bf16: true or false as set; "auto" on CUDA, and on
    a CPU with bf16 matrix instructions for the dense backbones (`DENSE_BACKBONES`)."""
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and backbone in DENSE_BACKBONES and cpu_has_bf16_matmul()


def to_float32(x):
    """`x` with its half-precision tensors (also inside dicts, lists and tuples) as float32."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in HALF else x
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_float32(v) for v in x)
    return x


def run_network(model: torch.nn.Module, x: torch.Tensor, bf16: bool):
    """model(x), under bf16 autocast on x's device when `bf16`; its outputs as float32."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    return to_float32(out)


def float32(fn):
    """`fn` runs in float32 even under autocast: autocast off for the call, half-precision
    tensor arguments cast to float32."""

    @functools.wraps(fn)
    def in_float32(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device_type in AUTOCAST_DEVICES:
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*to_float32(args), **to_float32(kwargs))

    return in_float32
