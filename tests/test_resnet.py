"""ResNet against He, Zhang, Ren & Sun 2015: Table 1 (ImageNet), Sec. 3.3 (shortcuts), Sec. 4.2 / Table 6 (CIFAR-10)."""

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo import count_params, create_model, model_card
from cnnzoo.models.resnet import BasicBlock, Bottleneck, CifarBasicBlock, CifarResNet, ResNet, ZeroPadShortcut

# Table 1: the depth in each name counts the weight layers (convolutions and the FC), projections excluded.
TABLE1_DEPTH = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152,
                "plain18": 18, "plain34": 34, "resnet50_v1_5": 50, "resnet101_v1_5": 101, "resnet152_v1_5": 152}
CIFAR_TWINS = {"resnet20": "plain20", "resnet32": "plain32", "resnet44": "plain44", "resnet56": "plain56",
               "resnet110": "plain110"}


def _meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _macs(model, size):
    x = torch.empty(1, 3, size, size, device="meta")
    model(x)  # the input check probes the model once per new size: keep that out of the count
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2


def _weight_layers(model):
    return [name for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and ".downsample." not in name]


@pytest.mark.parametrize("name", sorted(TABLE1_DEPTH))
def test_weight_layers_match_the_depth_in_the_name(name):
    assert len(_weight_layers(_meta(name))) == TABLE1_DEPTH[name]


@pytest.mark.parametrize("n", [3, 5, 18])
def test_cifar_depth_is_6n_plus_2(n):
    with torch.device("meta"):
        model = CifarResNet(n, shortcut=ZeroPadShortcut)
    assert len(_weight_layers(model)) == 6 * n + 2


@pytest.mark.parametrize("resnet, plain", sorted(CIFAR_TWINS.items()))
def test_option_a_shortcuts_add_no_parameters(resnet, plain):
    assert count_params(_meta(resnet)) == count_params(_meta(plain))


def test_resnet1202_params_table6():
    with torch.device("meta"):
        plain = CifarResNet(200, shortcut=None)
    computed = count_params(_meta("resnet1202"))
    assert computed == count_params(plain) == 19_421_274  # Table 6: 19.4M
    assert abs(computed - model_card("resnet1202").params) <= 0.05e6


def test_zero_pad_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 16, 32, 32)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 16, 16)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()
    assert not list(ZeroPadShortcut(16, 32, 2).parameters())


def test_cifar_stages_run_at_32_16_8_pixels():
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)  # the first call also runs the input check's probe
        shapes = []
        for stage in model.stages:
            stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
        model(x)
    assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


def test_bottleneck_stride_on_1x1_in_the_paper_and_on_3x3_in_v1_5():
    v1, v1_5 = _meta("resnet50"), _meta("resnet50_v1_5")
    for stage in ("layer2", "layer3", "layer4"):
        first_v1, first_v1_5 = getattr(v1, stage)[0], getattr(v1_5, stage)[0]
        assert (first_v1.conv1.stride, first_v1.conv2.stride) == ((2, 2), (1, 1))
        assert (first_v1_5.conv1.stride, first_v1_5.conv2.stride) == ((1, 1), (2, 2))
        assert first_v1.downsample[0].stride == first_v1_5.downsample[0].stride == (2, 2)
    assert count_params(v1) == count_params(v1_5) == 25_557_032
    assert [(k, p.shape) for k, p in v1.state_dict().items()] == [(k, p.shape) for k, p in v1_5.state_dict().items()]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_multiply_adds_match_table1(name):
    # Table 1 rounds to 0.1e9; its 3.6e9 for ResNet-34 is 1.8% below the count (3.66e9), so allow 2%.
    card = model_card(name)
    macs = _macs(_meta(name).eval(), 224)
    assert macs == pytest.approx(card.macs, rel=0.02)
    if name in ("resnet50", "resnet101", "resnet152"):  # v1.5 costs ~0.23e9 more, off the paper's figure
        assert _macs(_meta(f"{name}_v1_5").eval(), 224) - macs == pytest.approx(0.23e9, rel=0.02)


def test_projection_shortcuts_only_where_dimensions_change():
    model = _meta("resnet34")
    with_projection = [name for name, m in model.named_modules() if getattr(m, "downsample", None) is not None]
    assert with_projection == ["layer2.0", "layer3.0", "layer4.0"]
    assert count_params(model) - count_params(_meta("plain34")) == 173_824  # the three 1x1 projections + BN


def test_plain_nets_have_no_shortcut_at_all():
    block = CifarBasicBlock(16, 16, 1, shortcut=None).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(block.branch(x)))
    assert all(getattr(m, "downsample", None) is None for m in _meta("plain18").modules())


def test_torchvision_grouped_and_wide_bottlenecks_load():
    # resnext50_32x4d and wide_resnet50_2 are built by this class in their own modules.
    for twin, options in (("resnext50_32x4d", dict(groups=32, width_per_group=4)),
                          ("wide_resnet50_2", dict(width_per_group=128))):
        with torch.device("meta"):
            ours = ResNet(Bottleneck, [3, 4, 6, 3], stride_on_3x3=True, **options)
            reference = getattr(torchvision.models, twin)()
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
               {k: v.shape for k, v in reference.state_dict().items()}


def test_he_initialisation_and_unit_gamma():
    torch.manual_seed(0)
    model = create_model("resnet56")
    conv = model.stages[2][3].conv2  # 64 -> 64, 3x3: fan-out 576
    assert conv.weight.std().item() == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))  # no zero-init of the last gamma: not in the paper


def test_basic_block_rejects_groups():
    with pytest.raises(ValueError, match="groups"):
        ResNet(BasicBlock, [2, 2, 2, 2], groups=2)


def test_plain_nets_cannot_take_stochastic_depth():
    with pytest.raises(ValueError, match="shortcuts"):
        ResNet(BasicBlock, [2, 2, 2, 2], shortcuts=False, survival_prob=0.5)
    with pytest.raises(TypeError, match="no option 'survival_prob'"):
        create_model("plain20", survival_prob=0.5)


def test_survival_prob_decays_linearly_over_all_imagenet_blocks():
    model = _meta("resnet50", survival_prob=0.8)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    probs = [b.stochastic_depth.survival_prob for b in blocks]
    assert len(probs) == 16
    assert probs[0] == pytest.approx(1 - 0.2 / 16) and probs[-1] == pytest.approx(0.8)
    assert all(b.stochastic_depth is None for b in _meta("resnet50").modules() if isinstance(b, Bottleneck))
