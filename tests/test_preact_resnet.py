"""Pre-activation ResNets (He et al. 2016): unit ordering, the network's two ends, shortcuts, depth, parameters.

Expected counts are derived here from the paper's description (Appendix, Tables 3-5), not read from the module.
Whole networks are built on the meta device; forward checks of single units use real tensors.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.layers import linear_decay
from cnnzoo.models.preact_resnet import PreActBasicBlock, PreActBottleneck, PreActResNet

CIFAR = ("preact_resnet110", "preact_resnet164", "preact_resnet1001")
ALL = CIFAR + ("preact_resnet200",)
UNITS = {  # units per stage, from the depths: 6n+2 (basic), 9n+2 (bottleneck); ResNet-200 is [3, 24, 36, 3]
    "preact_resnet110": (18, 18, 18), "preact_resnet164": (18, 18, 18), "preact_resnet1001": (111, 111, 111),
    "preact_resnet200": (3, 24, 36, 3),
}
DEPTH = {"preact_resnet110": 110, "preact_resnet164": 164, "preact_resnet1001": 1001, "preact_resnet200": 200}


def meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def units(model):
    return [unit for stage in model.stages for unit in stage]


def bn(c):
    return 2 * c  # scale and shift


def randomise_bn(module, seed=0):
    """Non-trivial batch-norm statistics and affine parameters, so eval-mode BN is not near the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def call_order(module, x):
    """Leaf modules of `module` in the order a forward pass of x calls them."""
    order, hooks = [], []
    for m in module.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, args, out: order.append(mod)))
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return order


# --- parameter arithmetic, from the paper's description -------------------------------------------------------

def cifar_basic_params(n, classes=10):
    """ResNet-110 with pre-activation units: conv1 (16) + its BN, 3 stages of n units [3x3, 3x3] (16, 32, 64) with
    option-A shortcuts (no parameters), the final BN, FC. Every unit but the first has a BN on its input."""
    total = 3 * 9 * 16 + bn(16)
    c_in = 16
    for stage, w in enumerate((16, 32, 64)):
        for i in range(n):
            c = c_in if i == 0 else w
            first = stage == 0 and i == 0
            total += (0 if first else bn(c)) + 9 * c * w + bn(w) + 9 * w * w
        c_in = w
    return total + bn(64) + 64 * classes + classes


def bottleneck_params(layers, widths, stem, stem_channels, classes, *, with_bn=True):
    """Bottleneck units [1x1 w, 3x3 w, 1x1 4w] with BN before each conv (the first unit's first BN is the stem's),
    a 1x1 projection (no BN) where the shape changes, the final BN and FC."""
    b = bn if with_bn else (lambda c: 0)
    total = stem + b(stem_channels)
    c_in = stem_channels
    for stage, (n, w) in enumerate(zip(layers, widths)):
        for i in range(n):
            c = c_in if i == 0 else 4 * w
            first = stage == 0 and i == 0
            total += (0 if first else b(c)) + c * w + b(w) + 9 * w * w + b(w) + w * 4 * w
            if i == 0:
                total += c * 4 * w  # projection shortcut
        c_in = 4 * w
    return total + b(c_in) + c_in * classes + classes


def test_parameter_counts_follow_from_the_architecture():
    assert count_params(meta("preact_resnet110")) == cifar_basic_params(18) == 1_727_962
    for name, n in (("preact_resnet164", 18), ("preact_resnet1001", 111)):
        expected = bottleneck_params((n,) * 3, (16, 32, 64), 3 * 9 * 16, 16, 10)
        assert count_params(meta(name)) == expected
    assert count_params(meta("preact_resnet164")) == 1_703_258
    assert count_params(meta("preact_resnet1001")) == 10_327_706
    resnet200 = bottleneck_params((3, 24, 36, 3), (64, 128, 256, 512), 3 * 49 * 64, 64, 1000)
    assert count_params(meta("preact_resnet200")) == resnet200 == 64_666_152  # 64.7M: WRN paper, Table 8


def test_resnet164_matches_table_4():
    card = model_card("preact_resnet164")
    assert card.params == 1.7e6 and card.params_rounding == 0.1e6
    assert round(count_params(meta("preact_resnet164")) / 1e5) / 10 == 1.7


def test_resnet1001_table_4_figure_counts_weights_without_batch_norm():
    """Table 4 says 10.2M; the authors' network has 10.33M, of which 10.18M are conv and FC weights (see the card)."""
    model = meta("preact_resnet1001")
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    weights = count_params(model) - bn_params
    assert weights == bottleneck_params((111,) * 3, (16, 32, 64), 3 * 9 * 16, 16, 10, with_bn=False) == 10_178_490
    assert round(weights / 1e5) / 10 == 10.2
    assert round(count_params(model) / 1e5) / 10 == 10.3
    card = model_card("preact_resnet1001")
    assert card.params == 10.2e6 and card.params_exclude_norm
    assert count_params(model, exclude_norm=True) == weights


def test_cards_quote_the_papers_errors():
    assert [model_card(n).top1_err for n in CIFAR] == [6.37, 5.46, 4.92]
    card = model_card("preact_resnet200")
    assert (card.top1_err, card.top5_err, card.input_size) == (20.7, 5.3, (3, 224, 224))
    assert "320x320" in card.err_source


# --- structure --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_units_per_stage_and_depth(name):
    model = meta(name)
    assert tuple(len(stage) for stage in model.stages) == UNITS[name]
    convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not n.endswith("shortcut")]
    assert len(convs) + 1 == DEPTH[name]  # weight layers: conv1, the units' convolutions, FC


@pytest.mark.parametrize("name", ALL)
def test_every_unit_but_the_first_starts_with_bn_relu(name):
    model = meta(name).eval()
    first, *rest = units(model)
    assert first.bn1 is None  # it takes the stem's activation ...
    stem = list(model.stem)
    assert isinstance(stem[1], nn.BatchNorm2d) and isinstance(stem[2], nn.ReLU)  # ... "right after conv1"
    sample = rest if len(rest) < 40 else rest[:: len(rest) // 20]
    for unit in sample:
        x = torch.empty(2, unit.bn1.num_features, 8, 8, device="meta")
        order = [m for m in call_order(unit, x) if m is not unit.shortcut]  # the branch's layers, in order
        assert isinstance(order[0], nn.BatchNorm2d) and order[0] is unit.bn1
        assert isinstance(order[1], nn.ReLU)
        kinds = [type(m).__name__ for m in order]
        assert kinds == ["BatchNorm2d", "ReLU", "Conv2d"] * (len(order) // 3)  # BN-ReLU before every weight layer


@pytest.mark.parametrize("name", ALL)
def test_extra_bn_relu_after_the_last_unit(name):
    model = meta(name)
    last = units(model)[-1].out_channels
    head = list(model.head.children())
    assert isinstance(head[0], nn.BatchNorm2d) and head[0].num_features == last
    assert isinstance(head[1], nn.ReLU)
    assert isinstance(head[2], nn.AdaptiveAvgPool2d) and isinstance(head[-1], nn.Linear)


@pytest.mark.parametrize("name", ALL)
def test_stage_outputs(name):
    model = meta(name).eval()
    side = model_card(name).input_size[1]
    x = model.stem(torch.empty(2, 3, side, side, device="meta"))
    widths = (16, 32, 64) if name == "preact_resnet110" else ((64, 128, 256) if name in CIFAR else (256, 512, 1024, 2048))
    sides = (32, 16, 8) if name in CIFAR else (56, 28, 14, 7)
    for stage, w, s in zip(model.stages, widths, sides):
        x = stage(x)
        assert tuple(x.shape) == (2, w, s, s)


def test_shortcuts():
    from cnnzoo.models.resnet import ZeroPadShortcut

    kinds = lambda m: [type(u.shortcut).__name__ for u in units(m)]
    k110 = kinds(meta("preact_resnet110"))
    assert k110.count("ZeroPadShortcut") == 2 and k110.count("Identity") == 52  # option A, as in He et al. 2015
    assert isinstance(meta("preact_resnet110").stages[1][0].shortcut, ZeroPadShortcut)
    for name, stages in (("preact_resnet164", 3), ("preact_resnet1001", 3), ("preact_resnet200", 4)):
        model = meta(name)
        projections = [u for u in units(model) if isinstance(u.shortcut, nn.Conv2d)]
        assert len(projections) == stages and all(stage[0].projection for stage in model.stages)
        assert all(p.shortcut.bias is None and p.shortcut.kernel_size == (1, 1) for p in projections)


def test_bottleneck_stride_on_the_first_1x1():
    model = meta("preact_resnet164")
    for stage in model.stages[1:]:
        unit = stage[0]
        assert unit.conv1.stride == (2, 2) and unit.conv2.stride == (1, 1) and unit.shortcut.stride == (2, 2)


# --- forward semantics on single units --------------------------------------------------------------------------

def bottleneck_by_hand(unit, x):
    pre = F.relu(unit.bn1(x))
    out = unit.conv1(pre)
    out = unit.conv2(F.relu(unit.bn2(out)))
    out = unit.conv3(F.relu(unit.bn3(out)))
    shortcut = unit.shortcut(pre) if isinstance(unit.shortcut, nn.Conv2d) else x
    return shortcut, out


def basic_by_hand(unit, x):
    pre = F.relu(unit.bn1(x))
    out = unit.conv2(F.relu(unit.bn2(unit.conv1(pre))))
    if isinstance(unit.shortcut, nn.Conv2d):
        shortcut = unit.shortcut(pre)
    elif isinstance(unit.shortcut, nn.Identity):
        shortcut = x
    else:  # option A on the raw input: subsample, append zero channels
        sub = x[:, :, ::2, ::2]
        shortcut = torch.cat([sub, sub.new_zeros(sub.shape[0], out.shape[1] - sub.shape[1], *sub.shape[2:])], 1)
    return shortcut, out


@pytest.mark.parametrize("unit, by_hand, c_in", [
    (PreActBottleneck(64, 16), bottleneck_by_hand, 64),  # identity shortcut
    (PreActBottleneck(64, 32, 2), bottleneck_by_hand, 64),  # projection of the pre-activated input
    (PreActBasicBlock(16, 16), basic_by_hand, 16),
    (PreActBasicBlock(16, 32, 2, shortcut="A"), basic_by_hand, 16),  # zero padding of the raw input
    (PreActBasicBlock(16, 32, 2, shortcut="B"), basic_by_hand, 16),
])
def test_unit_output_is_shortcut_plus_branch_with_nothing_after(unit, by_hand, c_in):
    torch.manual_seed(0)
    randomise_bn(unit)
    unit.eval()
    x = torch.randn(2, c_in, 8, 8)
    with torch.no_grad():
        shortcut, branch = by_hand(unit, x)
        out = unit(x)
    assert torch.equal(out, shortcut + branch)
    assert (out < 0).any()  # no ReLU after the addition


def test_first_unit_uses_the_stem_activation_for_both_paths():
    model = PreActResNet(PreActBottleneck, (1, 1, 1), (16, 32, 64)).eval()
    randomise_bn(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        activated = model.stem(x)
        assert (activated >= 0).all()
        unit = model.stages[0][0]
        branch = unit.conv3(F.relu(unit.bn3(unit.conv2(F.relu(unit.bn2(unit.conv1(activated)))))))
        assert torch.equal(unit(activated), unit.shortcut(activated) + branch)


# --- stochastic depth -------------------------------------------------------------------------------------------

def test_survival_probabilities_decay_linearly_over_all_units():
    model = meta("preact_resnet164", survival_prob=0.5)
    got = [u.stochastic_depth.survival_prob for u in units(model)]
    assert got == pytest.approx(linear_decay(54, 0.5))
    assert got[-1] == pytest.approx(0.5) and got[0] == pytest.approx(1 - 0.5 / 54)
    assert all(u.stochastic_depth is None for u in units(meta("preact_resnet164")))  # default 1.0: the paper's net


@pytest.mark.parametrize("unit, c_in", [(PreActBottleneck(64, 32, 2, survival_prob=0.5), 64),
                                        (PreActBasicBlock(16, 32, 2, shortcut="A", survival_prob=0.5), 16)])
def test_a_dropped_unit_returns_its_shortcut_unchanged(unit, c_in):
    torch.manual_seed(0)
    x = torch.randn(2, c_in, 8, 8)
    unit.train()
    unit.stochastic_depth.keep = lambda: False
    out = unit(x)
    with torch.no_grad():
        pre = F.relu(unit.bn1(x))
    assert torch.allclose(out, unit.skip(x, pre))
    out.sum().backward()
    branch = [p for n, p in unit.named_parameters() if not n.startswith(("shortcut", "bn1"))]
    assert all(p.grad is not None and not p.grad.any() for p in branch)  # zero, not None: weight decay still applies
    del unit.stochastic_depth.keep  # back to the real draw, which always keeps in eval mode
    unit.eval()
    randomise_bn(unit)
    with torch.no_grad():
        pre = F.relu(unit.bn1(x))
        expected = unit.skip(x, pre) + 0.5 * unit.residual(pre)  # test time: the branch scaled by p
        assert torch.allclose(unit(x), expected)


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_survival_prob_out_of_range_is_rejected(value):
    with pytest.raises(ValueError, match="survival"):
        meta("preact_resnet110", survival_prob=value)
