"""cnnzoo.profile and `cnnzoo summary`: hand-computed nets, independent counts (FlopCounterMode, autograd's saved
tensors, count_params), receptive fields derived by hand, and the promise to leave a real model untouched."""

import importlib
import json
import resource
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo import count_params, create_model, list_models, model_card
from cnnzoo.analysis import ProfileError, formats
from cnnzoo.analysis.measure import measured_inference_peak, measurement_slack
from cnnzoo.analysis.profile import OP_CLASSES

profile_module = importlib.import_module("cnnzoo.analysis.profile")  # the package attribute is the function
trace_module = importlib.import_module("cnnzoo.analysis.trace")


class TinyNet(nn.Module):
    """A grouped, a strided and a dilated convolution, then a linear layer, on 4x16x16 inputs."""

    def __init__(self):
        super().__init__()
        self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)  # -> 8x16x16
        self.strided = nn.Conv2d(8, 16, 3, stride=2, padding=1)  # -> 16x8x8
        self.dilated = nn.Conv2d(16, 16, 3, dilation=2, bias=False)  # -> 16x4x4 (span 5)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.dilated(self.strided(self.grouped(x)))
        return self.fc(x.flatten(1))


def test_tiny_net_by_hand():
    p = cnnzoo.profile(TinyNet(), input_size=(4, 16, 16), batch_size=2)
    rows = {r.name: r for r in p.layers}
    # MACs = N * C_out * H_out * W_out * (C_in / groups) * kh * kw; linear: N * in * out.
    assert rows["grouped"].macs == 2 * 8 * 16 * 16 * (4 // 2) * 3 * 3 == 73_728
    assert rows["strided"].macs == 2 * 16 * 8 * 8 * 8 * 3 * 3 == 147_456
    assert rows["dilated"].macs == 2 * 16 * 4 * 4 * 16 * 3 * 3 == 73_728
    assert rows["fc"].macs == 2 * 256 * 10 == 5_120
    assert p.macs == 300_032 and p.flops == 2 * 300_032  # nothing but convolutions and a linear layer
    # Parameters: weights (C_out * C_in/groups * k * k) plus biases.
    assert [rows[n].params for n in ("grouped", "strided", "dilated", "fc")] == [8 * 2 * 9 + 8, 16 * 8 * 9 + 16,
                                                                                 16 * 16 * 9, 256 * 10 + 10]
    assert p.params == 6_194 == count_params(TinyNet())
    assert [rows[n].output_shape for n in ("grouped", "strided", "dilated", "fc")] == [
        (2, 8, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4), (2, 10)]
    # Receptive fields (size, jump, centre of the first unit): 3x3 pad 1 -> (3, 1, 0.5); 3x3 stride 2 pad 1 ->
    # (3 + 2*1, 2, 0.5); 3x3 dilation 2 -> (5 + 2*2*2, 2, 0.5 + 2*2) = (13, 2, 4.5); flatten covers the 4x4 map:
    # (13 + 3*2, 8, 4.5 + 1.5*2).
    assert [(rows[n].receptive_field, rows[n].jump, rows[n].start) for n in ("grouped", "strided", "dilated", "fc")] \
        == [(3, 1, 0.5), (5, 2, 0.5), (13, 2, 4.5), (19, 8, 7.5)]
    assert p.activation_elements == 2 * (8 * 256 + 16 * 64 + 16 * 16 + 10)  # the flatten is a view
    assert p.uncounted_ops == ()


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "resnet50", "squeezenet1_0", "lenet5"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_macs_equal_flop_counter_mode(name, mode):
    p = cnnzoo.profile(name, batch_size=2, mode=mode)
    with torch.device("meta"):
        model = create_model(name)
    model.train(mode == "train")
    x = torch.empty(2, *model_card(name).input_size, device="meta")  # native size: the input check does not probe
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    assert p.flops_by_class["convolution"] + p.flops_by_class["linear"] == counter.get_total_flops() == 2 * p.macs


@pytest.mark.parametrize("name", list_models())
def test_every_model_profiles_at_its_native_size(name):
    with torch.device("meta"):
        model = create_model(name)
    p = cnnzoo.profile(name)
    assert p.complete and p.uncounted_ops == ()
    assert p.params == count_params(model) and p.trainable_params == count_params(model, trainable_only=True)
    assert p.flops == sum(r.flops for r in p.layers) >= 2 * p.macs > 0
    assert p.activation_bytes == sum(r.activation_bytes for r in p.layers) > 0
    assert p.param_bytes == 4 * p.params and p.inference_peak_bytes > p.param_bytes


@pytest.mark.parametrize("name, mode", [("resnet50", "eval"), ("googlenet", "train"), ("densenet121", "eval"),
                                        ("fractalnet20", "eval"), ("inception_resnet_v2", "train")])
def test_rollups_sum_to_the_totals(name, mode):
    p = cnnzoo.profile(name, batch_size=2, mode=mode)
    totals = p.totals()
    for depth in range(6):
        rows = p.rollup(depth)
        for key in ("params", "trainable_params", "macs", "flops", "activation_elements", "activation_bytes"):
            assert sum(getattr(r, key) for r in rows) == totals[key], (depth, key)
        for c in OP_CLASSES:
            assert sum(r.flops_by_class[c] for r in rows) == totals["flops_by_class"][c]
    assert len(p.rollup(0)) == 1 and p.rollup(0)[0].output_shape is not None


def test_rollup_names_modules_and_shows_their_output():
    rows = {r.name: r for r in cnnzoo.profile("resnet50").rollup(1)}
    assert list(rows) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert rows["layer3"].type == "Sequential" and rows["layer3"].output_shape == (1, 1024, 14, 14)
    assert rows["layer4"].params == sum(p.numel() for p in create_model("resnet50").layer4.parameters())


def _field(chain):
    """Receptive field and jump after a chain of (kernel, stride) windows: r += (k - 1) * j, j *= s."""
    rf, jump = 1, 1
    for k, s in chain:
        rf, jump = rf + (k - 1) * jump, jump * s
    return rf, jump


def test_vgg16_receptive_field():
    # 13 3x3 convolutions (stride 1) and five 2x2/2 max-pools: conv1_1 conv1_2 pool1 conv2_x2 pool2 conv3_x3 pool3
    # conv4_x3 pool4 conv5_x3 pool5.
    conv, pool = (3, 1), (2, 2)
    chain = [conv] * 2 + [pool] + [conv] * 2 + [pool] + [conv] * 3 + [pool] + [conv] * 3 + [pool] + [conv] * 3
    assert _field(chain) == (196, 16)  # conv5_3: 5 + 1 + 4*2 + 2 + 6*4 + 4 + 6*8 + 8 + 6*16 = 196 (not 212)
    assert _field(chain + [pool]) == (212, 32)  # pool5, the figure usually quoted for VGG-16
    rows = {r.name: r for r in cnnzoo.profile("vgg16").layers}
    assert (rows["features.28"].type, rows["features.28"].receptive_field, rows["features.28"].jump) == ("Conv2d", 196, 16)
    assert rows["features.28"].start == 8.0  # centre of the first conv5_3 unit: the 16-pixel cell [0, 16)
    assert (rows["features.30"].receptive_field, rows["features.30"].jump) == (212, 32)


@pytest.mark.parametrize("name, stride_on_3x3, expected", [("resnet50", False, 483), ("resnet50_v1_5", True, 427)])
def test_resnet50_receptive_field(name, stride_on_3x3, expected):
    # 7x7/2 conv, 3x3/2 max-pool; stages of 3, 4, 6, 3 bottlenecks, each with one 3x3 (1x1s add nothing). The
    # residual branch is the longest path; the first block of stages 2-4 strides on its first 1x1 (the paper) or
    # on its 3x3 (v1.5).
    chain = [(7, 2), (3, 2)] + [(3, 1)] * 3
    for blocks in (4, 6, 3):
        chain += [(1, 2), (3, 1)] if not stride_on_3x3 else [(3, 2)]
        chain += [(3, 1)] * (blocks - 1)
    assert _field(chain) == (expected, 32)
    layer4 = {r.name: r for r in cnnzoo.profile(name).rollup(1)}["layer4"]
    assert (layer4.receptive_field, layer4.jump) == (expected, 32)


class TwoBranches(nn.Module):
    def __init__(self, combine):
        super().__init__()
        self.wide = nn.Conv2d(3, 4, 5, padding=2)
        self.narrow = nn.Conv2d(3, 4, 3, padding=1)
        self.combine = combine

    def forward(self, x):
        return self.combine(self.wide(x), self.narrow(x))


@pytest.mark.parametrize("combine, op", [(torch.add, "add"), (lambda a, b: torch.cat([a, b], 1), "cat"),
                                         (lambda a, b: torch.stack([a, b]).mean(0), "mean")])
def test_where_branches_meet_the_field_is_the_largest(combine, op):
    p = cnnzoo.profile(TwoBranches(combine), input_size=(3, 16, 16))
    joined = [r for r in p.layers if r.type == op][-1]
    assert (joined.name, joined.depth, joined.receptive_field, joined.jump) == ("", 1, 5, 1)


def test_branches_with_different_jumps_have_no_single_field():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(3, 3, 2, stride=2)  # 8x8, jump 2

        def forward(self, x):
            return self.down(x) + x[:, :, :8, :8]  # a crop: 8x8, jump 1

    p = cnnzoo.profile(Mixed(), input_size=(3, 16, 16))
    add = next(r for r in p.layers if r.type == "add")
    assert add.receptive_field is None and add.jump is None


def test_residual_block_add_is_its_own_record():
    rows = [r for r in cnnzoo.profile("resnet18").layers if r.name == "layer1.0"]
    assert [(r.type, r.depth, r.output_shape) for r in rows] == [("add", 3, (1, 64, 56, 56))]
    assert rows[0].flops == rows[0].flops_by_class["elementwise"] == 64 * 56 * 56


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [p.data_ptr() for p in model.parameters()],
            [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


@pytest.mark.parametrize("start_in_train", [True, False])
def test_real_model_is_left_as_it_was(start_in_train):
    model = create_model("resnet20")
    model.train(start_in_train)
    model.stages[0][0].eval()  # a mixed state must come back exactly
    model.head.weight.requires_grad_(False)
    before = _state(model)
    for mode in ("train", "eval"):
        p = cnnzoo.profile(model, batch_size=4, mode=mode)
        assert p.params == count_params(model) and p.trainable_params == count_params(model) - model.head.weight.numel()
    after = _state(model)
    assert before[1:] == after[1:]
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])  # running stats and the step counter too
    assert not any("forward" in m.__dict__ for m in model.modules())  # the fast path's formulas are gone
    assert not torch.nn.modules.module._global_forward_hooks and not torch.nn.modules.module._global_forward_pre_hooks


def test_no_real_memory_even_at_a_huge_batch():
    model = create_model("resnet56")  # a real forward at this batch would need about 200 GB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = cnnzoo.profile(model, batch_size=65_536, mode="train")
    assert p.saved_activation_bytes > 100 * 2**30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 300 * 1024  # KiB on Linux


@pytest.mark.parametrize("name", ["resnet20", "alexnet", "googlenet", "squeezenet1_0", "lenet5", "resnet110_sd"])
def test_training_memory_equals_what_autograd_keeps(name):
    """The activations a training step keeps: compared with the tensors autograd saves in a real CPU forward."""
    from torch.multiprocessing.reductions import StorageWeakRef

    torch.manual_seed(0)
    model = create_model(name).train()
    state = {StorageWeakRef(t.untyped_storage()).cdata for t in [*model.parameters(), *model.buffers()]}
    saved = {}

    def pack(t):
        key = StorageWeakRef(t.untyped_storage()).cdata
        if key not in state:
            saved[key] = (t.untyped_storage().nbytes(), t)
        return t

    x = torch.randn(2, *model_card(name).input_size)
    torch.manual_seed(0)  # the profile draws stochastic depth from seed 0 too
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    measured = sum(nbytes for nbytes, _ in saved.values())
    estimate = cnnzoo.profile(model, batch_size=2, mode="train").saved_activation_bytes
    assert estimate == pytest.approx(measured, rel=0.005)


@pytest.mark.parametrize("name, batch", [
    ("lenet5", 32), ("alexnet", 1), ("zfnet", 1), ("vgg11_bn", 1), ("nin", 4), ("googlenet", 2), ("inception_v4", 1),
    ("squeezenet1_1", 2), ("resnet20", 16), ("resnet50", 1), ("preact_resnet110", 8), ("wrn16_8", 1),
    ("resnext29_8x64d", 1), ("resnet110_sd", 4), ("densenet40_k12", 4), ("fractalnet20", 2),
])
def test_measured_inference_peak_agrees_with_the_estimate(name, batch):
    """A real pass on this CPU, measured at the allocator (PyTorch's profiler), against the estimate: never below
    it (the estimate holds only tensors that must be alive), and above it by no more than one convolution's
    workspace plus one activation held a layer longer (`measurement_slack`, derived in cnnzoo.analysis.measure).
    Measured over the whole zoo at batch 1: 0 to 28 MiB above, always inside the slack."""
    result = cnnzoo.profile(name, batch_size=batch, measure=True)
    estimate, measured = result.inference_peak_bytes, result.measured_peak_bytes
    assert estimate <= measured <= estimate + measurement_slack(result)
    assert result.totals()["measured_peak_bytes"] == measured


def test_measure_leaves_a_real_model_as_it_was():
    model = create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = cnnzoo.profile(model, measure=True)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.measured_peak_bytes >= result.inference_peak_bytes


def test_measure_needs_eval_mode_and_a_real_model():
    with pytest.raises(ValueError, match="mode='eval'"):
        cnnzoo.profile("resnet20", mode="train", measure=True)
    with torch.device("meta"):
        model = create_model("resnet20")
    with pytest.raises(ValueError, match="meta device"):
        measured_inference_peak(model, (3, 32, 32))


# Layers torchvision's twin has and the paper's net has not: VGG's adaptive average pool to 7x7 (an identity at
# 224x224, kept by torchvision so other input sizes reach the classifier).
TWIN_EXTRAS = {"vgg": {("avgpool", "AdaptiveAvgPool2d")}}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", [n for n in list_models() if model_card(n).torchvision is not None])
def test_torchvision_twins_profile_as_torchvision_models(name, mode):
    """Every layer with parameters equals torchvision's layer of the same name (shapes, parameters, MACs, FLOPs
    per class, activations, receptive fields); the totals are equal, apart from layers torchvision adds, whose
    figures make up the whole difference. (Parameter-free layers may be modules in one net and functional calls
    in the other, so their records may be named differently; the totals still cover them.)"""
    import torchvision

    card = model_card(name)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torchvision's note on GoogLeNet's future initialisation
        reference = getattr(torchvision.models, card.torchvision)(weights=None, num_classes=card.num_classes)
    ours = cnnzoo.profile(name, mode=mode)
    theirs = cnnzoo.profile(reference, input_size=card.input_size, mode=mode)
    mine = {(r.name, r.type): r for r in ours.layers if r.params}
    other = {(r.name, r.type): r for r in theirs.layers if r.params}
    assert mine == other
    extras = TWIN_EXTRAS.get(card.family, set())
    added = [r for r in theirs.layers if (r.name, r.type) in extras]
    assert len(added) == len(extras)
    assert ours.params == theirs.params and ours.macs == theirs.macs
    assert ours.flops + sum(r.flops for r in added) == theirs.flops
    assert ours.activation_bytes + sum(r.activation_bytes for r in added) == theirs.activation_bytes
    assert ours.param_bytes == theirs.param_bytes and ours.buffer_bytes == theirs.buffer_bytes
    if not extras:
        assert ours.totals() == theirs.totals()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name, batch", [("squeezenet1_0", 64), ("densenet121", 16), ("inception_v4", 16)])
def test_memory_estimates_against_cuda(name, batch):
    """Measured on the GPU. What a training forward keeps: within 2% (H200, torch 2.11: 0.2-1% apart; the CPU
    test above matches autograd's saved tensors exactly, the rest is the CUDA kernels' own choices). An inference
    pass, with cuDNN off (its workspaces can be as large as the activations, and the estimate leaves workspaces
    out): the estimate is a lower bound within 10% (measured 0.1-6% under: the remaining convolution buffers)."""
    model = create_model(name).cuda()
    x = torch.randn(batch, *model_card(name).input_size, device="cuda")
    estimate_eval = cnnzoo.profile(model, batch_size=batch, mode="eval")
    estimate_train = cnnzoo.profile(model, batch_size=batch, mode="train")
    model.train()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = model(x)
    out = out[0] if isinstance(out, tuple) else out
    torch.cuda.synchronize()
    # The logits are the loss's to keep; the input is the first convolution's.
    kept = torch.cuda.memory_allocated() - before - out.numel() * out.element_size() + x.numel() * x.element_size()
    del out
    cudnn = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        model.eval()
        with torch.no_grad():
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated() - x.numel() * x.element_size()  # the input is part of the peak
            torch.cuda.reset_peak_memory_stats()
            model(x)
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    finally:
        torch.backends.cudnn.enabled = cudnn
    assert estimate_train.saved_activation_bytes == pytest.approx(kept, rel=0.02)
    assert 0.9 * peak <= estimate_eval.peak_activation_bytes <= 1.005 * peak


@pytest.mark.parametrize("name, mode", [("resnet20", "train"), ("alexnet", "train"), ("googlenet", "train"),
                                        ("googlenet_bn", "eval"), ("lenet5", "eval"), ("resnet110_sd", "train"),
                                        ("squeezenet1_0_complex_bypass", "eval"), ("fractalnet20", "train")])
def test_fast_path_agrees_with_tracing_every_op(name, mode, monkeypatch):
    fast = cnnzoo.profile(name, batch_size=2, mode=mode)
    monkeypatch.setattr(trace_module._Run, "fast", False)
    traced = cnnzoo.profile(name, batch_size=2, mode=mode)
    assert fast.layers == traced.layers
    assert (fast.peak_activation_bytes, fast.saved_activation_bytes) == (traced.peak_activation_bytes,
                                                                        traced.saved_activation_bytes)


def test_unknown_ops_are_listed_not_counted():
    class Sorting(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return torch.sort(self.conv(x), dim=1).values

    p = cnnzoo.profile(Sorting(), input_size=(3, 8, 8))
    assert p.uncounted_ops == ("sort",)
    top = [r for r in p.layers if r.name == ""]
    assert [(r.type, r.uncounted_ops, r.flops) for r in top] == [("sort", ("sort",), 0)]
    assert p.macs == 4 * 6 * 6 * 3 * 9  # the convolution is still counted


def test_failure_names_the_layer_and_keeps_the_rows_before_it():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc1 = nn.Linear(4 * 6 * 6, 10)
            self.fc2 = nn.Linear(11, 2)  # expects 11 features, gets 10

        def forward(self, x):
            return self.fc2(self.fc1(self.conv(x).flatten(1)))

    with pytest.raises(ProfileError, match=r"layer 'fc2' \(Linear\) on input shape\(s\) \(1, 10\)") as info:
        cnnzoo.profile(Broken(), input_size=(3, 8, 8))
    err = info.value
    assert err.layer == "fc2" and err.input_shapes == [(1, 10)] and not err.profile.complete
    assert [(r.name, r.output_shape) for r in err.profile.layers] == [("conv", (1, 4, 6, 6)), ("fc1", (1, 10)),
                                                                      ("fc2", None)]


def test_aux_heads_count_their_parameters_when_they_do_not_run():
    p = cnnzoo.profile("googlenet")  # eval: the auxiliary classifiers are skipped
    aux = [r for r in p.layers if r.name.startswith("aux")]
    assert aux and all(r.output_shape is None for r in aux)
    assert p.params == count_params(create_model("googlenet"))


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(batch_size=2.0), "batch_size must be a positive int"),
    (dict(mode="test"), "mode must be 'train' or 'eval'"),
    (dict(input_size=(3, 32)), r"input_size must be \(C, H, W\)"),
    (dict(input_size=(3, 0, 32)), r"input_size must be \(C, H, W\)"),
    (dict(input_size=(3, 8, 8)), "input 8x8 is too small"),  # the model's own check
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cnnzoo.profile("vgg16", **kwargs)


def test_input_size_is_required_outside_the_zoo():
    with pytest.raises(ValueError, match="input_size is required"):
        cnnzoo.profile(nn.Conv2d(3, 3, 3))
    assert cnnzoo.profile(create_model("lenet5", in_chans=3)).input_size == (3, 32, 32)  # from its input check


def test_other_input_size_and_batch_scale_the_figures():
    a, b = cnnzoo.profile("resnet18", input_size=(3, 64, 64)), cnnzoo.profile("resnet18", (3, 64, 64), batch_size=8)
    assert b.macs == 8 * a.macs and b.activation_bytes == 8 * a.activation_bytes and b.params == a.params


def test_formats_show_the_same_records():
    p = cnnzoo.profile("resnet20")
    data = json.loads(formats.to_json(p, depth=2))
    assert set(data) == {"model", "input_size", "batch_size", "mode", "depth", "complete", "totals", "layers",
                         "uncounted_ops"}
    assert data["totals"]["macs"] == sum(layer["macs"] for layer in data["layers"]) == p.macs
    lines = formats.to_csv(p).splitlines()
    assert lines[0].startswith("name,type,depth,input_shape,output_shape,params") and len(lines) == len(p.layers) + 1
    markdown = formats.to_markdown(p, depth=1)
    assert "| stages | Sequential |" in markdown and f"**{p.params:,}**" in markdown


def cnnzoo_cli(*args):
    return subprocess.run([sys.executable, "-m", "cnnzoo", *args], capture_output=True, text=True, timeout=120)


def test_summary_json():
    result = cnnzoo_cli("summary", "resnet20", "--batch", "4", "--mode", "train", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["model"], data["input_size"], data["batch_size"], data["mode"]) == ("resnet20", [3, 32, 32], 4,
                                                                                      "train")
    for key in ("params", "trainable_params", "macs", "flops", "train_flops", "activation_elements",
                "activation_bytes", "param_bytes", "train_memory_bytes", "inference_peak_bytes"):
        assert isinstance(data["totals"][key], int)
    for key in ("name", "type", "depth", "output_shape", "params", "macs", "flops", "activation_elements",
                "receptive_field", "jump", "start"):
        assert key in data["layers"][0]
    assert data["totals"]["params"] == count_params(create_model("resnet20")) and data["uncounted_ops"] == []


def run_main(args, capsys):
    """`cnnzoo ARGS` in this process: (exit status, stdout, stderr)."""
    from cnnzoo.cli import main

    try:
        code = main(args)
    except SystemExit as exit:  # argparse's usage errors and --help
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_table_with_depth(capsys):
    code, out, err = run_main(["summary", "resnet50", "--depth", "1"], capsys)
    assert code == 0, err
    assert "layer4" in out and "layer4.0" not in out and "25,557,032" in out


def test_summary_markdown_and_csv(capsys):
    code, out, _ = run_main(["summary", "lenet5", "--format", "markdown"], capsys)
    assert code == 0 and "| c3.0.maps.0 | Conv2d |" in out and "| c3.0 | index (16 calls) |" in out
    code, out, _ = run_main(["summary", "lenet5", "--format", "csv", "--depth", "1"], capsys)
    assert code == 0 and [line.split(",")[0] for line in out.splitlines()[1:4]] == ["c1", "s2", "c3"]


@pytest.mark.parametrize("args, message", [
    (["--input", "3x224"], "expected CxHxW, e.g. 3x224x224"),
    (["--input", "224x224x3x1"], "expected CxHxW, e.g. 3x224x224"),
    (["--batch", "0"], "at least 1"),
    (["--input", "3x8x8"], "too small"),
    (["--mode", "train", "--measure"], "--mode eval"),
])
def test_summary_bad_input_is_one_line_and_exit_2(args, message, capsys):
    code, out, err = run_main(["summary", "vgg16", *args], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_summary_measure_prints_both_peaks(capsys):
    code, out, err = run_main(["summary", "resnet20", "--measure", "--depth", "0"], capsys)
    assert code == 0, err
    assert "inference peak" in out and "in a real pass" in out


def test_summary_help_has_examples(capsys):
    code, out, _ = run_main(["summary", "--help"], capsys)
    assert code == 0 and "examples:" in out and "cnnzoo summary" in out


def test_skip_meta_init_leaves_real_tensors_and_restores_the_initialisers():
    from cnnzoo.analysis.counting import skip_meta_init

    before = (torch.nn.init.kaiming_normal_, torch.Tensor.normal_, "normal_" in vars(torch.Tensor))
    with skip_meta_init():
        real = torch.nn.init.constant_(torch.empty(3), 2.0)  # a CPU tensor is still initialised
        meta = torch.empty(3, device="meta")
        assert torch.nn.init.kaiming_normal_(meta.view(3, 1)) is not None and meta.normal_() is meta
    assert real.tolist() == [2.0, 2.0, 2.0]
    assert (torch.nn.init.kaiming_normal_, torch.Tensor.normal_, "normal_" in vars(torch.Tensor)) == before
