"""GoogLeNet as Szegedy et al. 2014 specify it, and torchvision's batch-normalised GoogLeNet.

Expected numbers are written out from the paper (Table 1's widths and map sizes, Sec. 5's auxiliary classifiers,
the depth stated in Sec. 5), from the lecture's inception example and from torchvision, not read off the model.
Shape checks run on the meta device; real forward passes use small batches.
"""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.models.googlenet import AUX_LOSS_WEIGHT, GoogLeNetOutput, Inception, NaiveInception, googlenet_loss

# Table 1, written out again: module -> (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, output size).
PAPER_TABLE_1 = {
    "3a": (64, 96, 128, 16, 32, 32, (28, 28, 256)),
    "3b": (128, 128, 192, 32, 96, 64, (28, 28, 480)),
    "4a": (192, 96, 208, 16, 48, 64, (14, 14, 512)),
    "4b": (160, 112, 224, 24, 64, 64, (14, 14, 512)),
    "4c": (128, 128, 256, 24, 64, 64, (14, 14, 512)),
    "4d": (112, 144, 288, 32, 64, 64, (14, 14, 528)),
    "4e": (256, 160, 320, 32, 128, 128, (14, 14, 832)),
    "5a": (256, 160, 320, 32, 128, 128, (7, 7, 832)),
    "5b": (384, 192, 384, 48, 128, 128, (7, 7, 1024)),
}
MODEL_NAMES = ["googlenet", "googlenet_bn"]


def _meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _shapes(model, x, names):
    """Output shape (C, H, W) of each named submodule for input x."""
    found, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        hooks.append(modules[name].register_forward_hook(
            lambda m, args, out, name=name: found.__setitem__(name, tuple(out.shape[1:]))))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return found


# --- the inception blocks ---------------------------------------------------------------------------------------

def test_naive_and_bottleneck_blocks_give_the_lecture_depths():
    # Lecture: a 28x28x256 input; 128 1x1, 192 3x3 and 96 5x5 filters plus the 3x3 max-pool, which passes all 256
    # maps, is 672 deep. With 64-filter 1x1 reductions before the 3x3 and 5x5 convolutions and a 64-filter
    # projection after the pool, the same module is 480 deep.
    x = torch.randn(1, 256, 28, 28)
    naive = NaiveInception(256, ch1x1=128, ch3x3=192, ch5x5=96)
    assert naive.out_channels == 128 + 192 + 96 + 256 == 672
    assert naive(x).shape == (1, 128 + 192 + 96 + 256, 28, 28)
    bottleneck = Inception(256, ch1x1=128, ch3x3_reduce=64, ch3x3=192, ch5x5_reduce=64, ch5x5=96, pool_proj=64)
    assert bottleneck.out_channels == 128 + 192 + 96 + 64 == 480
    assert bottleneck(x).shape == (1, 128 + 192 + 96 + 64, 28, 28)
    # The reductions are what make the module cheaper: fewer weights than the naive one.
    assert count_params(bottleneck) < count_params(naive)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_module_widths_are_table_1s(name):
    model = _meta(name)
    depth = 192  # the stem's output (Table 1: 28x28x192)
    for module, (c1, r3, c3, r5, c5, proj, (_, _, out)) in PAPER_TABLE_1.items():
        block = getattr(model, f"inception{module}")
        assert block.out_channels == c1 + c3 + c5 + proj == out
        assert block.branch1.conv.weight.shape[:2] == (c1, depth)
        assert block.branch2[0].conv.weight.shape[:2] == (r3, depth)
        assert block.branch2[1].conv.weight.shape[:2] == (c3, r3)
        assert block.branch3[0].conv.weight.shape[:2] == (r5, depth)
        assert block.branch3[1].conv.weight.shape[:2] == (c5, r5)
        assert block.branch4[1].conv.weight.shape[:2] == (proj, depth)
        depth = out
    outs = [getattr(model, f"inception{m}").out_channels for m in PAPER_TABLE_1]
    assert outs == [256, 480, 512, 512, 512, 528, 832, 832, 1024]


def test_paper_branches_have_3x3_and_5x5_kernels_torchvisions_3x3_twice():
    paper, tv = _meta("googlenet"), _meta("googlenet_bn")
    for module in PAPER_TABLE_1:
        assert getattr(paper, f"inception{module}").branch2[1].conv.kernel_size == (3, 3)
        assert getattr(paper, f"inception{module}").branch3[1].conv.kernel_size == (5, 5)
        assert getattr(tv, f"inception{module}").branch3[1].conv.kernel_size == (3, 3)  # torchvision's "5x5"


# --- the network of the paper -----------------------------------------------------------------------------------

def test_map_sizes_are_table_1s():
    model = _meta("googlenet").train()
    # Table 1's output sizes (C, H, W); the stem's 1x1 reduction (conv2) keeps 56x56x64.
    expected = {
        "conv1": (64, 112, 112), "maxpool1": (64, 56, 56), "conv2": (64, 56, 56), "conv3": (192, 56, 56),
        "maxpool2": (192, 28, 28), "maxpool3": (480, 14, 14), "maxpool4": (832, 7, 7), "avgpool": (1024, 1, 1),
        # Sec. 5: the auxiliary pools give 4x4x512 on (4a) and 4x4x528 on (4d).
        "aux1.pool": (512, 4, 4), "aux2.pool": (528, 4, 4),
    }
    expected.update({f"inception{m}": (c, h, w) for m, (*_, (h, w, c)) in PAPER_TABLE_1.items()})
    assert _shapes(model, torch.empty(2, 3, 224, 224, device="meta"), expected) == expected


def _weight_layer_depth(model, kinds):
    """Most `kinds` layers on any path from input to output of the traced (eval-mode) graph."""
    graph = torch.fx.symbolic_trace(model.eval())
    modules = dict(graph.named_modules())
    depth = {}
    for node in graph.graph.nodes:
        d = max((depth[n] for n in node.all_input_nodes), default=0)
        if node.op == "call_module" and isinstance(modules[node.target], kinds):
            d += 1
        depth[node] = d
    return max(depth.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_22_layers_deep_27_with_pooling(name):
    # Sec. 5: "The network is 22 layers deep when counting only layers with parameters (or 27 layers if we also
    # count pooling)." Table 1's depth column agrees: 1 + 2 (stem) + 9 x 2 (modules) + 1 (linear) = 22.
    model = _meta(name)
    assert _weight_layer_depth(model, (nn.Conv2d, nn.Linear)) == 22
    pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    assert _weight_layer_depth(model, (nn.Conv2d, nn.Linear, *pools)) == 27


def test_parameter_count_is_the_sum_of_table_1s_layers():
    def conv(n, k, depth):  # n kernels of k x k x depth, one bias each
        return n * k * k * depth + n

    stem = conv(64, 7, 3) + conv(64, 1, 64) + conv(192, 3, 64)
    total, depth = stem, 192
    for c1, r3, c3, r5, c5, proj, (_, _, out) in PAPER_TABLE_1.values():
        total += conv(c1, 1, depth) + conv(r3, 1, depth) + conv(c3, 3, r3) + conv(r5, 1, depth) + conv(c5, 5, r5)
        total += conv(proj, 1, depth)
        depth = out
    total += 1024 * 1000 + 1000  # the linear classifier
    assert count_params(_meta("googlenet", aux_logits=False)) == total == 6_998_552


def test_lrn_is_caffes():
    # Caffe's across-channel LRN: b = a / (k + alpha / size * sum of a^2 over `size` neighbouring maps) ** beta,
    # with the bvlc_googlenet constants size 5, alpha 1e-4, beta 0.75 and Caffe's default k = 1.
    model = create_model("googlenet")
    a = torch.randn(2, 9, 4, 4) * 30
    squares = F.pad(a.pow(2), (0, 0, 0, 0, 2, 2))  # zero maps beyond the first and last channel
    window = sum(squares[:, i:i + 9] for i in range(5))
    expected = a / (1.0 + 1e-4 / 5 * window) ** 0.75
    for lrn in (model.lrn1, model.lrn2):
        torch.testing.assert_close(lrn(a), expected)


def test_initialisation_is_the_caffe_releases():
    torch.manual_seed(0)
    model = create_model("googlenet")
    classifiers = {model.fc, model.aux1.fc2, model.aux2.fc2}
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight[0].numel()
            bound = math.sqrt(3 / fan_in)  # Caffe "xavier": uniform in +-sqrt(3 / fan_in)
            assert layer.weight.abs().max() <= bound
            assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.2)
            assert torch.all(layer.bias == (0.0 if layer in classifiers else 0.2))


# --- auxiliary classifiers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_aux_heads_answer_in_training_mode_only(name):
    model = _meta(name, num_classes=7)
    x = torch.empty(2, 3, 224, 224, device="meta")
    out = model.train()(x)
    assert isinstance(out, GoogLeNetOutput) and out._fields == ("logits", "aux1", "aux2")
    assert [tuple(o.shape) for o in out] == [(2, 7)] * 3
    out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_aux_heads_switched_off(name):
    with_aux, without = _meta(name, num_classes=7), _meta(name, num_classes=7, aux_logits=False)
    assert without.aux1 is None and without.aux2 is None
    assert not any(k.startswith("aux") for k, _ in without.named_parameters())
    out = without.train()(torch.empty(2, 3, 224, 224, device="meta"))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    keys, keys_without = set(with_aux.state_dict()), set(without.state_dict())
    assert keys_without < keys
    assert {k.split(".")[0] for k in keys - keys_without} == {"aux1", "aux2"}
    assert not any(k.startswith(("aux1.", "aux2.")) for k in keys_without)
    # Sec. 5: a 1x1 convolution with 128 filters on 512 (4a) or 528 (4d) maps, FC 4x4x128 -> 1024, FC 1024 -> classes.
    conv = {"googlenet": lambda c: c * 128 + 128, "googlenet_bn": lambda c: c * 128 + 2 * 128}[name]  # bias or BN
    heads = sum(conv(c) + (2048 * 1024 + 1024) + (1024 * 7 + 7) for c in (512, 528))
    assert count_params(with_aux) - count_params(without) == heads


def test_loss_weights_aux_heads_by_0_3():
    torch.manual_seed(0)
    main, aux1, aux2 = torch.randn(3, 4, 10).unbind(0)
    target = torch.tensor([1, 5, 9, 0])
    expected = F.cross_entropy(main, target) + 0.3 * (F.cross_entropy(aux1, target) + F.cross_entropy(aux2, target))
    assert AUX_LOSS_WEIGHT == 0.3
    torch.testing.assert_close(googlenet_loss(GoogLeNetOutput(main, aux1, aux2), target), expected)
    torch.testing.assert_close(googlenet_loss((main, aux2, aux1), target), expected)  # torchvision's order
    torch.testing.assert_close(googlenet_loss(main, target), F.cross_entropy(main, target))  # eval mode, heads off
    torch.testing.assert_close(googlenet_loss((main, aux1, aux2), target, aux_weight=1.0),
                               F.cross_entropy(main, target) + F.cross_entropy(aux1, target)
                               + F.cross_entropy(aux2, target))
    with pytest.raises(TypeError, match="logits"):
        googlenet_loss([main, aux1], target)


def test_loss_trains_the_aux_heads():
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=5).train()
    out = model(torch.randn(2, 3, 224, 224))
    loss = googlenet_loss(out, torch.tensor([0, 3]))
    loss.backward()
    assert model.aux1.fc2.weight.grad.abs().sum() > 0 and model.aux2.conv.conv.weight.grad.abs().sum() > 0


# --- input sizes --------------------------------------------------------------------------------------------------

def _side_at_4a(side):
    """Caffe's size arithmetic for the paper's net: conv 7x7/2 pad 3 rounds down, the three 3x3/2 pools up."""
    side = (side + 2 * 3 - 7) // 2 + 1
    for _ in range(3):
        side = math.ceil((side - 3) / 2) + 1
    return side


def test_training_mode_needs_the_aux_heads_input_size():
    def main_path_fits(s4):  # inception 4e keeps 4a's size; pool4 must give Table 1's 7x7 for the 7x7 avg pool
        return math.ceil((s4 - 3) / 2) + 1 == 7

    def aux_fits(s4):  # the 5x5/3 average pool must give Sec. 5's 4x4 for the FC layer
        return math.ceil((s4 - 5) / 3) + 1 == 4

    eval_sides = [s for s in range(100, 400) if main_path_fits(_side_at_4a(s))]
    train_sides = [s for s in eval_sides if aux_fits(_side_at_4a(s))]
    smallest, largest_train, largest_eval = min(train_sides), max(train_sides), max(eval_sides)
    assert smallest <= 224 <= largest_train < largest_eval

    model = _meta("googlenet").train()
    with pytest.raises(ValueError, match=rf"googlenet: input {smallest - 1}x224 is too small.* {smallest}x"):
        model(torch.randn(1, 3, smallest - 1, 224))
    # Evaluation mode takes sizes the auxiliary heads cannot; training mode says where its range ends.
    model.eval()(torch.empty(1, 3, largest_eval, 224, device="meta"))
    with pytest.raises(ValueError, match=rf"too large.* up to {largest_train}x"):
        model.train()(torch.randn(1, 3, largest_eval, 224))


def test_googlenet_bn_trains_from_torchvisions_smallest_size():
    # torchvision's weights metadata for googlenet gives min_size (15, 15); adaptive pools let the heads follow.
    model = _meta("googlenet_bn").train()
    with pytest.raises(ValueError, match=r"googlenet_bn: input 14x224 is too small.* 15x"):
        model(torch.randn(1, 3, 14, 224))
    assert all(o.shape == (2, 1000) for o in model(torch.empty(2, 3, 15, 224, device="meta")))


# --- torchvision's GoogLeNet ------------------------------------------------------------------------------------

def test_googlenet_bn_card_matches_torchvisions_parameter_counts():
    # torchvision's weights metadata: num_params 6,624,904 (its released model, without the auxiliary heads).
    assert count_params(_meta("googlenet_bn", aux_logits=False)) == 6_624_904
    reference = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    assert count_params(_meta("googlenet_bn")) == count_params(reference)
    assert model_card("googlenet_bn").torchvision == "googlenet"


@pytest.mark.parametrize("aux_logits, transform_input", [(True, False), (False, False), (True, True)])
def test_googlenet_bn_is_torchvisions(aux_logits, transform_input):
    torch.manual_seed(0)
    # dropout 0 so that training mode is deterministic and the auxiliary heads can be compared too
    options = dict(num_classes=10, aux_logits=aux_logits, transform_input=transform_input, dropout=0.0,
                   dropout_aux=0.0)
    reference = torchvision.models.googlenet(weights=None, init_weights=True, **options)
    ours = create_model("googlenet_bn", **options)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)  # adaptive pooling: a small input keeps the test fast
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)
        if aux_logits:
            main, aux1, aux2 = ours.train()(x)
            tv = reference.train()(x)  # (logits, aux_logits2, aux_logits1)
            for a, b in [(main, tv.logits), (aux1, tv.aux_logits1), (aux2, tv.aux_logits2)]:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_options_are_checked():
    with pytest.raises(ValueError, match="dropout must be in"):
        create_model("googlenet", dropout=1.0)
    with pytest.raises(ValueError, match="dropout_aux must be in"):
        create_model("googlenet_bn", dropout_aux=-0.1)
    with pytest.raises(ValueError, match="in_chans=3"):
        create_model("googlenet_bn", in_chans=1, transform_input=True)
    with pytest.raises(TypeError, match="option aux_logits must be bool"):
        create_model("googlenet", aux_logits=1)
