"""Stochastic depth against Huang et al. 2016 (Sec. 3) and the authors' Torch code (ResidualDrop.lua, main.lua)."""

import math

import pytest
import torch
import torch.nn.functional as F

import cnnzoo
from cnnzoo import count_params, create_model
from cnnzoo.models.resnet import Bottleneck, CifarBasicBlock, CifarResNet
from cnnzoo.models.stochastic_depth import AvgPoolZeroPadShortcut


# the keep-rate test's 3,000 forwards took 8 minutes with two threads on a loaded two-core machine, 10 s
# with one
pytestmark = pytest.mark.usefixtures("one_thread")


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, (CifarBasicBlock, Bottleneck))]


def _small_net(survival_prob=0.5):
    torch.manual_seed(0)
    return CifarResNet(2, shortcut=AvgPoolZeroPadShortcut, survival_prob=survival_prob)  # 6 blocks


def _count_branch_runs(model):
    """Per block, how many forwards computed its branch (its first convolution runs only then)."""
    runs = [0] * len(_blocks(model))
    for i, block in enumerate(_blocks(model)):
        block.conv1.register_forward_hook(lambda m, inp, out, i=i: runs.__setitem__(i, runs[i] + 1))
    return runs


@pytest.mark.parametrize("name, blocks", [("resnet110_sd", 54), ("resnet1202_sd", 600), ("resnet152_sd", 50)])
def test_linear_decay_from_first_to_last_block(name, blocks):
    with torch.device("meta"):
        model = create_model(name)
    probs = [b.stochastic_depth.survival_prob for b in _blocks(model)]
    assert len(probs) == blocks
    assert probs[0] == pytest.approx(1 - 0.5 / blocks)  # p_l = 1 - l/L (1 - p_L), l = 1
    assert probs[-1] == pytest.approx(0.5)  # p_L
    steps = [a - b for a, b in zip(probs, probs[1:])]
    assert steps == pytest.approx([0.5 / blocks] * (blocks - 1))


def test_empirical_keep_rate_matches_schedule():
    model = _small_net().train()
    runs = _count_branch_runs(model)
    trials = 3000
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        for _ in range(trials):
            model(x)
    for block, kept in zip(_blocks(model), runs):
        p = block.stochastic_depth.survival_prob
        sigma = math.sqrt(p * (1 - p) / trials)
        assert abs(kept / trials - p) < 5 * sigma, f"kept {kept}/{trials}, scheduled p = {p:.3f}"


def test_no_block_is_dropped_in_eval_mode():
    model = _small_net().eval()
    runs = _count_branch_runs(model)
    with torch.no_grad():
        for _ in range(50):
            model(torch.randn(2, 3, 8, 8))
    assert runs == [50] * len(runs)


@pytest.mark.parametrize("index", [0, 2])  # an identity block, and the downsampling block of stage 2
def test_eval_output_is_shortcut_plus_p_times_branch(index):
    model = _small_net().eval()
    for m in model.modules():  # non-trivial BN statistics so the branch is not a plain normalisation
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    block = _blocks(model)[index]
    p = block.stochastic_depth.survival_prob
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(block.skip(x) + p * block.branch(x)))


def test_eval_output_is_deterministic():
    model = _small_net().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_a_dropped_block_returns_relu_of_its_shortcut_and_skips_its_branch():
    block = _blocks(_small_net())[2].train()  # 16 -> 32 channels, stride 2: the avg-pool + zero-pad shortcut
    block.stochastic_depth.keep = lambda: False
    calls = []
    block.conv1.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    out = block(x)
    expected = torch.relu(F.pad(F.avg_pool2d(x, 2), (0, 0, 0, 0, 0, 16)))
    assert torch.equal(out, expected) and not calls
    out.sum().backward()
    # The authors' optimiser steps every weight (weight decay, momentum): a dropped branch gets zeros, not None.
    assert all(p.grad is not None and not p.grad.any() for p in block.parameters())
    torch.testing.assert_close(x.grad, torch.autograd.grad(expected.sum(), x)[0])


def test_avgpool_shortcut_is_parameter_free():
    x = torch.randn(2, 32, 16, 16)
    shortcut = AvgPoolZeroPadShortcut(32, 64, stride=2)
    out = shortcut(x)
    assert out.shape == (2, 64, 8, 8) and not list(shortcut.parameters())
    torch.testing.assert_close(out[:, :32], F.avg_pool2d(x, 2))
    assert not out[:, 32:].any()
    with torch.device("meta"):
        assert count_params(create_model("resnet110_sd")) == count_params(create_model("resnet110")) == 1_727_962


def test_survival_prob_option():
    with torch.device("meta"):
        assert all(b.stochastic_depth is None for b in _blocks(create_model("resnet110_sd", survival_prob=1.0)))
        assert _blocks(create_model("resnet110_sd", survival_prob=0.8))[-1].stochastic_depth.survival_prob == 0.8
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="survival"):
            create_model("resnet20", survival_prob=bad)


def test_training_forward_backward_reaches_every_parameter():
    torch.manual_seed(1)
    model = _small_net(survival_prob=0.2).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# The CIFAR nets' downsampling shortcut is the authors' (2x2 average pool, then zero channels) where resnet110 has
# He et al.'s strided subsampling (a view): one pooled tensor per downsampling block, 16x16x16 and 32x8x8 floats.
AUTHORS_SHORTCUT_BYTES = {"resnet110_sd": (16 * 16 * 16 + 32 * 8 * 8) * 4, "resnet152_sd": 0}


@pytest.mark.parametrize("name, plain", [("resnet152_sd", "resnet152"), ("resnet110_sd", "resnet110")])
def test_eval_memory_is_the_plain_nets(name, plain):
    """At test time every block runs, its branch scaled by p_l: the plain net's memory plus the scaling's output."""
    sd, base = cnnzoo.profile(name), cnnzoo.profile(plain)  # eval, batch 1, as `cnnzoo compare`
    assert (sd.params, sd.macs, sd.param_bytes, sd.buffer_bytes) == (base.params, base.macs, base.param_bytes,
                                                                      base.buffer_bytes)
    # what an inference pass holds at once, and what backward would keep: the same
    assert (sd.peak_activation_bytes, sd.saved_activation_bytes, sd.inference_peak_bytes) == (
        base.peak_activation_bytes, base.saved_activation_bytes, base.inference_peak_bytes)
    scaling = [r for r in sd.layers if r.type == "StochasticDepth"]
    with torch.device("meta"):
        assert len(scaling) == len(_blocks(create_model(name)))
    assert all(r.flops == math.prod(r.output_shape) and r.macs == 0 for r in scaling)  # one multiply per element
    shortcut = (sum(r.activation_bytes for r in sd.layers if r.type == "AvgPoolZeroPadShortcut")
                - sum(r.activation_bytes for r in base.layers if r.type == "ZeroPadShortcut"))
    assert shortcut == AUTHORS_SHORTCUT_BYTES[name]
    # The tensors the forward creates (compare's "activations") differ by the scaled branches and the shortcut only
    assert sd.activation_bytes - base.activation_bytes == sum(r.activation_bytes for r in scaling) + shortcut


@pytest.mark.parametrize("name", ["resnet152_sd", "resnet110_sd"])
def test_eval_scaling_creates_no_tensor(name):
    assert sum(r.activation_bytes for r in cnnzoo.profile(name).layers if r.type == "StochasticDepth") == 0
