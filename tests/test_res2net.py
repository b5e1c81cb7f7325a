"""Res2Net-101 v1b 26w×4s: the published file's names and shapes load, the parameter count is
the published one, the hierarchical split of a block, output stride 8."""

import math

import pytest
import torch
import torch.nn.functional as F

from icam.models import build_backbone
from icam.models.deeplab import DeepLabV1
from icam.models.res2net import Bottle2neck, Res2Net
from icam.models.weights import load_pretrained

PUBLISHED_WITH_FC = 45.23e6  # Res2Net-PretrainedModels README: res2net101_v1b_26w_4s, 45.23M


def block_parameters(c_in: int, planes: int, first: bool) -> int:
    """One Bottle2neck's weights by hand: 1x1 in, three 3x3 group convs, 1x1 out, their batch
    norms (scale and shift), and the projected shortcut of a stage's first block."""
    w = math.floor(planes * 26 / 64)
    c_out = 4 * planes
    count = c_in * 4 * w + 2 * 4 * w + 3 * (9 * w * w + 2 * w) + 4 * w * c_out + 2 * c_out
    return count + (c_in * c_out + 2 * c_out if first else 0)


def res2net101_parameters() -> int:
    stem = 9 * (3 * 32 + 32 * 32 + 32 * 64) + 2 * (32 + 32 + 64)
    total, c_in = stem, 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 23, 3), strict=True):
        total += block_parameters(c_in, planes, first=True)
        c_in = 4 * planes
        total += (blocks - 1) * block_parameters(c_in, planes, first=False)
    return total


def test_parameter_count_is_the_published_one():
    model = build_backbone("res2net101")
    count = sum(p.numel() for p in model.parameters())
    assert count == res2net101_parameters()
    fc = 2048 * 1000 + 1000
    assert round((count + fc) / 1e6, 2) == PUBLISHED_WITH_FC / 1e6
    assert round(count / 1e6, 2) == 43.18


PUBLISHED = {  # names and shapes of res2net101_v1b_26w_4s-0812c246.pth (a few of 1,0xx)
    "conv1.0.weight": (32, 3, 3, 3),
    "conv1.1.running_var": (32,),
    "conv1.6.weight": (64, 32, 3, 3),
    "bn1.weight": (64,),
    "layer1.0.conv1.weight": (104, 64, 1, 1),
    "layer1.0.downsample.1.weight": (256, 64, 1, 1),
    "layer1.0.downsample.2.running_mean": (256,),
    "layer2.0.convs.0.weight": (52, 52, 3, 3),
    "layer3.22.convs.2.weight": (104, 104, 3, 3),
    "layer3.22.bns.2.bias": (104,),
    "layer4.0.conv3.weight": (2048, 832, 1, 1),
    "layer4.2.bn3.weight": (2048,),
    "fc.weight": (1000, 2048),
    "fc.bias": (1000,),
}


@pytest.mark.parametrize("target", ["backbone", "deeplab"])
def test_published_names_and_shapes_load_without_renaming(target, tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=g) for name, shape in PUBLISHED.items()}
    state["conv1.1.num_batches_tracked"] = torch.tensor(7)
    path = tmp_path / "res2net101_v1b_26w_4s-0812c246.pth"
    torch.save(state, path)
    model = (build_backbone("res2net101") if target == "backbone"
             else DeepLabV1("res2net101", num_classes=21))
    result = load_pretrained(model, path, strict=False)
    prefix = "" if target == "backbone" else "backbone."
    loaded = {name for name in PUBLISHED if not name.startswith("fc.")}
    assert set(result.loaded) == {prefix + name for name in loaded}
    assert set(result.skipped) == {"fc.weight", "fc.bias"}
    own = model.state_dict()
    for name in loaded:
        assert torch.equal(own[prefix + name], state[name])
    with pytest.raises(ValueError, match="missing"):
        load_pretrained(build_backbone("res2net101"), path, strict=True)


def test_a_block_splits_and_chains_its_groups():
    """y1 = K1(x1), y_i = K_i(x_i + y_{i-1}) for i = 2, 3, y4 = x4; out = relu(conv3(y) + x)
    (K = 3x3 conv -> BN -> ReLU), checked against a direct implementation."""
    torch.manual_seed(0)
    block = Bottle2neck(32, 8, base_width=32, scale=4).eval()  # width 4, in = out = 32
    for bn in [block.bn1, *block.bns, block.bn3]:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 32, 6, 5)

    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0, m.eps)

    with torch.no_grad():
        h = F.relu(bn(block.bn1, F.conv2d(x, block.conv1.weight)))
        parts = [h[:, 4 * i:4 * (i + 1)] for i in range(4)]
        ys, prev = [], None
        for i in range(3):
            inp = parts[i] if i == 0 else parts[i] + prev
            prev = F.relu(bn(block.bns[i], F.conv2d(inp, block.convs[i].weight, padding=1)))
            ys.append(prev)
        expected = F.relu(bn(block.bn3, F.conv2d(torch.cat([*ys, parts[3]], 1),
                                                 block.conv3.weight)) + x)
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_output_stride_8_with_dilated_layers():
    model = Res2Net((1, 1, 2, 1), base_width=4).eval()  # the 101's layout, fewer blocks
    with torch.no_grad():
        out = model.forward_as_dict(torch.randn(1, 3, 65, 97))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "conv4": (1, 512, 9, 13), "conv5": (1, 1024, 9, 13), "conv6": (1, 2048, 9, 13)}
    for layer, dilation in ((model.layer3, 2), (model.layer4, 4)):
        for block in layer:
            assert all(c.dilation == (dilation, dilation) and c.stride == (1, 1)
                       for c in block.convs)


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_batch_norm_frozen_or_trained_as_pmm(frozen_bn):
    model = Res2Net((1, 1, 1, 1), base_width=4, frozen_bn=frozen_bn).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training != frozen_bn for m in norms)
    assert all(p.requires_grad != frozen_bn for m in norms for p in m.parameters())
    before = norms[0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(norms[0].running_mean, before) == frozen_bn
