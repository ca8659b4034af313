"""Pretrained weights (`cnnzoo.weights`, `create_model(pretrained=...)`): torchvision's for every twin through
torch.hub's cache, local files recognised by their contents, the MSRA and timm converters checked by outputs, the
classifier and first-convolution adaptations. Never the network: every file is written here in its real format."""

import hashlib
import json
import logging
import os
import pickle
import urllib.error
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from cnnzoo import count_params, create_model, list_models, model_card
from cnnzoo.train.checkpoint import CheckpointError, save_checkpoint
from cnnzoo.weights import WeightsUnavailableError, hub_file, list_weights, resolve_weights
from helpers import small_side, with_running_statistics

TWINS = [n for n in list_models() if model_card(n).torchvision]
# Outputs equal torchvision's with the same weights: one twin per family (the quick check: the two smallest, and
# GoogLeNet without its heads below),
# every twin with CNNZOO_WEIGHTS_ALL=1 (VGG's half-gigabyte files take 5-12 s each here). Every twin's strict load
# is checked on the meta device below, and test_models.py checks that each twin computes what torchvision's does.
QUICK_TWINS = ["resnet18", "squeezenet1_1"]
MORE_TWINS = [n for n in TWINS if n not in QUICK_TWINS] if os.environ.get("CNNZOO_WEIGHTS_ALL") == "1" else [
    "alexnet_owt", "densenet121", "googlenet_bn", "vgg11"]


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache; any download attempt fails as offline would (the tests never reach the network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = torch.hub.download_url_to_file

    def offline(url, dst, *args, **kwargs):
        if not url.startswith("file://"):
            raise urllib.error.URLError("offline (test)")
        return real(url, dst, *args, **kwargs)

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _torchvision_builder(name: str):
    """torchvision's builder for a twin, as its weights are built (GoogLeNet: heads on, input transform on)."""
    builder = getattr(torchvision.models, model_card(name).torchvision)
    extra = {"aux_logits": True, "transform_input": True, "init_weights": True} if name == "googlenet_bn" else {}
    return lambda: builder(**extra)


def _torchvision_twin(name: str) -> nn.Module:
    """torchvision's own model for a twin, random weights with non-trivial batch-norm statistics, eval mode."""
    torch.manual_seed(0)
    model = _torchvision_builder(name)()
    side = small_side(name)
    return with_running_statistics(model, torch.randn(1, 3, side, side))


def _cache_as_torchvision(name: str, model: nn.Module, folder) -> None:
    """The state_dict where torch.hub keeps torchvision's download of the twin's default weights."""
    path = hub_file(list_weights(name)[0].url)
    assert path.parent == folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def _check_twin(name, torch_home):
    reference = _torchvision_twin(name)
    _cache_as_torchvision(name, reference, torch_home)
    ours = create_model(name, pretrained=True).eval()  # strict: a key or shape apart would raise
    side = small_side(name)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
    assert ours.pretrained_weights.name == list_weights(name)[0].name


@pytest.mark.parametrize("name", QUICK_TWINS)
def test_twin_weights_from_the_hub_cache_equal_torchvision(name, torch_home):
    _check_twin(name, torch_home)


@pytest.mark.parametrize("name", MORE_TWINS)
def test_more_twin_weights_equal_torchvision(name, torch_home):
    _check_twin(name, torch_home)


@pytest.mark.parametrize("name", TWINS)
def test_every_twin_loads_torchvision_weights_strictly(name):
    """The load's own checks (every key, shape and dtype; GoogLeNet's heads and options) on the meta device."""
    from cnnzoo.weights import load_pretrained

    weights = list_weights(name)[0]
    with torch.device("meta"):
        state = _torchvision_builder(name)().state_dict()
        model = create_model(name, **weights.options)
    load_pretrained(model, state, weights, num_classes=1000, in_chans=3)
    assert model.pretrained_weights is weights


def test_every_twin_lists_torchvision_weights_with_accuracy_and_transforms():
    for name in TWINS:
        available = list_weights(name)
        assert available, name
        enum = torchvision.models.get_model_weights(model_card(name).torchvision)
        assert available[0].name == enum.DEFAULT.name and {w.name for w in available} == {w.name for w in enum}
        for w in available:
            member = enum[w.name]
            reported = member.meta["_metrics"]["ImageNet-1K"]["acc@1"]
            assert w.top1_acc == (None if reported != reported else reported)  # NaN: VGG-16's feature-only weights
            assert w.preprocess.crop == member.transforms().crop_size[0]
            assert len(w.categories) == (1000 if member.meta["categories"] else 0)
    assert list_weights("lenet5") == []


def test_file_url_goes_through_the_hub_cache_with_its_hash_checked(tmp_path, torch_home):
    reference = _torchvision_twin("resnet18")
    plain = tmp_path / "plain.pth"
    torch.save(reference.state_dict(), plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()[:8]
    served = tmp_path / f"resnet18-{digest}.pth"  # torchvision's naming: the hash prefix is checked on download
    os.rename(plain, served)
    model = create_model("resnet18", pretrained=served.as_uri()).eval()
    assert (torch_home / served.name).is_file()  # cached: the second load reads the cache
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    bad = tmp_path / "resnet18-00000000.pth"
    bad.write_bytes(served.read_bytes())
    with pytest.raises(ValueError, match="damaged"):
        create_model("resnet18", pretrained=bad.as_uri())
    assert not (torch_home / bad.name).exists()


def test_offline_names_the_file_and_the_folder(torch_home):
    expected = hub_file(list_weights("resnet34")[0].url)
    with pytest.raises(WeightsUnavailableError) as caught:
        create_model("resnet34", pretrained="IMAGENET1K_V1")
    message = str(caught.value)
    assert expected.name in message and str(expected.parent) in message and "offline (test)" in message


def test_unknown_weights_and_models_without_weights_are_refused():
    with pytest.raises(ValueError, match="IMAGENET1K_V2, IMAGENET1K_V1"):
        resolve_weights("resnet50_v1_5", "IMAGENET1K_V3")
    with pytest.raises(ValueError, match="no published weights"):
        create_model("lenet5", pretrained=True)
    with pytest.raises(TypeError, match="pretrained must be"):
        create_model("resnet18", pretrained=3)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        create_model("resnet18", pretrained="missing/weights.pt")


def test_state_dict_file_mismatch_names_missing_unexpected_and_shapes(tmp_path):
    state = create_model("resnet18").state_dict()
    state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    state["fc.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as caught:
        create_model("resnet18", pretrained=path)
    message = str(caught.value)
    assert "missing: layer1.0.conv1.weight" in message and "unexpected: extra.weight" in message
    assert "fc.bias (7,) vs (1000,)" in message


def test_nested_and_dataparallel_state_dicts_and_cnnzoo_checkpoints(tmp_path):
    source = with_running_statistics(create_model("resnet20"), torch.randn(2, 3, 32, 32))
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, nested)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(create_model("resnet20", pretrained=str(nested)).eval()(x), source(x))
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    trained = with_running_statistics(create_model("resnet20", num_classes=4), x)
    save_checkpoint(checkpoint, {"model": "resnet20", "model_options": {"num_classes": 4},
                                 "model_state": trained.state_dict(), "classes": ["a", "b", "c", "d"],
                                 "data": {"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32]}})
    model = create_model("resnet20", pretrained=checkpoint).eval()  # its num_classes comes from the checkpoint
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert model.pretrained_weights.categories == ("a", "b", "c", "d")
    assert model.pretrained_weights.preprocess.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="checkpoint of resnet20, not of resnet32"):
        create_model("resnet32", pretrained=checkpoint)


def test_not_a_weights_file_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="not a weights file"):
        create_model("resnet20", pretrained=path)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"conv1_w": os.system}, protocol=2))
    with pytest.raises(ValueError, match="refuses to unpickle|refusing"):
        create_model("resnet50", pretrained=evil)


def test_num_classes_keeps_the_backbone_and_reinitialises_the_classifier(tmp_path, caplog):
    source = with_running_statistics(create_model("resnet20"), torch.randn(2, 3, 32, 32))
    path = tmp_path / "r20.pt"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="cnnzoo.weights"):
        model = create_model("resnet20", pretrained=path, num_classes=3).eval()
    assert model.head.out_features == 3
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "head.weight, head.bias" in lines[0] and "re-initialised for 3" in lines[0]
    kept = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    ours = model.state_dict()
    assert ours.keys() - kept.keys() == {"head.weight", "head.bias"}
    assert all(torch.equal(ours[k], v) for k, v in kept.items())
    assert not torch.equal(ours["head.weight"], source.state_dict()["head.weight"][:3])


@pytest.mark.parametrize("in_chans", [1, 6])
def test_in_chans_adapts_the_first_convolution_as_timm(tmp_path, caplog, in_chans):
    source = with_running_statistics(create_model("resnet20"), torch.randn(2, 3, 32, 32))
    path = tmp_path / "r20.pt"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="cnnzoo.weights"):
        model = create_model("resnet20", pretrained=path, in_chans=in_chans).eval()
    assert [r.getMessage().count("adapted to") for r in caplog.records] == [1]
    grey = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # a grey image: the adapted net sees what the RGB net sees of its grey copy
        torch.testing.assert_close(model(grey.expand(-1, in_chans, -1, -1)), source(grey.expand(-1, 3, -1, -1)))


def test_adapt_input_conv_repeats_and_rescales_for_other_counts():
    from cnnzoo.weights import adapt_input_conv

    w = torch.randn(8, 3, 3, 3)
    four = adapt_input_conv(w, 4)
    assert four.shape == (8, 4, 3, 3)
    torch.testing.assert_close(four[:, :3], w * 3 / 4)
    torch.testing.assert_close(four[:, 3], w[:, 0] * 3 / 4)


def test_googlenet_without_aux_heads_drops_them_and_keeps_transform_input(torch_home):
    reference = _torchvision_twin("googlenet_bn")
    _cache_as_torchvision("googlenet_bn", reference, torch_home)
    model = create_model("googlenet_bn", pretrained=True, aux_logits=False).eval()
    assert model.aux1 is None and model.transform_input
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_safetensors_file(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    source = with_running_statistics(create_model("resnet20"), torch.randn(2, 3, 32, 32))
    path = tmp_path / "r20.safetensors"
    safetensors.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(create_model("resnet20", pretrained=path).eval()(x), source(x))


def test_info_lists_the_weights_with_accuracy_and_transforms(capsys):
    from cnnzoo.cli import main

    assert main(["info", "squeezenet1_1", "--format", "json"]) in (0, None)
    listed = json.loads(capsys.readouterr().out)["weights"]
    expected = list_weights("squeezenet1_1")
    assert [w["name"] for w in listed] == [w.name for w in expected]
    assert listed[0]["top1_acc"] == expected[0].top1_acc and listed[0]["preprocess"]["crop"] == 224
    assert main(["info", "squeezenet1_1"]) in (0, None)
    text = capsys.readouterr().out
    assert f"top-1 {expected[0].top1_acc:.3f}%" in text and "centre crop 224" in text


# ------------------------------------------------------------------ MSRA (Detectron's R-50.pkl)

def _msra_blobs(blocks=(3, 4, 6, 3), seed=0):
    """A Detectron ImageNet weights pickle's contents as its ResNet.py names them (conv1, res_conv1_bn, res2_0_
    branch2a ...; frozen batch norm as AffineChannel scale _s and shift _b), random values of a workable scale."""
    import numpy as np

    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, out, inp, k):
        blobs[f"{name}_w"] = (rng.standard_normal((out, inp, k, k)) * np.sqrt(1.0 / (inp * k * k))).astype("f4")
        blobs[f"{name}_bn_s"] = rng.uniform(0.5, 1.0, out).astype("f4")
        blobs[f"{name}_bn_b"] = rng.uniform(-0.1, 0.1, out).astype("f4")

    conv("conv1", 64, 3, 7)
    blobs["res_conv1_bn_s"], blobs["res_conv1_bn_b"] = blobs.pop("conv1_bn_s"), blobs.pop("conv1_bn_b")
    inp = 64
    for stage, n in enumerate(blocks, start=2):
        width = 64 * 2 ** (stage - 2)
        for i in range(n):
            conv(f"res{stage}_{i}_branch2a", width, inp, 1)
            conv(f"res{stage}_{i}_branch2b", width, width, 3)
            conv(f"res{stage}_{i}_branch2c", 4 * width, width, 1)
            if i == 0:
                conv(f"res{stage}_{i}_branch1", 4 * width, inp, 1)
            inp = 4 * width
    blobs["fc1000_w"] = (rng.standard_normal((1000, 2048)) * 0.02).astype("f4")
    blobs["fc1000_b"] = np.zeros(1000, "f4")
    blobs["conv1_w_momentum"] = np.zeros(1, "f4")  # a training leftover Detectron's loader drops
    return blobs


def _caffe_resnet(blobs, x, blocks=(3, 4, 6, 3)):
    """Detectron's ResNet forward written from its ResNet.py, on the blobs themselves: stride on branch2a (the
    first 1x1), AffineChannel after every convolution, projection shortcut branch1 on each stage's first block."""
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in blobs.items()}

    def affine(y, name):
        return y * t[f"{name}_s"].view(1, -1, 1, 1) + t[f"{name}_b"].view(1, -1, 1, 1)

    y = affine(F.conv2d(x, t["conv1_w"], stride=2, padding=3), "res_conv1_bn").relu()
    y = F.max_pool2d(y, 3, stride=2, padding=1)
    for stage, n in enumerate(blocks, start=2):
        for i in range(n):
            name, stride = f"res{stage}_{i}", 2 if i == 0 and stage > 2 else 1
            z = affine(F.conv2d(y, t[f"{name}_branch2a_w"], stride=stride), f"{name}_branch2a_bn").relu()
            z = affine(F.conv2d(z, t[f"{name}_branch2b_w"], padding=1), f"{name}_branch2b_bn").relu()
            z = affine(F.conv2d(z, t[f"{name}_branch2c_w"]), f"{name}_branch2c_bn")
            short = affine(F.conv2d(y, t[f"{name}_branch1_w"], stride=stride), f"{name}_branch1_bn") if i == 0 else y
            y = (z + short).relu()
    return F.linear(y.mean(dim=(2, 3)), t["fc1000_w"], t["fc1000_b"])


@pytest.fixture(scope="module")
def msra_file(tmp_path_factory):
    """R-50.pkl as Detectron writes it: protocol 2 (Python 2's highest), the blobs maybe inside {"blobs": ...}."""
    blobs = _msra_blobs()
    path = tmp_path_factory.mktemp("msra") / "R-50.pkl"
    with path.open("wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    return path, blobs


def test_msra_pickle_converts_into_resnet50_with_equal_outputs(msra_file):
    path, blobs = msra_file
    model = create_model("resnet50", pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _caffe_resnet(blobs, x), rtol=1e-4, atol=1e-4)
    pre = model.pretrained_weights.preprocess
    assert (pre.channel_order, pre.pixel_scale, pre.std) == ("BGR", 255, (1, 1, 1)) and pre.mean[0] > 100
    assert len(model.pretrained_weights.categories) == 1000
    image = (torch.rand(3, 256, 256) * 255).to(torch.uint8)  # RGB 0..255 becomes Caffe's BGR minus the mean
    view = pre.views(image)[0]
    centre = image[:, 16:240, 16:240].float()
    torch.testing.assert_close(view[0], centre[2] - pre.mean[0])


def test_msra_blobs_of_another_depth_are_named():
    from cnnzoo.weights import Weights, load_pretrained, msra_to_state_dict

    blobs = _msra_blobs(blocks=(1, 1, 1, 1))  # small: the names are what is checked
    with torch.device("meta"):
        model = create_model("resnet101")
    state = msra_to_state_dict(blobs, "resnet101")
    with pytest.raises(ValueError, match="does not fit resnet101: missing: layer1.1.conv1.weight"):
        load_pretrained(model, state, Weights("resnet101", "R-101.pkl", "file", 1000), num_classes=1000, in_chans=3)
    blobs["res6_0_branch2a_w"] = blobs["conv1_w"]
    with pytest.raises(ValueError, match="blobs with no place in it: res6_0_branch2a_w"):
        msra_to_state_dict(blobs, "resnet101")
    with pytest.raises(ValueError, match="stride in the first 1x1"):
        msra_to_state_dict(blobs, "resnet50_v1_5")


# ------------------------------------------------------------------ timm's ports of the TF-slim releases

class _Basic(nn.Sequential):
    """timm's BasicConv2d: convolution without bias, batch norm (eps 0.001), ReLU; submodules conv, bn."""

    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__(OrderedDict(conv=nn.Conv2d(cin, cout, k, stride, padding, bias=False),
                                     bn=nn.BatchNorm2d(cout, eps=1e-3), relu=nn.ReLU()))


class _Mixed(nn.Module):
    """A timm block: children branch0, branch1, ... concatenated; with `scale`, a residual block whose conv2d
    (1x1 with bias) maps the concatenation back, scaled, added to the input, then ReLU unless relu=False."""

    def __init__(self, scale=None, relu=True, **parts):
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)
        self.scale, self.relu = scale, relu

    def forward(self, x):
        y = torch.cat([m(x) for n, m in self.named_children() if n.startswith("branch")], 1)
        if self.scale is None:
            return y
        y = self.conv2d(y) * self.scale + x
        return y.relu() if self.relu else y


def _timm_inception_resnet_v2() -> nn.Module:
    """timm's inception_resnet_v2 module tree (names, widths, kernels, paddings as its source has them)."""
    seq, pool = nn.Sequential, lambda: nn.MaxPool2d(3, stride=2)  # noqa: E731

    def block35():
        return _Mixed(0.17, branch0=_Basic(320, 32, 1), branch1=seq(_Basic(320, 32, 1), _Basic(32, 32, 3, 1, 1)),
                      branch2=seq(_Basic(320, 32, 1), _Basic(32, 48, 3, 1, 1), _Basic(48, 64, 3, 1, 1)),
                      conv2d=nn.Conv2d(128, 320, 1))

    def block17():
        return _Mixed(0.10, branch0=_Basic(1088, 192, 1),
                      branch1=seq(_Basic(1088, 128, 1), _Basic(128, 160, (1, 7), 1, (0, 3)),
                                  _Basic(160, 192, (7, 1), 1, (3, 0))), conv2d=nn.Conv2d(384, 1088, 1))

    def block8(scale=0.20, relu=True):
        return _Mixed(scale, relu, branch0=_Basic(2080, 192, 1),
                      branch1=seq(_Basic(2080, 192, 1), _Basic(192, 224, (1, 3), 1, (0, 1)),
                                  _Basic(224, 256, (3, 1), 1, (1, 0))), conv2d=nn.Conv2d(448, 2080, 1))

    return seq(OrderedDict(
        conv2d_1a=_Basic(3, 32, 3, 2), conv2d_2a=_Basic(32, 32, 3), conv2d_2b=_Basic(32, 64, 3, 1, 1),
        maxpool_3a=pool(), conv2d_3b=_Basic(64, 80, 1), conv2d_4a=_Basic(80, 192, 3), maxpool_5a=pool(),
        mixed_5b=_Mixed(branch0=_Basic(192, 96, 1), branch1=seq(_Basic(192, 48, 1), _Basic(48, 64, 5, 1, 2)),
                        branch2=seq(_Basic(192, 64, 1), _Basic(64, 96, 3, 1, 1), _Basic(96, 96, 3, 1, 1)),
                        branch3=seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _Basic(192, 64, 1))),
        repeat=seq(*[block35() for _ in range(10)]),
        mixed_6a=_Mixed(branch0=_Basic(320, 384, 3, 2),
                        branch1=seq(_Basic(320, 256, 1), _Basic(256, 256, 3, 1, 1), _Basic(256, 384, 3, 2)),
                        branch2=pool()),
        repeat_1=seq(*[block17() for _ in range(20)]),
        mixed_7a=_Mixed(branch0=seq(_Basic(1088, 256, 1), _Basic(256, 384, 3, 2)),
                        branch1=seq(_Basic(1088, 256, 1), _Basic(256, 288, 3, 2)),
                        branch2=seq(_Basic(1088, 256, 1), _Basic(256, 288, 3, 1, 1), _Basic(288, 320, 3, 2)),
                        branch3=pool()),
        repeat_2=seq(*[block8() for _ in range(9)]), block8=block8(1.0, relu=False),
        conv2d_7b=_Basic(2080, 1536, 1), global_pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
        classif=nn.Linear(1536, 1000)))


def test_timm_inception_resnet_v2_converts_with_equal_outputs(tmp_path):
    from cnnzoo.weights import timm_to_state_dict

    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96)
    reference = with_running_statistics(_timm_inception_resnet_v2(), x)
    path = tmp_path / "inception_resnet_v2.tf_in1k.pth"
    torch.save(reference.state_dict(), path)
    model = create_model("inception_resnet_v2_tf", pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    pre = model.pretrained_weights.preprocess
    assert (pre.crop, pre.interpolation, pre.mean) == (299, "bicubic", (0.5, 0.5, 0.5))
    state = reference.state_dict()  # the TF-slim checkpoint's 1001 classes, background first
    state["classif.weight"] = torch.cat([torch.zeros(1, 1536), state["classif.weight"]])
    state["classif.bias"] = torch.cat([torch.zeros(1), state["classif.bias"]])
    assert torch.equal(timm_to_state_dict(state, "inception_resnet_v2_tf")["head.4.bias"], reference.classif.bias)
    state["repeat.0.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="no place in it: repeat.0.extra"):
        timm_to_state_dict(state, "inception_resnet_v2_tf")


class _Parts(nn.Module):
    """A timm block whose children (not named branch*) each read the block's input, concatenated in order."""

    def __init__(self, **parts):
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)

    def forward(self, x):
        return torch.cat([m(x) for m in self.children()], 1)


class _TimmInceptionC(nn.Module):
    """timm's InceptionC: flat attributes branch0 .. branch3; each 1x3 / 3x1 split reads one shared map."""

    def __init__(self):
        super().__init__()
        self.branch0 = _Basic(1536, 256, 1)
        self.branch1_0 = _Basic(1536, 384, 1)
        self.branch1_1a = _Basic(384, 256, (1, 3), 1, (0, 1))
        self.branch1_1b = _Basic(384, 256, (3, 1), 1, (1, 0))
        self.branch2_0 = _Basic(1536, 384, 1)
        self.branch2_1 = _Basic(384, 448, (3, 1), 1, (1, 0))
        self.branch2_2 = _Basic(448, 512, (1, 3), 1, (0, 1))
        self.branch2_3a = _Basic(512, 256, (1, 3), 1, (0, 1))
        self.branch2_3b = _Basic(512, 256, (3, 1), 1, (1, 0))
        self.branch3 = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _Basic(1536, 256, 1))

    def forward(self, x):
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(x1), self.branch1_1b(x1), self.branch2_3a(x2),
                          self.branch2_3b(x2), self.branch3(x)], 1)


def _timm_inception_v4() -> nn.Module:
    """timm's inception_v4 module tree (names, widths, kernels, paddings as its source has them): features.0-21,
    global pool, last_linear."""
    seq, pool = nn.Sequential, lambda: nn.MaxPool2d(3, stride=2)  # noqa: E731

    def avg():
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def block_a():
        return _Mixed(branch0=_Basic(384, 96, 1), branch1=seq(_Basic(384, 64, 1), _Basic(64, 96, 3, 1, 1)),
                      branch2=seq(_Basic(384, 64, 1), _Basic(64, 96, 3, 1, 1), _Basic(96, 96, 3, 1, 1)),
                      branch3=seq(avg(), _Basic(384, 96, 1)))

    def block_b():
        return _Mixed(branch0=_Basic(1024, 384, 1),
                      branch1=seq(_Basic(1024, 192, 1), _Basic(192, 224, (1, 7), 1, (0, 3)),
                                  _Basic(224, 256, (7, 1), 1, (3, 0))),
                      branch2=seq(_Basic(1024, 192, 1), _Basic(192, 192, (7, 1), 1, (3, 0)),
                                  _Basic(192, 224, (1, 7), 1, (0, 3)), _Basic(224, 224, (7, 1), 1, (3, 0)),
                                  _Basic(224, 256, (1, 7), 1, (0, 3))),
                      branch3=seq(avg(), _Basic(1024, 128, 1)))

    features = seq(
        _Basic(3, 32, 3, 2), _Basic(32, 32, 3), _Basic(32, 64, 3, 1, 1),
        _Parts(maxpool=pool(), conv=_Basic(64, 96, 3, 2)),  # Mixed3a
        _Mixed(branch0=seq(_Basic(160, 64, 1), _Basic(64, 96, 3)),  # Mixed4a
               branch1=seq(_Basic(160, 64, 1), _Basic(64, 64, (1, 7), 1, (0, 3)), _Basic(64, 64, (7, 1), 1, (3, 0)),
                           _Basic(64, 96, 3))),
        _Parts(conv=_Basic(192, 192, 3, 2), maxpool=pool()),  # Mixed5a
        *[block_a() for _ in range(4)],
        _Mixed(branch0=_Basic(384, 384, 3, 2),  # ReductionA
               branch1=seq(_Basic(384, 192, 1), _Basic(192, 224, 3, 1, 1), _Basic(224, 256, 3, 2)), branch2=pool()),
        *[block_b() for _ in range(7)],
        _Mixed(branch0=seq(_Basic(1024, 192, 1), _Basic(192, 192, 3, 2)),  # ReductionB
               branch1=seq(_Basic(1024, 256, 1), _Basic(256, 256, (1, 7), 1, (0, 3)),
                           _Basic(256, 320, (7, 1), 1, (3, 0)), _Basic(320, 320, 3, 2)),
               branch2=pool()),
        *[_TimmInceptionC() for _ in range(3)])
    return seq(OrderedDict(features=features, global_pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1),
                           last_linear=nn.Linear(1536, 1000)))


# 139 pixels: the smallest input whose 8x8 grid (at 299) is still 3x3, so every 1x3 and 3x1 kernel reaches a
# neighbour and a transposed or misordered one changes the outputs (at 96 the last grid is 1x1).
V4_SIDE = 139


@pytest.fixture(scope="module")
def timm_v4(tmp_path_factory):
    """timm's Inception-v4 with random weights and trained-like batch norms, its state_dict saved as a file, and
    a batch."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, V4_SIDE, V4_SIDE)
    reference = with_running_statistics(_timm_inception_v4(), x)
    path = tmp_path_factory.mktemp("timm") / "inception_v4.tf_in1k.pth"
    torch.save(reference.state_dict(), path)
    with torch.no_grad():
        expected = reference(x)
    return reference, path, x, expected


def test_timm_inception_v4_converts_into_inception_v4_tf_with_equal_outputs(timm_v4, monkeypatch):
    import sys
    import types

    reference, path, x, expected = timm_v4
    assert not any(isinstance(m, _Mixed) and m.scale is not None for m in reference.modules())
    assert count_params(reference) == 42_679_816  # timm's count for its inception_v4
    model = create_model("inception_v4_tf", pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    weights = model.pretrained_weights
    assert (weights.name, weights.source, weights.num_classes) == ("timm (inception_v4.tf_in1k.pth)", "file", 1000)
    pre = weights.preprocess
    assert (pre.resize, pre.crop, pre.interpolation, pre.mean, pre.std) == (342, 299, "bicubic", (0.5,) * 3,
                                                                            (0.5,) * 3)
    # pretrained="timm": timm's own model is built and converted (a stand-in for timm here, which is not installed)
    asked = []
    fake = types.SimpleNamespace(create_model=lambda name, pretrained: asked.append((name, pretrained)) or reference)
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = create_model("inception_v4_tf", pretrained="timm").eval()
    assert asked == [("inception_v4.tf_in1k", True)] and model.pretrained_weights.source == "timm"
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_timm_inception_v4_conversion_names_what_does_not_fit(timm_v4, tmp_path):
    from cnnzoo.weights import timm_to_state_dict

    reference, *_ = timm_v4
    state = reference.state_dict()
    converted = timm_to_state_dict(state, "inception_v4_tf")
    assert torch.equal(converted["stem.4.branches.1.1.conv.weight"], state["features.4.branch1.1.conv.weight"])
    assert torch.equal(converted["inception_c.2.branches.2.1.bn.running_var"],
                       state["features.21.branch2_1.bn.running_var"])
    # TF-slim's 1001 classes, background first: the background row goes
    wide = {**state, "last_linear.weight": torch.cat([torch.zeros(1, 1536), state["last_linear.weight"]]),
            "last_linear.bias": torch.cat([torch.zeros(1), state["last_linear.bias"]])}
    assert torch.equal(timm_to_state_dict(wide, "inception_v4_tf")["head.3.bias"], state["last_linear.bias"])
    # the strict load names a missing tensor by cnnzoo's name, an extra one and a wrong shape by timm's
    path = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "features.12.branch2.3.conv.weight"}, path)
    with pytest.raises(ValueError, match=r"does not fit inception_v4_tf.*missing: inception_b\.1\.branches\.2\.3"
                                         r"\.conv\.weight"):
        create_model("inception_v4_tf", pretrained=path)
    with pytest.raises(ValueError, match="no place in it: features.9.extra"):
        timm_to_state_dict({**state, "features.9.extra": torch.zeros(1)}, "inception_v4_tf")
    turned = {**state, "features.19.branch2_1.conv.weight": state["features.19.branch2_1.conv.weight"].transpose(2, 3)}
    with pytest.raises(ValueError, match=r"wrong shapes: features.19.branch2_1.conv.weight \(448, 384, 1, 3\) vs "
                                         r"inception_c.0.branches.2.1.conv.weight \(448, 384, 3, 1\)"):
        timm_to_state_dict(turned, "inception_v4_tf")


def test_timm_inception_v4_release_order_is_explained(timm_v4):
    from cnnzoo.weights import timm_to_state_dict

    reference, path, *_ = timm_v4
    released = {"features.4.branch1.1.conv.weight": torch.zeros(64, 64, 1, 7)}  # TF-slim's Mixed_4a: 1x7 first
    with pytest.raises(ValueError, match=r"features.4.branch1.1.conv.weight \(64, 64, 1, 7\).*paper's figures.*"
                                         r"load into inception_v4_tf"):
        timm_to_state_dict(released, "inception_v4")
    # the whole file, from a file and from timm: refused with the reason, naming the model that takes them
    with pytest.raises(ValueError, match=r"and 33 more\. cnnzoo's inception_v4 follows the paper's figures.*"
                                         r"they load into inception_v4_tf"):
        create_model("inception_v4", pretrained=path)
    with pytest.raises(ValueError, match=r"not inception_v4: .*factorised.*load into inception_v4_tf"):
        create_model("inception_v4", pretrained="timm")
    with pytest.raises(ValueError, match=r"no torchvision twin.*do not fit it.*load into inception_v4_tf"):
        create_model("inception_v4", pretrained=True)


def test_pretrained_timm_without_timm_says_how(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed, whether it is or not
    with pytest.raises(ImportError, match="pip install timm"):
        create_model("inception_resnet_v2_tf", pretrained="timm")
    with pytest.raises(ValueError, match="not resnet50"):
        create_model("resnet50", pretrained="timm")


def test_weights_names_files_and_urls_are_told_apart(tmp_path, torch_home):
    assert resolve_weights("resnet50_v1_5", "ResNet50_Weights.IMAGENET1K_V1").name == "IMAGENET1K_V1"
    assert resolve_weights("resnet50_v1_5", "default").name == list_weights("resnet50_v1_5")[0].name
    assert resolve_weights("resnet50", "R-50.pkl").source == "file"
    source = with_running_statistics(create_model("resnet20"), torch.randn(2, 3, 32, 32))
    path = tmp_path / "r20.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    model = create_model("resnet20", pretrained=path.as_uri()).eval()  # no twin: a URL is read as a file would be
    assert model.pretrained_weights.source == "url" and (torch_home / "r20.pth").is_file()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
