"""ResNeXt: the three equivalent forms of Fig. 3, the cardinality and width arithmetic, and the paper's counts.

Widths and counts are written out from the paper (Tables 1, 2, 7; Sec. 3.1, 4, 5.3), not read from the module.
Big networks are built on the meta device; the equivalence checks run on small random blocks.
"""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo import count_params, create_model, model_card
from cnnzoo.layers import linear_decay
from cnnzoo.models.resnext import (
    AggregatedBlock,
    CifarResNeXt,
    EarlyConcatBlock,
    GroupedConvBlock,
    SeparatePathsBlock,
    convert_blocks,
)
from helpers import randomise_norms

FORMS = (SeparatePathsBlock, EarlyConcatBlock, GroupedConvBlock)  # Fig. 3 (a), (b), (c)
ATOL = 1e-5  # the forms sum the same products in different orders


def _meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _grouped_state(block):
    return block.as_form(GroupedConvBlock).state_dict()


# (in, out, C, d, stride): identity shortcut; projection at the same size; projection with downsampling.
SHAPES = [(24, 24, 4, 2, 1), (8, 24, 3, 4, 1), (16, 32, 4, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_three_forms_compute_the_same_function(shape, mode):
    c_in, c_out, cardinality, width, stride = shape
    torch.manual_seed(0)
    reference = randomise_norms(GroupedConvBlock(c_in, c_out, cardinality=cardinality, bottleneck_width=width,
                                                 stride=stride))
    x0 = torch.randn(2, c_in, 9, 9)
    outputs, grads, states = [], [], []
    for form in FORMS:
        block = getattr(reference.as_form(form), mode)()
        assert type(block) is form
        x = x0.clone().requires_grad_()
        out = block(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append(x.grad)
        states.append(_grouped_state(block))  # in train mode: running statistics after one batch
    for out, grad, state in zip(outputs[:2], grads[:2], states[:2]):
        torch.testing.assert_close(out, outputs[2], rtol=0, atol=ATOL)
        torch.testing.assert_close(grad, grads[2], rtol=0, atol=ATOL)
        for key, value in state.items():
            torch.testing.assert_close(value, states[2][key], rtol=0, atol=ATOL, msg=key)


@pytest.mark.parametrize("form", FORMS)
def test_conversion_round_trip_is_exact(form):
    torch.manual_seed(1)
    grouped = randomise_norms(GroupedConvBlock(16, 32, cardinality=4, bottleneck_width=3, stride=2))
    back = grouped.as_form(form).as_form(GroupedConvBlock)
    expected = grouped.state_dict()
    assert back.state_dict().keys() == expected.keys()
    for key, value in back.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_forms_have_the_same_parameter_count():
    # Fig. 3's forms re-arrange the same weights: C*(in*d + 9*d*d + d*out) in the transformation (Eqn. 4).
    c_in, c_out, cardinality, width = 16, 32, 4, 3
    expected = cardinality * (c_in * width + 9 * width * width + width * c_out)
    counts = set()
    for form in FORMS:
        block = form(c_in, c_out, cardinality=cardinality, bottleneck_width=width)
        convs = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
        shortcut = c_in * c_out  # the projection, the same in every form
        assert convs - shortcut == expected
        counts.add(count_params(block))
    assert len(counts) == 1


def test_paper_eqn_4_template_is_about_70k():
    # Sec. 3.4: the conv2 template (256-d in and out) with C=32, d=4 has about the 70k of ResNet's bottleneck.
    block = GroupedConvBlock(256, 256, cardinality=32, bottleneck_width=4)
    convs = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    assert convs == 32 * (256 * 4 + 9 * 4 * 4 + 4 * 256) == 70144
    assert convs == pytest.approx(256 * 64 + 9 * 64 * 64 + 64 * 256, rel=0.01)  # 69,632


def test_converted_network_agrees():
    torch.manual_seed(2)
    small = randomise_norms(CifarResNeXt(cardinality=2, bottleneck_width=2, num_classes=5)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = small(x)
        for form in (SeparatePathsBlock, EarlyConcatBlock):
            converted = CifarResNeXt(cardinality=2, bottleneck_width=2, num_classes=5)
            converted.load_state_dict(small.state_dict())
            convert_blocks(converted, form).eval()
            assert all(type(b) is form for b in converted.modules() if isinstance(b, AggregatedBlock))
            torch.testing.assert_close(converted(x), expected, rtol=0, atol=ATOL)


def test_as_form_rejects_a_non_block():
    block = GroupedConvBlock(8, 8, cardinality=2, bottleneck_width=2)
    with pytest.raises(TypeError, match="subclass of AggregatedBlock"):
        block.as_form(nn.Conv2d)


# ResNeXt-50 (32x4d), Table 1: grouped conv widths 128, 256, 512, 1024 (C=32), outputs 256 ... 2048, 3-4-6-3 blocks.
# Table 2: the 32x4d template's group conv is 128 wide; Sec. 5.1: widths double at each subsampling.
IMAGENET = {  # name: (C, d, blocks per stage)
    "resnext50_32x4d": (32, 4, (3, 4, 6, 3)),
    "resnext101_32x8d": (32, 8, (3, 4, 23, 3)),
    "resnext101_64x4d": (64, 4, (3, 4, 23, 3)),
}


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_cardinality_and_widths(name):
    cardinality, width, layers = IMAGENET[name]
    model = _meta(name)
    for i, blocks in enumerate(layers):
        stage = getattr(model, f"layer{i + 1}")
        assert len(stage) == blocks
        for j, block in enumerate(stage):
            group_width = cardinality * width * 2**i  # C * d, doubled per stage
            assert block.conv2.groups == cardinality
            assert block.conv2.in_channels == block.conv2.out_channels == group_width
            assert block.conv2.weight.shape[1] == width * 2**i  # each group sees d channels
            assert block.conv3.out_channels == 256 * 2**i
            downsamples = i > 0 and j == 0
            assert block.conv2.stride == ((2, 2) if downsamples else (1, 1))  # Sec. 4: stride on the 3x3
            assert block.conv1.stride == (1, 1)
    if name == "resnext50_32x4d":
        assert model.layer1[0].conv2.out_channels == 128  # Table 1 and Table 2's 32x4d column


def _run_on_meta(model, input_size):
    with torch.no_grad():
        return model(torch.empty(1, *input_size, device="meta"))


def _macs(model, input_size):
    _run_on_meta(model.eval(), input_size)  # create_model's input check probes each new size once: not counted
    counter = FlopCounterMode(display=False)
    with counter:
        _run_on_meta(model, input_size)
    return counter.get_total_flops() / 2


def test_resnext50_matches_resnet50_as_table_1_says():
    # Table 1: ResNet-50 25.5M params, 4.1 GFLOPs; ResNeXt-50 (32x4d) 25.0M, 4.2 GFLOPs ("similar").
    resnext, resnet = _meta("resnext50_32x4d"), _meta("resnet50")
    assert count_params(resnext) == pytest.approx(count_params(resnet), rel=0.03)
    assert count_params(resnext) < count_params(resnet)
    assert _macs(resnext, (3, 224, 224)) == pytest.approx(4.2e9, abs=0.05e9)
    # The paper's ResNet-50 baseline is fb.resnet.torch's, stride on the 3x3 (Sec. 4): 4.1 G, where He et al.'s
    # Table 1 (stride on the first 1x1) says 3.8 G.
    assert _macs(_meta("resnet50_v1_5"), (3, 224, 224)) == pytest.approx(4.1e9, abs=0.05e9)
    assert model_card("resnext50_32x4d").macs == 4.2e9


def _params_without_norm(model):
    return sum(p.numel() for m in model.modules() if not isinstance(m, nn.BatchNorm2d)
               for p in m.parameters(recurse=False))


# The paper's counts: Table 1 (ResNet-50, ResNeXt-50) and Table 7 (ResNeXt-29), in units of 0.1M.
PAPER_COUNTS = {"resnet50": 255, "resnext50_32x4d": 250, "resnext29_8x64d": 344, "resnext29_16x64d": 681}


@pytest.mark.parametrize("name", PAPER_COUNTS)
def test_paper_counts_read_as_rounded_without_bn_or_truncated_with_it(name):
    # Both readings fit every count the paper prints; rounding the full count does not (68.16M -> 68.2M, 25.56M ->
    # 25.6M). So the cards accept +-0.1M, and each reading is checked here on its own.
    model = _meta(name)
    assert round(_params_without_norm(model) / 1e5) == PAPER_COUNTS[name]
    assert count_params(model) // 100_000 == PAPER_COUNTS[name]


def _stage_outputs(model, side=32):
    _run_on_meta(model.eval(), (3, side, side))  # the input check's probe, kept out of the record
    shapes = []
    hooks = [s.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for s in model.stages]
    _run_on_meta(model, (3, side, side))
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("name,cardinality", [("resnext29_8x64d", 8), ("resnext29_16x64d", 16)])
def test_resnext29_stages(name, cardinality):
    model = _meta(name)
    assert model.stem[0].out_channels == 64  # Appendix A: "3x3 conv with 64 filters"
    assert _stage_outputs(model) == [(256, 32, 32), (512, 16, 16), (1024, 8, 8)]  # Sec. 5.3, Appendix A
    for i, stage in enumerate(model.stages):
        assert len(stage) == 3
        for j, block in enumerate(stage):
            assert isinstance(block, GroupedConvBlock)
            assert block.conv2.groups == cardinality
            assert block.conv2.out_channels == cardinality * 64 * 2**i  # 512, 1024, 2048 for 8x64d
            assert block.conv2.stride == ((2, 2) if i > 0 and j == 0 else (1, 1))
    convs_on_main_path = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in n]
    assert len(convs_on_main_path) + 1 == 29  # stem + 9 blocks x 3 + the classifier


def test_resnext29_params_match_table_7():
    assert count_params(_meta("resnext29_8x64d")) == pytest.approx(34.4e6, abs=0.05e6)
    assert count_params(_meta("resnext29_16x64d")) == pytest.approx(68.1e6, abs=0.1e6)


def test_resnext29_stochastic_depth_decays_linearly():
    model = _meta("resnext29_8x64d", survival_prob=0.5)
    probs = [b.stochastic_depth.survival_prob for b in model.modules() if isinstance(b, AggregatedBlock)]
    assert probs == pytest.approx(linear_decay(9, 0.5))
    assert probs[-1] == 0.5
    off = _meta("resnext29_8x64d")
    assert all(b.stochastic_depth is None for b in off.modules() if isinstance(b, AggregatedBlock))


def test_dropped_block_is_the_shortcut_and_eval_scales_the_branch(monkeypatch):
    torch.manual_seed(3)
    block = randomise_norms(GroupedConvBlock(8, 16, cardinality=2, bottleneck_width=2, stride=2,
                                             survival_prob=0.5))
    x = torch.randn(2, 8, 8, 8)
    block.eval()
    with torch.no_grad():
        shortcut, branch = block.shortcut(x), block.branch(x)
        torch.testing.assert_close(block(x), torch.relu(shortcut + 0.5 * branch))  # Huang et al. Eqn. 5
    block.train()
    monkeypatch.setattr(block.stochastic_depth, "keep", lambda: False)
    out = block(x)
    torch.testing.assert_close(out, torch.relu(block.shortcut(x)))
    out.sum().backward()
    skipped = [p for n, p in block.named_parameters() if not n.startswith("shortcut.")]
    assert all(p.grad is not None and not p.grad.any() for p in skipped)


def test_imagenet_options_and_cards():
    model = _meta("resnext50_32x4d", survival_prob=0.5)
    probs = [b.stochastic_depth.survival_prob for b in model.modules() if getattr(b, "stochastic_depth", None)]
    assert len(probs) == 16 and probs[-1] == pytest.approx(0.5)
    card = model_card("resnext101_32x8d")
    assert card.params is None and card.top1_err is None and "torchvision" in card.deviations[0]
    assert (model_card("resnext101_64x4d").top1_err, model_card("resnext101_64x4d").top5_err) == (20.4, 5.3)
    assert model_card("resnext50_32x4d").top1_err == 22.2
