"""SqueezeNet v1.0 and v1.1 and the bypass variants of Sec. 6, checked against the paper's tables by hand arithmetic.

The widths below are written out from the paper (Table 1, Sec. 5.1, Sec. 6), not read from the module under test,
and every expected count and side is derived from them here.
"""

import math

import pytest
import torch
import torchvision
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.checks import input_range
from cnnzoo.models.squeezenet import FIRE_MODULES, ComplexBypassFire, Fire, SimpleBypassFire
from helpers import stage_sides

# Table 1: (s1x1, e1x1, e3x3) of fire2 ... fire9.
TABLE_1 = {
    "fire2": (16, 64, 64), "fire3": (16, 64, 64), "fire4": (32, 128, 128), "fire5": (32, 128, 128),
    "fire6": (48, 192, 192), "fire7": (48, 192, 192), "fire8": (64, 256, 256), "fire9": (64, 256, 256),
}
CONV1 = {"1_0": (96, 7), "1_1": (64, 3)}  # filters, kernel (stride 2): Table 1 and the v1.1 README
CLASSES = 1000
NAMES = {"1_0": "squeezenet1_0", "1_1": "squeezenet1_1"}


def conv_params(c_in, c_out, k):
    return c_in * c_out * k * k + c_out  # weights + one bias per filter


def fire_params(c_in, s1x1, e1x1, e3x3):
    return conv_params(c_in, s1x1, 1) + conv_params(s1x1, e1x1, 1) + conv_params(s1x1, e3x3, 3)


def fire_inputs(version):
    """Input width of every Fire module: conv1's filters, then the previous module's e1x1 + e3x3."""
    widths, c = {}, CONV1[version][0]
    for name, (_, e1x1, e3x3) in TABLE_1.items():
        widths[name] = c
        c = e1x1 + e3x3
    return widths


def conv_side(side, kernel, stride=1):
    return (side - kernel) // stride + 1


def pool_side(side):
    """3x3 stride-2 max-pool keeping a partial last window (Caffe's rounding up): 0 when no window fits."""
    out = math.ceil((side - 3) / 2) + 1
    return out if out >= 1 and (out - 1) * 2 < side else 0


def fires(model):
    """{name: block} for fire2 ... fire9, in order."""
    blocks = [m for m in model.features if isinstance(m, Fire)]
    return dict(zip(TABLE_1, blocks, strict=True))


def io_shapes(model, x):
    """{name: (input shape, output shape)} of every Fire module on a forward pass of x."""
    shapes, hooks = {}, []
    for name, block in fires(model).items():
        def record(module, args, out, name=name):
            if not out.is_meta:  # create_model's input check runs the model on the meta device first
                shapes[name] = (tuple(args[0].shape), tuple(out.shape))
        hooks.append(block.register_forward_hook(record))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_module_table_is_table_1():
    assert FIRE_MODULES == TABLE_1


def test_table_1_follows_the_metaparameters_of_sec_5_1():
    # Sec. 5.1: e_i = base_e + incr_e * floor(i / freq), with base_e = incr_e = 128, freq = 2, pct_3x3 = 0.5 and
    # squeeze ratio SR = 0.125 (Sec. 6: "every squeeze layer has 8x fewer output channels than the expand layer").
    base_e, incr_e, freq, pct_3x3, sr = 128, 128, 2, 0.5, 0.125
    for i, (s1x1, e1x1, e3x3) in enumerate(TABLE_1.values()):
        e = base_e + incr_e * (i // freq)
        assert (e1x1 + e3x3, e3x3, s1x1) == (e, e * pct_3x3, e * sr)
        assert s1x1 / (e1x1 + e3x3) == sr and s1x1 < e1x1 + e3x3  # Sec. 3.2: the squeeze limits the 3x3s' input


@pytest.mark.parametrize("widths", list(TABLE_1.values()))
def test_fire_module_concatenates_its_expansions_and_keeps_the_side(widths):
    s1x1, e1x1, e3x3 = widths
    fire = Fire(40, s1x1, e1x1, e3x3)
    out = fire(torch.randn(2, 40, 13, 9))
    assert fire.out_channels == e1x1 + e3x3 and out.shape == (2, e1x1 + e3x3, 13, 9)
    assert fire.expand3x3.padding == (1, 1) and fire.expand1x1.kernel_size == (1, 1)
    assert count_params(fire) == fire_params(40, s1x1, e1x1, e3x3)
    assert (out >= 0).all()  # both expansions end in a ReLU


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_every_fire_module_has_its_table_widths(version):
    inputs = fire_inputs(version)
    for name, block in fires(create_model(NAMES[version])).items():
        s1x1, e1x1, e3x3 = TABLE_1[name]
        assert block.squeeze.weight.shape == (s1x1, inputs[name], 1, 1)
        assert block.expand1x1.weight.shape == (e1x1, s1x1, 1, 1)
        assert block.expand3x3.weight.shape == (e3x3, s1x1, 3, 3)


def test_params_of_1_0_are_table_1s_total():
    filters, kernel = CONV1["1_0"]
    inputs = fire_inputs("1_0")
    total = conv_params(3, filters, kernel)
    total += sum(fire_params(inputs[name], *widths) for name, widths in TABLE_1.items())
    total += conv_params(512, CLASSES, 1)  # conv10
    assert total == 1_248_424  # Table 1, '# parameter before pruning', total
    model = create_model("squeezenet1_0")
    assert count_params(model) == total
    for name, block in fires(model).items():
        assert count_params(block) == fire_params(inputs[name], *TABLE_1[name])


def test_params_of_1_1_differ_only_in_conv1_and_fire2():
    filters, kernel = CONV1["1_1"]
    inputs = fire_inputs("1_1")
    total = conv_params(3, filters, kernel) + conv_params(512, CLASSES, 1)
    total += sum(fire_params(inputs[name], *widths) for name, widths in TABLE_1.items())
    assert count_params(create_model("squeezenet1_1")) == total
    assert total == count_params(torchvision.models.squeezenet1_1(weights=None))  # an independent build
    # v1.0 - v1.1: conv1 96@7x7 vs 64@3x3, and fire2's squeeze sees 96 instead of 64 maps.
    assert 1_248_424 - total == conv_params(3, 96, 7) - conv_params(3, 64, 3) + (96 - 64) * TABLE_1["fire2"][0]


@pytest.mark.parametrize("side", [227, 224])
def test_map_sides(side):
    # v1.0 (Table 1): conv1 7x7/2, pools after conv1, fire4, fire8: 227 -> 111 -> 55 -> 27 -> 13.
    c = conv_side(side, 7, 2)
    expected = [c, pool_side(c), pool_side(pool_side(c)), pool_side(pool_side(pool_side(c)))]
    assert stage_sides(create_model("squeezenet1_0"), side) == expected
    if side == 227:
        assert expected == [111, 55, 27, 13]
    # v1.1: conv1 3x3/2, pools after conv1, fire3, fire5; rounding up gives 113 -> 56 -> 28 -> 14 at 227.
    c = conv_side(side, 3, 2)
    expected = [c, pool_side(c), pool_side(pool_side(c)), pool_side(pool_side(pool_side(c)))]
    assert stage_sides(create_model("squeezenet1_1"), side) == expected


def test_pools_follow_the_layout():
    layers = lambda name: [type(m).__name__ for m in create_model(name).features]  # noqa: E731
    f, p = "Fire", "MaxPool2d"
    assert layers("squeezenet1_0") == ["Conv2d", "ReLU", p, f, f, f, p, f, f, f, f, p, f]
    assert layers("squeezenet1_1") == ["Conv2d", "ReLU", p, f, f, p, f, f, p, f, f, f, f]


def test_head_is_dropout_conv10_relu_global_average():
    model = create_model("squeezenet1_0", num_classes=7)
    dropout, conv10, relu, pool = model.classifier
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.5  # Sec. 3.3.1: 50% after fire9
    assert conv10.weight.shape == (7, 512, 1, 1) and conv10.padding == (0, 0)
    assert isinstance(relu, nn.ReLU) and isinstance(pool, nn.AdaptiveAvgPool2d)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # no fully connected layer (Sec. 3.3.1)


def test_simple_bypass_is_exactly_where_the_widths_match():
    model = create_model("squeezenet1_0_simple_bypass")
    shapes = io_shapes(model, torch.randn(1, 3, 227, 227))
    bypassed = {name for name, block in fires(model).items() if isinstance(block, SimpleBypassFire)}
    assert bypassed == {"fire3", "fire5", "fire7", "fire9"}  # Sec. 6
    for name, (shape_in, shape_out) in shapes.items():
        assert shape_in[2:] == shape_out[2:]  # a Fire module keeps the side
        matches = shape_in[1] == shape_out[1]
        assert matches == (name in bypassed), name  # an identity bypass only where input and output widths match
    assert not any(isinstance(b, ComplexBypassFire) for b in fires(model).values())


def test_simple_bypass_adds_no_parameters_and_loads_plain_weights():
    plain, bypass = create_model("squeezenet1_0"), create_model("squeezenet1_0_simple_bypass")
    assert count_params(bypass) == count_params(plain) == 1_248_424  # Sec. 6: simple bypasses add no parameters
    bypass.load_state_dict(torchvision.models.squeezenet1_0(weights=None).state_dict(), strict=True)


def test_simple_bypass_adds_the_input():
    torch.manual_seed(0)
    model = create_model("squeezenet1_0_simple_bypass").eval()
    for name, block in fires(model).items():
        if name not in ("fire3", "fire5", "fire7", "fire9"):
            continue
        plain = Fire(block.in_channels, *TABLE_1[name])
        plain.load_state_dict(block.state_dict(), strict=True)
        x = torch.rand(2, block.in_channels, 9, 9)
        with torch.no_grad():
            torch.testing.assert_close(block(x), plain(x) + x)


def test_complex_bypass_adds_1x1_convolutions_on_the_others():
    model = create_model("squeezenet1_0_complex_bypass")
    blocks = fires(model)
    inputs = fire_inputs("1_0")
    complex_names = {"fire2", "fire4", "fire6", "fire8"}
    assert {n for n, b in blocks.items() if isinstance(b, ComplexBypassFire)} == complex_names
    assert {n for n, b in blocks.items() if isinstance(b, SimpleBypassFire)} == {"fire3", "fire5", "fire7", "fire9"}
    extra = 0
    for name in complex_names:
        width_in, width_out = inputs[name], TABLE_1[name][1] + TABLE_1[name][2]
        assert width_in != width_out
        assert blocks[name].bypass.weight.shape == (width_out, width_in, 1, 1)
        extra += conv_params(width_in, width_out, 1)
    assert extra == 341_248  # 96->128, 128->256, 256->384, 384->512, each with biases
    assert count_params(model) - count_params(create_model("squeezenet1_0_simple_bypass")) == extra
    shapes = io_shapes(model, torch.randn(1, 3, 227, 227))
    for name in complex_names:
        (shape_in, shape_out) = shapes[name]
        assert (shape_in[1], shape_out[1]) == (inputs[name], blocks[name].out_channels)
        assert shape_in[2:] == shape_out[2:]


def test_complex_bypass_with_zeroed_bypass_convolutions_is_the_simple_bypass_net():
    torch.manual_seed(0)
    simple = create_model("squeezenet1_0_simple_bypass").eval()
    complex_ = create_model("squeezenet1_0_complex_bypass").eval()
    missing, unexpected = complex_.load_state_dict(simple.state_dict(), strict=False)
    assert not unexpected
    assert sorted(missing) == sorted(f"features.{i}.bypass.{p}" for i in (3, 5, 8, 10) for p in ("weight", "bias"))
    for block in fires(complex_).values():
        if isinstance(block, ComplexBypassFire):
            nn.init.zeros_(block.bypass.weight)
            nn.init.zeros_(block.bypass.bias)
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        torch.testing.assert_close(complex_(x), simple(x))


@pytest.mark.parametrize("version", ["1_0", "1_1"])
@pytest.mark.parametrize("side", [224, 227])
def test_torchvision_twin_agrees_at_224_and_227(version, side):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, NAMES[version])(weights=None).eval()
    ours = create_model(NAMES[version]).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def smallest_side(version):
    """Smallest input side for which every pool still has a window, from the layer arithmetic alone."""
    kernel = CONV1[version][1]
    pools_after_conv1 = 3  # the three max-pools; Fire modules keep the side
    side = kernel
    while True:
        s = conv_side(side, kernel, 2)
        for _ in range(pools_after_conv1):
            s = pool_side(s)
        if s >= 1:
            return side
        side += 1


@pytest.mark.parametrize("version", ["1_0", "1_1"])
def test_too_small_input_names_the_smallest_side(version):
    name = NAMES[version]
    smallest = smallest_side(version)
    assert smallest == {"1_0": 21, "1_1": 17}[version]
    model = create_model(name).eval()
    assert input_range(model, 0) == (smallest, None)  # global pooling: no largest side
    with pytest.raises(ValueError, match=rf"{name}: input {smallest - 1}x227 is too small.* {smallest}x"):
        model(torch.randn(1, 3, smallest - 1, 227))
    assert model(torch.randn(1, 3, smallest, smallest)).shape == (1, CLASSES)


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_0_complex_bypass"])
def test_initialisation_is_the_caffe_releases(name):
    torch.manual_seed(0)
    model = create_model(name)
    conv10 = model.classifier[1]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert torch.count_nonzero(m.bias) == 0
            if m is not conv10:  # Caffe's xavier filler: uniform on +-sqrt(3 / fan_in)
                fan_in = m.weight[0].numel()
                assert m.weight.abs().max() <= math.sqrt(3 / fan_in)
    assert conv10.weight.std().item() == pytest.approx(0.01, rel=0.02)  # N(0, 0.01^2)
    assert conv10.weight.mean().abs().item() < 1e-4


def test_dropout_option():
    model = create_model("squeezenet1_0", dropout=0.2)
    assert model.classifier[0].p == 0.2
    with pytest.raises(ValueError, match="dropout"):
        create_model("squeezenet1_0", dropout=1.0)
    with pytest.raises(TypeError, match="no option 'simple_bypass'"):  # structure is not a user option
        create_model("squeezenet1_0", simple_bypass=("fire3",))


def test_simple_bypass_block_refuses_unequal_widths():
    with pytest.raises(ValueError, match="equal input and output widths"):
        SimpleBypassFire(96, 16, 64, 64)


def test_cards():
    assert model_card("squeezenet1_0").params == 1_248_424 and model_card("squeezenet1_0").params_rounding == 1
    errors = {n: (model_card(n).top1_err, model_card(n).top5_err) for n in
              ("squeezenet1_0", "squeezenet1_0_simple_bypass", "squeezenet1_0_complex_bypass")}
    accuracy = {"squeezenet1_0": (57.5, 80.3), "squeezenet1_0_simple_bypass": (60.4, 82.5),  # Tables 2 and 3
                "squeezenet1_0_complex_bypass": (58.8, 82.0)}
    for name, (top1, top5) in accuracy.items():
        assert errors[name] == pytest.approx((100 - top1, 100 - top5))
    assert model_card("squeezenet1_1").params is None and model_card("squeezenet1_1").torchvision == "squeezenet1_1"
    assert model_card("squeezenet1_0_complex_bypass").params is None
