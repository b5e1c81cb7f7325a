"""Models: ResNet-38 layout and weights, the MXNet reader, PCM, AffinityNet, DeepLab-v1."""

import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icam.models import ResNet38, TinyBackbone, build_backbone
from icam.models import cam as cam_module
from icam.models.affinity import (
    AffinityNet,
    affinities,
    affinity_labels,
    affinity_loss,
    affinity_offsets,
    random_walk,
    random_walk_transition,
)
from icam.models.cam import CamNet, pcm, seam_normalised_cam
from icam.models.deeplab import DeepLabV1
from icam.models.mxnet_params import read_ndarray_list
from icam.models.resnet38 import mxnet_to_torch_name
from icam.models.weights import load_pretrained

# ---------------------------------------------------------------- helpers


def write_params(path, arrays, version="v2"):
    """Independent writer of MXNet's NDArray-list format; a value of None writes an empty array."""
    flags = {
        np.dtype("float32"): 0,
        np.dtype("float64"): 1,
        np.dtype("float16"): 2,
        np.dtype("uint8"): 3,
        np.dtype("int32"): 4,
        np.dtype("int8"): 5,
        np.dtype("int64"): 6,
    }
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for a in arrays.values():
        shape = () if a is None else a.shape
        if version == "legacy":
            out.append(struct.pack(f"<I{len(shape)}I", len(shape), *shape))
        else:
            if version == "v2":
                out.append(struct.pack("<Ii", 0xF993FAC9, 0))
            else:
                out.append(struct.pack("<I", 0xF993FAC8))
            out.append(struct.pack(f"<i{len(shape)}q", len(shape), *shape))
        if a is None:
            continue
        out.append(struct.pack("<iii", 1, 0, flags[a.dtype]))
        out.append(np.ascontiguousarray(a).tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        out.append(struct.pack("<Q", len(name)) + name.encode("ascii"))
    path.write_bytes(b"".join(out))


def published_resnet38_names():
    """Every name of `ilsvrc-cls_rna-a1_cls1000_ep-0001.params`, from MXNet's naming scheme."""
    units = {2: 3, 3: 3, 4: 6, 5: 3, 6: 1, 7: 1}
    names = ["arg:conv1a_weight", "arg:linear1000_weight", "arg:linear1000_bias"]

    def bn(prefix):
        return [
            f"arg:{prefix}_gamma",
            f"arg:{prefix}_beta",
            f"aux:{prefix}_moving_mean",
            f"aux:{prefix}_moving_var",
        ]

    for stage, count in units.items():
        branches = ["branch2a", "branch2b1"] + (["branch2b2"] if stage >= 6 else [])
        for i in range(count):
            unit = "a" if i == 0 else f"b{i}"
            for branch in branches:
                names.append(f"arg:res{stage}{unit}_{branch}_weight")
                names += bn(f"bn{stage}{unit}_{branch}")
            if i == 0:
                names.append(f"arg:res{stage}{unit}_branch1_weight")
    return names + bn("bn7")


def naive_pcm(cam, feat):
    """PCM by explicit loops over pixel pairs (float64)."""
    n, k, h, w = cam.shape
    cam, feat = cam.double().reshape(n, k, -1), feat.double().reshape(n, feat.shape[1], -1)
    out = torch.zeros_like(cam)
    for b in range(n):
        f = [feat[b, :, i] / (feat[b, :, i].norm() + 1e-5) for i in range(h * w)]
        for j in range(h * w):
            col = [max(float(f[i] @ f[j]), 0.0) for i in range(h * w)]
            total = sum(col) + 1e-5
            for i in range(h * w):
                out[b, :, j] += cam[b, :, i] * col[i] / total
    return out.reshape(n, k, h, w)


def naive_seam_cam(logits):
    """SEAM's cam_d_norm written pixel by pixel."""
    n, k, h, w = logits.shape
    relu = logits.double().clamp(min=0)
    out = torch.zeros_like(relu)
    for b in range(n):
        for c in range(1, k):
            peak = relu[b, c].max() + 1e-5
            out[b, c] = (relu[b, c] - 1e-5).clamp(min=0) / peak
        for y in range(h):
            for x in range(w):
                best = max(float(out[b, c, y, x]) for c in range(1, k))
                for c in range(1, k):
                    if out[b, c, y, x] < best:
                        out[b, c, y, x] = 0
                out[b, 0, y, x] = 1 - best
    return out


@pytest.fixture(scope="module")
def resnet38():
    torch.manual_seed(0)
    return ResNet38()


# ---------------------------------------------------------------- ResNet-38 layout

# (MXNet name, torch name, shape), written out from the published network's definition.
PUBLISHED = [
    ("arg:conv1a_weight", "conv1a.weight", (64, 3, 3, 3)),
    ("arg:res2a_branch1_weight", "b2.conv_branch1.weight", (128, 64, 1, 1)),
    ("arg:res2a_branch2a_weight", "b2.conv_branch2a.weight", (128, 64, 3, 3)),
    ("arg:bn2a_branch2a_gamma", "b2.bn_branch2a.weight", (64,)),
    ("aux:bn2b1_branch2b1_moving_mean", "b2_1.bn_branch2b1.running_mean", (128,)),
    ("arg:res3b2_branch2b1_weight", "b3_2.conv_branch2b1.weight", (256, 256, 3, 3)),
    ("arg:res4b5_branch2b1_weight", "b4_5.conv_branch2b1.weight", (512, 512, 3, 3)),
    ("arg:res5a_branch2b1_weight", "b5.conv_branch2b1.weight", (1024, 512, 3, 3)),
    ("arg:res5b2_branch2a_weight", "b5_2.conv_branch2a.weight", (512, 1024, 3, 3)),
    ("arg:res6a_branch2a_weight", "b6.conv_branch2a.weight", (512, 1024, 1, 1)),
    ("arg:res6a_branch2b2_weight", "b6.conv_branch2b2.weight", (2048, 1024, 1, 1)),
    ("arg:bn6a_branch2b2_beta", "b6.bn_branch2b2.bias", (1024,)),
    ("arg:res7a_branch1_weight", "b7.conv_branch1.weight", (4096, 2048, 1, 1)),
    ("arg:res7a_branch2b1_weight", "b7.conv_branch2b1.weight", (2048, 1024, 3, 3)),
    ("aux:bn7a_branch2a_moving_var", "b7.bn_branch2a.running_var", (2048,)),
    ("arg:bn7_gamma", "bn7.weight", (4096,)),
    ("aux:bn7_moving_mean", "bn7.running_mean", (4096,)),
]


def test_resnet38_names_and_shapes_follow_published_checkpoint(resnet38):
    state = resnet38.state_dict()
    for mx_name, torch_name, shape in PUBLISHED:
        assert mxnet_to_torch_name(mx_name) == torch_name
        assert tuple(state[torch_name].shape) == shape, torch_name
    mapped = [mxnet_to_torch_name(n) for n in published_resnet38_names()]
    assert mapped.count(None) == 2  # linear1000 weight and bias
    mapped = [n for n in mapped if n is not None]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) == {k for k in state if not k.endswith("num_batches_tracked")}


def test_mxnet_name_outside_resnet38_is_rejected():
    for bad in ("arg:fc8_weight", "arg:res2a_branch2a_gamma", "arg:bn2a_branch2a_weight"):
        with pytest.raises(ValueError, match="fc8|gamma|weight"):
            mxnet_to_torch_name(bad)


def test_output_stride_and_channels(resnet38):
    with torch.no_grad():
        out = resnet38.eval().forward_as_dict(torch.randn(1, 3, 20, 36))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "conv4": (1, 512, 3, 5),
        "conv5": (1, 1024, 3, 5),
        "conv6": (1, 4096, 3, 5),
    }
    assert resnet38.channels == {"conv4": 512, "conv5": 1024, "conv6": 4096}
    tiny = TinyBackbone(width=4)
    out = tiny.forward_as_dict(torch.randn(2, 3, 70, 45))
    for key, c in (("conv4", 16), ("conv5", 32), ("conv6", 64)):
        assert tuple(out[key].shape) == (2, c, 9, 6) and tiny.channels[key] == c
    dense = TinyBackbone(width=4, output_stride=4)  # 70 -> 35 -> 18 -> 18 rows
    assert dense.forward_as_dict(torch.randn(1, 3, 70, 45))["conv6"].shape == (1, 64, 18, 12)
    assert dense.stride == 4 and tiny.stride == 8 == resnet38.stride
    assert dense.state_dict().keys() == tiny.state_dict().keys()  # the same weights serve both
    assert dense.b6.conv_b.dilation == (8, 8) and tiny.b6.conv_b.dilation == (4, 4)
    assert isinstance(build_backbone("tiny"), TinyBackbone)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="output stride 8"):
        build_backbone("resnet38", output_stride=4)
    with pytest.raises(ValueError, match="output_stride"):
        TinyBackbone(output_stride=16)


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_tiny_batch_norm_keeps_or_updates_its_statistics_but_never_trains(frozen_bn):
    torch.manual_seed(3)
    model = TinyBackbone(width=4, frozen_bn=frozen_bn).train()
    before = model.b4.norm_a.running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 3 + 1).sum().backward()
    assert torch.equal(before, model.b4.norm_a.running_mean) == frozen_bn
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(p.grad is None and not p.requires_grad
                         for m in norms for p in m.parameters())


def test_resnet38_frozen_blocks_and_batchnorm(resnet38):
    model = CamNet(resnet38)
    model.train()
    bns = [m for m in resnet38.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 15 * 2 + 2 * 3 + 1 and not any(m.training for m in bns)
    assert model.dropout7.training and resnet38.b7.dropout_2b2.training
    before = resnet38.b3.bn_branch2a.running_mean.clone()
    out = model(torch.randn(1, 3, 16, 16))
    (out["logits"].sum() + out["rv"].sum()).backward()
    assert torch.equal(before, resnet38.b3.bn_branch2a.running_mean)
    for block in (resnet38.conv1a, resnet38.b2, resnet38.b2_1, resnet38.b2_2):
        assert all(p.grad is None and not p.requires_grad for p in block.parameters())
    assert all(m.weight.grad is None and m.bias.grad is None for m in bns)
    assert resnet38.b3.conv_branch2a.weight.grad.abs().sum() > 0
    groups = model.parameter_groups()
    assert groups[1] == [] and groups[3] == []  # ResNet-38 and the CAM head have no trainable bias
    model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- MXNet reader and loading


@pytest.mark.parametrize("version", ["v2", "v1", "legacy"])
def test_mxnet_reader_round_trip(tmp_path, version):
    rng = np.random.default_rng(0)
    arrays = {
        "arg:conv1a_weight": rng.standard_normal((64, 3, 3, 3)).astype(np.float32),
        "arg:res2a_branch2a_weight": rng.standard_normal((128, 64, 3, 3)).astype(np.float32),
        "aux:bn7_moving_mean": rng.standard_normal(4096).astype(np.float32),
        "arg:half": rng.standard_normal((2, 3)).astype(np.float16),
        "arg:ints": np.arange(-3, 3, dtype=np.int64).reshape(3, 2),
        "arg:empty": None,
    }
    path = tmp_path / "tiny.params"
    write_params(path, arrays, version)
    loaded = read_ndarray_list(path)
    assert list(loaded) == [k for k, v in arrays.items() if v is not None]
    for name, array in loaded.items():
        assert array.dtype == arrays[name].dtype
        np.testing.assert_array_equal(array, arrays[name])
    shapes = {t: s for _, t, s in PUBLISHED}
    for name in ("arg:conv1a_weight", "arg:res2a_branch2a_weight", "aux:bn7_moving_mean"):
        assert loaded[name].shape == shapes[mxnet_to_torch_name(name)]


def test_mxnet_reader_rejects_bad_files(tmp_path):
    path = tmp_path / "bad.params"
    path.write_bytes(struct.pack("<QQ", 0x113, 0))
    with pytest.raises(ValueError, match=r"bad\.params.*magic"):
        read_ndarray_list(path)
    write_params(path, {"arg:x": np.zeros(5, np.float32)})
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"bad\.params.*ends early"):
        read_ndarray_list(path)


def test_params_file_must_cover_resnet38(tmp_path, resnet38):
    path = tmp_path / "partial.params"
    write_params(path, {"arg:conv1a_weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"partial\.params.*missing: \[b2\.bn_branch2a\.bias"):
        load_pretrained(resnet38, path)
    with pytest.raises(ValueError, match="ResNet-38 only"):
        load_pretrained(CamNet("tiny"), path)


def test_params_load_fills_every_backbone_tensor(tmp_path, monkeypatch, resnet38):
    import icam.models.weights as weights

    names = published_resnet38_names()
    state = resnet38.state_dict()
    arrays = {}
    for i, name in enumerate(names):
        target = mxnet_to_torch_name(name)
        shape = (1000, 4096) if target is None else tuple(state[target].shape)
        arrays[name] = np.full(shape, i, dtype=np.float32)
    monkeypatch.setattr(weights, "read_ndarray_list", lambda path: arrays)
    model = CamNet(resnet38)
    (tmp_path / "imagenet.params").write_bytes(b"")  # its content comes from the patched reader
    result = load_pretrained(model, tmp_path / "imagenet.params")
    assert result.skipped == ["arg:linear1000_weight", "arg:linear1000_bias"]
    assert set(result.missing) == {"fc8.weight", "f8_3.weight", "f8_4.weight", "f9.weight"}
    for i, name in enumerate(names):
        target = mxnet_to_torch_name(name)
        if target is not None:
            value = model.state_dict()["backbone." + target]
            assert value.min() == value.max() == i, name


def test_pth_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    source = CamNet("tiny")
    path = tmp_path / "cam.pth"
    torch.save(source.state_dict(), path)
    target = CamNet("tiny")
    result = load_pretrained(target, path)
    assert result.missing == [] and result.skipped == []
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # the authors' checkpoints have no "backbone." prefix
    bare = {k.removeprefix("backbone."): v for k, v in source.state_dict().items()}
    torch.save(bare, tmp_path / "bare.pt")
    target = CamNet("tiny")
    load_pretrained(target, tmp_path / "bare.pt")
    assert torch.equal(target.backbone.b3.conv_a.weight, source.backbone.b3.conv_a.weight)
    # unexpected names, shape mismatches, non-tensor pickles, unknown suffixes
    torch.save({**source.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected: \[extra\.weight\]"):
        load_pretrained(CamNet("tiny"), tmp_path / "extra.pth")
    assert load_pretrained(CamNet("tiny"), tmp_path / "extra.pth", strict=False).skipped == [
        "extra.weight"
    ]
    torch.save(CamNet("tiny", num_classes=5).state_dict(), tmp_path / "five.pth")
    with pytest.raises(ValueError, match=r"five\.pth: fc8\.weight has shape \(5, 256, 1, 1\)"):
        load_pretrained(CamNet("tiny"), tmp_path / "five.pth")
    torch.save({"w": torch.zeros(1), "obj": np.random.default_rng(0)}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match=r"pickle\.pth: cannot read as a weights-only"):
        load_pretrained(CamNet("tiny"), tmp_path / "pickle.pth")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"w\.npz: cannot read as an \.npz of arrays"):
        load_pretrained(CamNet("tiny"), tmp_path / "w.npz")
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"w\.h5: unknown weights format"):
        load_pretrained(CamNet("tiny"), tmp_path / "w.h5")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(CamNet("tiny"), tmp_path / "nope.pth")


# ---------------------------------------------------------------- CAM network and PCM


def test_pcm_matches_pixel_loops():
    torch.manual_seed(1)
    cam, feat = torch.randn(2, 3, 3, 4), torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(pcm(cam, feat).double(), naive_pcm(cam, feat), atol=1e-5, rtol=1e-5)


def test_pcm_in_blocks_without_gradients(monkeypatch):
    """Inference makes the affinities a few columns at a time: 5 x 6 = 30 columns in blocks of
    7 (the last one 2 wide) give the pixel loops' answer, as the one-block product does."""
    monkeypatch.setattr(cam_module, "PCM_COLUMNS", 7)
    torch.manual_seed(4)
    cam, feat = torch.randn(2, 3, 5, 6), torch.randn(2, 5, 5, 6)
    with torch.no_grad():
        blocked = pcm(cam, feat)
    torch.testing.assert_close(blocked.double(), naive_pcm(cam, feat), atol=1e-5, rtol=1e-5)
    whole = pcm(cam.requires_grad_(), feat)  # gradients wanted: one product
    torch.testing.assert_close(blocked, whole.detach(), atol=1e-6, rtol=1e-6)


def test_seam_normalised_cam_by_hand():
    logits = torch.tensor([[[[5.0, 5.0, 5.0]], [[2.0, -1.0, 1.0]], [[0.0, 1.5, 3.0]]]])
    expected = torch.tensor([[[[0.0, 0.5, 0.0]], [[1.0, 0.0, 0.0]], [[0.0, 0.5, 1.0]]]])
    torch.testing.assert_close(seam_normalised_cam(logits), expected, atol=1e-4, rtol=0)
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(seam_normalised_cam(logits).double(), naive_seam_cam(logits))


@pytest.mark.parametrize("source", ["logits", "seam"])
def test_camnet_forward_against_direct_computation(source):
    torch.manual_seed(3)
    model = CamNet(TinyBackbone(width=4), num_classes=4, pcm_source=source).eval()
    x = torch.randn(2, 3, 24, 32)
    out = model(x)
    with torch.no_grad():
        d = model.backbone.forward_as_dict(x)
        logits = model.fc8(d["conv6"])
        image = F.interpolate(x, (3, 4), mode="bilinear", align_corners=True)
        feat = model.f9(
            torch.cat([image, F.relu(model.f8_3(d["conv4"])), F.relu(model.f8_4(d["conv5"]))], 1)
        )
    cam = logits if source == "logits" else naive_seam_cam(logits)
    assert out["logits"].shape == out["rv"].shape == (2, 4, 3, 4)
    torch.testing.assert_close(out["logits"], logits)
    torch.testing.assert_close(out["rv"].double(), naive_pcm(cam, feat), atol=1e-5, rtol=1e-5)
    # ICAM's PCM passes gradients to fc8 and on to the backbone; SEAM's passes none, and the
    # detached conv4/conv5 features give the backbone nothing either
    out["rv"].sum().backward()
    icam = source == "logits"
    fc8_grad = model.fc8.weight.grad
    assert (fc8_grad is not None and fc8_grad.abs().sum() > 0) == icam
    assert model.f9.weight.grad.abs().sum() > 0
    assert any(p.grad is not None for p in model.backbone.parameters()) == icam


def test_tiny_camnet_training_mode_and_groups():
    torch.manual_seed(4)
    model = CamNet("tiny").train()
    out = model(torch.randn(8, 3, 128, 128))
    assert out["logits"].shape == (8, 21, 16, 16)
    (out["logits"].mean() + out["rv"].mean()).backward()
    frozen = [model.backbone.conv_stem, model.backbone.b2]  # as ResNet-38's conv1a and b2
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert model.backbone.b3.conv_a.weight.grad.abs().sum() > 0
    check_partition(model, {"fc8.weight", "f8_3.weight", "f8_4.weight", "f9.weight"}, set())


def check_partition(model, new_weights, new_biases):
    groups = model.parameter_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert {names[id(p)] for p in groups[2]} == new_weights
    assert {names[id(p)] for p in groups[3]} == new_biases
    assert all(names[id(p)].endswith("bias") for p in groups[1])
    assert not any(names[id(p)].endswith("bias") for p in groups[0])


# ---------------------------------------------------------------- AffinityNet


def test_affinity_offsets_by_hand():
    assert affinity_offsets(3) == [
        (0, 1),
        (0, 2),
        (1, -2),
        (1, -1),
        (1, 0),
        (1, 1),
        (1, 2),
        (2, -2),
        (2, -1),
        (2, 0),
        (2, 1),
        (2, 2),
    ]
    assert len(affinity_offsets(5)) == 34


def test_affinities_and_labels_match_loops():
    torch.manual_seed(5)
    r, h, w = 3, 5, 8
    feat = torch.randn(2, 4, h, w)
    labels = torch.randint(0, 3, (2, h, w))
    labels[0, 1, 3] = 255
    labels[1, 4, 5] = 255
    aff = affinities(feat, r)
    bg, fg, neg = affinity_labels(labels, r)
    offsets = affinity_offsets(r)
    assert aff.shape == bg.shape == (2, len(offsets), h - r + 1, w - 2 * r + 2)
    for b in range(2):
        for k, (dy, dx) in enumerate(offsets):
            for y in range(h - r + 1):
                for x in range(r - 1, w - r + 1):
                    i, j = (y, x), (y + dy, x + dx)
                    want = math.exp(-(feat[b, :, i[0], i[1]] - feat[b, :, j[0], j[1]]).abs().mean())
                    assert abs(aff[b, k, y, x - r + 1] - want) < 1e-5
                    li, lj = int(labels[b][i]), int(labels[b][j])
                    sure = li != 255 and lj != 255
                    assert bg[b, k, y, x - r + 1] == (li == lj == 0)
                    assert fg[b, k, y, x - r + 1] == (li == lj and li not in (0, 255))
                    assert neg[b, k, y, x - r + 1] == (li != lj and sure)
    with pytest.raises(ValueError, match="too small"):
        affinities(torch.randn(1, 4, 8, 8), 5)


def test_affinity_loss_by_hand():
    aff = torch.tensor([0.5, 0.25, 0.9, 0.1])
    bg, fg, neg = (
        torch.tensor([1.0, 0, 0, 0]),
        torch.tensor([0, 1.0, 0, 0]),
        torch.tensor([0, 0, 1.0, 1.0]),
    )
    want = -math.log(0.5) / 4 - math.log(0.25) / 4 - (math.log(0.1) + math.log(0.9)) / 2 / 2
    assert abs(affinity_loss(aff, bg, fg, neg).item() - want) < 1e-4


def test_random_walk_against_dense_loops():
    torch.manual_seed(6)
    r, h, w, beta = 3, 4, 6, 2
    feat = torch.randn(1, 3, h, w, dtype=torch.float64)
    t = random_walk_transition(feat, r, beta)
    a = torch.eye(h * w, dtype=torch.float64)
    pairs = 0
    for dy, dx in affinity_offsets(r):
        for y in range(h - r + 1):
            for x in range(r - 1, w - r + 1):
                i, j = y * w + x, (y + dy) * w + x + dx
                value = torch.exp(-(feat[0, :, y, x] - feat[0, :, y + dy, x + dx]).abs().mean())
                a[i, j] = a[j, i] = value**beta
                pairs += 1
    want = a / a.sum(dim=0, keepdim=True)
    assert t[0].values().numel() == 2 * pairs + h * w  # only the pairs and the diagonal
    torch.testing.assert_close(t[0].to_dense(), want)
    cams = torch.rand(1, 2, h, w, dtype=torch.float64)
    propagated = cams.view(1, 2, -1) @ torch.linalg.matrix_power(want, 2**3)
    torch.testing.assert_close(random_walk(cams, t, logt=3), propagated.view(1, 2, h, w))


def test_affinity_net_shapes_and_groups(resnet38):
    torch.manual_seed(7)
    model = AffinityNet(TinyBackbone(width=8)).train()
    feat = model(torch.randn(2, 3, 96, 96))
    assert feat.shape == (2, 8 * 4 // 8 + 8 * 8 // 8 + 8 * 16 // 16, 12, 12)
    aff = affinities(feat)
    bg, fg, neg = affinity_labels(torch.randint(0, 3, (2, 12, 12)))
    affinity_loss(aff, bg, fg, neg).backward()
    assert model.backbone.b3.conv_a.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.conv_stem.parameters())
    check_partition(model, {f"{n}.weight" for n in ("f8_3", "f8_4", "f8_5", "f9")}, set())
    reference = AffinityNet(resnet38)
    assert reference.feature_dim == 448 and reference.f8_5.weight.shape == (256, 4096, 1, 1)


# ---------------------------------------------------------------- DeepLab-v1


def test_deeplab_head():
    torch.manual_seed(8)
    model = DeepLabV1(TinyBackbone(width=8, frozen_bn=False), num_classes=5).train()
    assert model.conv_fov.dilation == (12, 12) and model.conv_fov.kernel_size == (3, 3)
    mean_before = model.bn_fov.running_mean.clone()
    backbone_before = model.backbone.b3.norm_a.running_mean.clone()
    logits = model(torch.randn(2, 3, 64, 48))
    assert logits.shape == (2, 5, 8, 6)
    assert not torch.equal(mean_before, model.bn_fov.running_mean)  # head BN keeps its statistics
    assert not torch.equal(backbone_before, model.backbone.b3.norm_a.running_mean)  # batch stats
    logits.sum().backward()
    # the authors' train_final.py trains the whole backbone, its first conv included
    assert model.backbone.conv_stem.weight.grad.abs().sum() > 0
    assert model.backbone.b2.conv_a.weight.grad.abs().sum() > 0
    assert model.bn_fov.weight.grad is None and model.backbone.norm6.weight.grad is None
    check_partition(
        model, {"conv_fov.weight", "conv_fov2.weight", "cls_conv.weight"}, {"cls_conv.bias"}
    )


def test_deeplab_head_width_is_c6_over_8_and_at_least_128():
    """ResNet-38's 4096 channels give the authors' 512; Lite0's 112 would give 14, which
    dropout leaves too narrow to learn the foreground: 128 then."""
    class Channels(torch.nn.Module):
        def __init__(self, c6):
            super().__init__()
            self.channels = {"conv4": 8, "conv5": 8, "conv6": c6}

    assert DeepLabV1(Channels(4096)).conv_fov.out_channels == 512
    assert DeepLabV1(Channels(112)).conv_fov.out_channels == 128
    assert DeepLabV1(Channels(112), width=32).cls_conv.in_channels == 32


def test_resnet38_running_statistics_move_with_the_authors_momentum():
    """resnet38d.py builds every batch norm with momentum 3e-4 (torch's default is 0.1): in
    the final stage's training (batch statistics), a running mean moves 3e-4 of the way."""
    net = ResNet38(frozen_bn=False).train()
    bn = net.b2.bn_branch2a
    seen = {}
    bn.register_forward_hook(lambda module, inputs, output: seen.setdefault("x", inputs[0]))
    before = bn.running_mean.clone()
    with torch.no_grad():
        net.forward_as_dict(torch.randn(2, 3, 16, 16))
    batch_mean = seen["x"].mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, (1 - 3e-4) * before + 3e-4 * batch_mean, atol=1e-7)
