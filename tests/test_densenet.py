"""DenseNet (Huang et al. 2017) against the paper: dense connectivity (Eq. 2 and its L(L+1)/2 connections), layer
widths k_0 + k(l - 1), compression, depth, Table 2 parameter arithmetic, dropout placement, and the memory-efficient
option. Expected numbers are derived here from the paper's text, not read from the module. ImageNet nets are built
on the meta device; real forward passes use the CIFAR nets at 32x32.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.models.densenet import BottleneckDenseLayer, CifarDenseNet, DenseBlock, DenseLayer, Transition

# Table 1 and the authors' release (161): growth rate, layers per block.
IMAGENET = {"densenet121": (32, (6, 12, 24, 16)), "densenet169": (32, (6, 12, 32, 32)),
            "densenet201": (32, (6, 12, 48, 32)), "densenet264": (32, (6, 12, 64, 48)),
            "densenet161": (48, (6, 12, 36, 24))}
# Table 2 / Sec. 3: depth L, growth rate k, bottleneck and compression (BC) or not.
CIFAR = {"densenet40_k12": (40, 12, False), "densenet100_k12": (100, 12, False), "densenet100_k24": (100, 24, False),
         "densenet_bc100_k12": (100, 12, True), "densenet_bc250_k24": (250, 24, True),
         "densenet_bc190_k40": (190, 40, True)}
DEPTH = {**{n: int(n[len("densenet"):]) for n in IMAGENET}, **{n: d for n, (d, _, _) in CIFAR.items()}}


def meta(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


def blocks(model):
    return [m for m in model.modules() if isinstance(m, DenseBlock)]


def first_norm(layer):
    return next(m for m in layer.children() if isinstance(m, nn.BatchNorm2d))


def bn(c):
    return 2 * c  # scale and shift


# --- connectivity ---------------------------------------------------------------------------------------------

def count_connections(inputs, sources):
    """Direct connections: for each layer l, the sources x_0 .. x_{l-1} found verbatim as a channel slice of its input.

    `inputs[l - 1]` is the tensor layer l's first operation sees; `sources[i]` is x_i (x_0: the block's input).
    """
    total = 0
    for l, x in enumerate(inputs, start=1):
        for s in sources[:l]:
            c = s.shape[1]
            total += any(torch.equal(x[:, o:o + c], s) for o in range(x.shape[1] - c + 1))
    return total


def trace_block(block, x):
    """Runs `block` on x and records what each layer's first BN receives and what each layer returns."""
    inputs, outputs, hooks = [], [], []
    for layer in block.values():
        hooks.append(first_norm(layer).register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone())))
        hooks.append(layer.register_forward_hook(lambda m, args, out: outputs.append(out.clone())))
    try:
        with torch.no_grad():
            out = block(x)
    finally:
        for h in hooks:
            h.remove()
    return inputs, [x] + outputs, out


def test_connection_counter_can_fail():
    g = torch.Generator().manual_seed(0)
    sources = [torch.randn(1, 3, 4, 4, generator=g) for _ in range(6)]  # x_0 .. x_5 of a 5-layer block
    dense = [torch.cat(sources[:l], 1) for l in range(1, 6)]
    chain = sources[:5]  # a plain network: layer l sees x_{l-1} only
    assert count_connections(dense, sources) == 5 * 6 // 2
    assert count_connections(chain, sources) == 5


@pytest.mark.parametrize("name", ["densenet40_k12", "densenet_bc100_k12"])
def test_each_block_has_L_L_plus_1_over_2_direct_connections(name):
    # Sec. 1: "the l-th layer has l inputs" (x_0 .. x_{l-1}), which "introduces L(L+1)/2 connections in an
    # L-layer network": the block input x_0 counts as a node, so L layers and L + 1 nodes.
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, 3, 32, 32)
    entering = {}
    hooks = [b.register_forward_pre_hook(lambda m, args: entering.__setitem__(m, args[0].clone()))
             for b in blocks(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for block in blocks(model):
        inputs, sources, out = trace_block(block, entering[block])
        L = len(block)
        assert count_connections(inputs, sources) == L * (L + 1) // 2
        assert torch.equal(out, torch.cat(sources, 1))  # the block passes on x_0 .. x_L, all of them


@pytest.mark.parametrize("name", sorted(IMAGENET) + sorted(CIFAR))
def test_layer_l_sees_k0_plus_k_times_l_minus_1_maps(name):
    model = meta(name)
    if name in IMAGENET:
        k, config = IMAGENET[name]
        k0, theta = 2 * k, 0.5  # "2k convolutions of size 7x7", DenseNet-BC
    else:
        depth, k, bc = CIFAR[name]
        config = ((depth - 4) // (6 if bc else 3),) * 3
        k0, theta = (2 * k, 0.5) if bc else (16, 1.0)
    found = blocks(model)
    assert [len(b) for b in found] == list(config)
    for block, n in zip(found, config):
        for l, layer in enumerate(block.values(), start=1):
            assert first_norm(layer).num_features == k0 + k * (l - 1)
            assert layer.out_channels == k
        width = k0 + k * n
        k0 = int(theta * width)  # the next block starts from the transition's floor(theta * m) maps
    assert model.classifier.in_features == width  # no transition after the last block


def test_imagenet_final_widths():
    # From Table 1's arithmetic: 64 + 6*32 = 256 -> 128, + 12*32 = 512 -> 256, + 24*32 = 1024 -> 512, + 16*32 = 1024.
    widths = {"densenet121": 1024, "densenet169": 1664, "densenet201": 1920, "densenet264": 2688, "densenet161": 2208}
    assert {n: meta(n).classifier.in_features for n in widths} == widths


@pytest.mark.parametrize("name", ["densenet121", "densenet_bc100_k12", "densenet40_k12"])
def test_transitions_halve_the_maps_only_for_bc(name):
    transitions = [m for m in meta(name).modules() if isinstance(m, Transition)]
    assert len(transitions) == (3 if name in IMAGENET else 2)
    bc = name in IMAGENET or CIFAR[name][2]
    for t in transitions:
        m = t.conv.in_channels
        assert t.conv.out_channels == (m // 2 if bc else m)
        assert t.conv.kernel_size == (1, 1) and isinstance(t.pool, nn.AvgPool2d) and t.pool.kernel_size == 2


@pytest.mark.parametrize("name", sorted(DEPTH))
def test_weight_layers_match_the_depth_in_the_name(name):
    weight_layers = [m for m in meta(name).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if name in IMAGENET:  # stem conv, two per bottleneck layer, three transitions, the classifier
        assert len(weight_layers) == 1 + 2 * sum(IMAGENET[name][1]) + 3 + 1
    # Table 1's DenseNet-264 blocks (6, 12, 64, 48) give 265 weight layers: the paper's name is one short.
    assert len(weight_layers) == DEPTH[name] + (name == "densenet264")


def test_layer_kinds():
    plain, bc = meta("densenet40_k12"), meta("densenet_bc100_k12")
    assert {type(layer) for b in blocks(plain) for layer in b.values()} == {DenseLayer}
    assert {type(layer) for b in blocks(bc) for layer in b.values()} == {BottleneckDenseLayer}
    layer = blocks(bc)[0]["denselayer1"]
    assert layer.conv1.out_channels == 4 * 12 and layer.conv1.kernel_size == (1, 1)  # "4k feature-maps"
    assert layer.conv2.kernel_size == (3, 3) and layer.conv2.padding == (1, 1)
    assert plain.features.conv0.out_channels == 16 and bc.features.conv0.out_channels == 24  # 16, or 2k for BC


# --- parameters -----------------------------------------------------------------------------------------------

def table2_params(depth, k, bottleneck, classes=10):
    """Sec. 3's CIFAR network counted by hand: 3x3 conv (16, or 2k for BC) without bias; three blocks of layers
    BN-ReLU-3x3 conv (k) or BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k); two transitions BN-ReLU-1x1 conv keeping
    floor(theta * m) maps (theta 1 or 0.5); final BN; FC with bias."""
    n = (depth - 4) // (6 if bottleneck else 3)
    c = 2 * k if bottleneck else 16
    total = 3 * 9 * c
    for block in range(3):
        for i in range(n):
            width = c + i * k
            if bottleneck:
                total += bn(width) + width * 4 * k + bn(4 * k) + 9 * 4 * k * k
            else:
                total += bn(width) + 9 * width * k
        c += n * k
        if block < 2:
            out = c // 2 if bottleneck else c
            total += bn(c) + c * out
            c = out
    return total + bn(c) + c * classes + classes


@pytest.mark.parametrize("name", sorted(CIFAR))
def test_cifar_params_by_hand_and_table2(name):
    expected = table2_params(*CIFAR[name])
    assert count_params(meta(name)) == expected
    card = model_card(name)
    assert abs(expected - card.params) <= 0.05e6  # Table 2 rounds to 0.1M


def test_densenet_bc100_k12_by_hand():
    # 16 bottleneck layers per block; the first conv has 24 filters; 24 + 16*12 = 216 -> 108 -> 300 -> 150 -> 342.
    assert table2_params(100, 12, True) == 769_162
    assert count_params(meta("densenet_bc100_k12")) == 769_162  # Table 2: 0.8M


# --- dropout --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["densenet40_k12", "densenet_bc100_k12"])
def test_dropout_follows_every_conv_but_the_first(name, monkeypatch):
    # Sec. 4.2: "a dropout layer after each convolutional layer (except the first one)", rate 0.2.
    calls = []
    dropout = F.dropout

    def counting(x, p=0.5, training=True, inplace=False):
        calls.append(p)
        return dropout(x, p, training, inplace)

    model = create_model(name, dropout=0.2).train()
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    monkeypatch.setattr(F, "dropout", counting)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert calls == [0.2] * (convs - 1)
    calls.clear()
    with torch.no_grad():
        create_model(name)(torch.randn(2, 3, 32, 32))
    assert calls == []  # the default, 0.0, is the setting of the augmented (C10+) runs


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="dropout must be in"):
        create_model("densenet40_k12", dropout=1.0)
    with pytest.raises(ValueError, match="not 3 \\* 2 \\* n \\+ 4"):
        CifarDenseNet(layer=BottleneckDenseLayer, depth=40 + 3, growth_rate=12, first_conv=24, compression=0.5)


# --- memory-efficient option ----------------------------------------------------------------------------------

def _train_step(model, x, weights):
    model.train()
    out = model(x)
    (out * weights).sum().backward()
    return out.detach()


@pytest.mark.parametrize("name", ["densenet40_k12", "densenet_bc100_k12"])
def test_memory_efficient_gives_the_same_outputs_gradients_and_statistics(name):
    torch.manual_seed(0)
    plain = create_model(name)
    efficient = create_model(name, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 10, generator=g)
    torch.testing.assert_close(_train_step(efficient, x, w), _train_step(plain, x, w), rtol=0, atol=0)
    grads = {k: p.grad for k, p in plain.named_parameters()}
    for k, p in efficient.named_parameters():
        torch.testing.assert_close(p.grad, grads[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    # batch norm's running statistics are updated once per step, as without recomputation
    buffers = dict(plain.named_buffers())
    for k, b in efficient.named_buffers():
        torch.testing.assert_close(b, buffers[k], rtol=0, atol=0, msg=lambda m: f"{k}: {m}")


def test_memory_efficient_stores_less_for_the_backward_pass():
    def saved_bytes(model):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.train()(torch.randn(2, 3, 32, 32))
        return sum(storages.values())

    torch.manual_seed(0)
    plain = saved_bytes(create_model("densenet40_k12"))
    efficient = saved_bytes(create_model("densenet40_k12", memory_efficient=True))
    assert efficient < 0.5 * plain
