"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-d-k structure, dropout placement, parameters against Tables 4,
5 and 8, the factory's validation, and the ImageNet WRN-50-2's widened bottleneck.

Expected counts are derived here from Table 1's description; whole networks are built on the meta device.
"""

import pytest
import torch
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.layers import linear_decay
from cnnzoo.models.wide_resnet import WideResNet, wide_resnet

REGISTERED = {"wrn40_4": (40, 4), "wrn16_8": (16, 8), "wrn28_10": (28, 10)}
# Table 4 (ZCA runs) lists more WRN-d-k with their parameter counts, rounded to 0.1M.
TABLE_4 = {(40, 1): 0.6e6, (40, 2): 2.2e6, (40, 4): 8.9e6, (40, 8): 35.7e6, (28, 10): 36.5e6, (28, 12): 52.5e6,
           (22, 8): 17.2e6, (22, 10): 26.8e6, (16, 8): 11.0e6, (16, 10): 17.1e6}


def meta(builder, *args, **kwargs):
    with torch.device("meta"):
        return builder(*args, **kwargs)


def units(model):
    return [unit for stage in model.stages for unit in stage]


def wrn_params(d, k, classes=10):
    """conv1 (3x3, 16) + BN; per group N blocks of BN + 3x3 + BN + 3x3 (the first block's input BN is the stem's);
    a 1x1 shortcut where the width changes; the final BN and FC."""
    n = (d - 4) // 6
    total, c_in = 3 * 9 * 16 + 2 * 16, 16
    for group, w in enumerate((16 * k, 32 * k, 64 * k)):
        for i in range(n):
            c = c_in if i == 0 else w
            total += (0 if group == i == 0 else 2 * c) + 9 * c * w + 2 * w + 9 * w * w
            if c != w:
                total += c * w
        c_in = w
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize("d, k", sorted(TABLE_4))
def test_parameter_counts_match_table_4(d, k):
    computed = count_params(meta(wide_resnet, d, k))
    assert computed == wrn_params(d, k)
    assert abs(computed - TABLE_4[d, k]) <= 0.05e6


@pytest.mark.parametrize("name", REGISTERED)
def test_cards_hold_table_5(name):
    card = model_card(name)
    table_5 = {"wrn40_4": (8.9e6, 4.53), "wrn16_8": (11.0e6, 4.27), "wrn28_10": (36.5e6, 4.00)}
    assert (card.params, card.top1_err) == table_5[name] and card.params_rounding == 0.1e6
    assert "mean/std" in card.err_source
    assert count_params(meta(create_model, name)) == wrn_params(*REGISTERED[name])


@pytest.mark.parametrize("d, k", [(16, 8), (28, 10), (40, 4), (22, 1), (10, 2)])
def test_wrn_d_k_structure(d, k):
    model = meta(wide_resnet, d, k)
    n = (d - 4) // 6
    assert [len(group) for group in model.stages] == [n, n, n]
    assert model.stem.conv.out_channels == 16
    for group, width in zip(model.stages, (16 * k, 32 * k, 64 * k)):
        assert all(u.conv1.out_channels == u.conv2.out_channels == u.out_channels == width for u in group)
        assert all(isinstance(u.shortcut, nn.Identity) for u in group[1:])
    assert [g[0].conv1.stride for g in model.stages] == [(1, 1), (2, 2), (2, 2)]
    projections = [u.shortcut for u in units(model) if isinstance(u.shortcut, nn.Conv2d)]
    assert all(p.kernel_size == (1, 1) and p.bias is None for p in projections)
    assert len(projections) == (3 if k > 1 else 2)  # 16 -> 16k changes the width only when k > 1
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs == 6 * n + 1 + len(projections)
    if k > 1:
        assert convs == d  # d = 6N + 4 counts conv1, the 6N block convolutions and the three 1x1 shortcuts
    x = torch.empty(2, 3, 32, 32, device="meta")
    assert tuple(model.stages(model.stem(x)).shape) == (2, 64 * k, 8, 8)
    assert isinstance(model.head.bn, nn.BatchNorm2d) and model.head.bn.num_features == 64 * k


@pytest.mark.parametrize("depth", [15, 4, 29, 0, -2])
def test_factory_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match=r"6N \+ 4"):
        wide_resnet(depth, 4)


def test_factory_rejects_bad_widen_factor_and_types():
    with pytest.raises(ValueError, match="widen_factor"):
        wide_resnet(16, 0)
    with pytest.raises(TypeError, match="depth must be an int"):
        wide_resnet(28.0, 10)
    with pytest.raises(TypeError, match="widen_factor must be an int"):
        wide_resnet(28, "10")
    with pytest.raises(ValueError, match="dropout"):
        wide_resnet(16, 2, dropout=1.0)
    with pytest.raises(TypeError, match="dropout must be"):
        create_model("wrn16_8", dropout="0.3")


def test_dropout_sits_between_the_two_convolutions():
    model = wide_resnet(10, 1, dropout=0.3)
    unit = model.stages[1][0]
    order, hooks = [], []
    for m in unit.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, args, out: order.append(mod)))
    unit(torch.randn(2, 16, 8, 8))
    for h in hooks:
        h.remove()
    branch = [m for m in order if m is not unit.shortcut]
    assert [type(m).__name__ for m in branch] == [
        "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Dropout", "Conv2d"]
    assert branch[2] is unit.conv1 and branch[-1] is unit.conv2 and branch[5].p == 0.3
    assert all(u.dropout is None for u in units(wide_resnet(10, 1)))  # default: no dropout layer at all


def test_dropout_is_active_in_training_and_off_in_eval():
    torch.manual_seed(0)
    with_dropout = wide_resnet(10, 2, dropout=0.3)
    x = torch.randn(4, 3, 32, 32)
    with_dropout.train()
    assert not torch.equal(with_dropout(x), with_dropout(x))
    without = wide_resnet(10, 2)
    without.load_state_dict(with_dropout.state_dict())  # dropout adds no parameters; BN statistics come along
    with_dropout.eval(), without.eval()
    with torch.no_grad():
        assert torch.equal(with_dropout(x), without(x))


def test_dropout_option_through_the_registry():
    model = meta(create_model, "wrn28_10", dropout=0.3)
    assert all(u.dropout.p == 0.3 for u in units(model)) and len(units(model)) == 12


def test_survival_prob_decays_over_all_blocks():
    model = meta(create_model, "wrn16_8", survival_prob=0.8)
    assert [u.stochastic_depth.survival_prob for u in units(model)] == pytest.approx(linear_decay(6, 0.8))
    imagenet = meta(create_model, "wide_resnet50_2", survival_prob=0.8)
    blocks = [b for layer in (imagenet.layer1, imagenet.layer2, imagenet.layer3, imagenet.layer4) for b in layer]
    assert [b.stochastic_depth.survival_prob for b in blocks] == pytest.approx(linear_decay(16, 0.8))


def test_wide_resnet_class_is_the_registered_builder():
    assert isinstance(meta(create_model, "wrn40_4"), WideResNet)


# --- ImageNet ---------------------------------------------------------------------------------------------------

def wrn50_2_params(classes=1000):
    """ResNet-50 (Table 1 of He et al. 2015) with every bottleneck's inner 1x1 and 3x3 width doubled: 128 ... 1024
    inside, 256 ... 2048 outside; projection shortcuts (with BN) where the shape changes."""
    total, c_in = 3 * 49 * 64 + 2 * 64, 64
    for n, planes in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        inner, out = 2 * planes, 4 * planes
        for i in range(n):
            c = c_in if i == 0 else out
            total += c * inner + 2 * inner + 9 * inner * inner + 2 * inner + inner * out + 2 * out
            if i == 0:
                total += c * out + 2 * out
        c_in = out
    return total + c_in * classes + classes


def test_wrn50_2_bottleneck_widens_the_inner_layers():
    model = meta(create_model, "wide_resnet50_2")
    for layer, planes in zip((model.layer1, model.layer2, model.layer3, model.layer4), (64, 128, 256, 512)):
        for block in layer:
            assert block.conv1.out_channels == block.conv2.out_channels == 2 * planes
            assert block.conv3.out_channels == 4 * planes
        assert layer[0].conv2.stride == ((1, 1) if planes == 64 else (2, 2))  # the released model: stride on the 3x3
    assert count_params(model) == wrn50_2_params() == 68_883_240
    card = model_card("wide_resnet50_2")
    assert (card.params, card.top1_err, card.top5_err) == (68.9e6, 21.9, 6.03)
    assert card.torchvision == "wide_resnet50_2" and model_card("wide_resnet101_2").torchvision == "wide_resnet101_2"
