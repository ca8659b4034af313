"""Network in Network: the released layer tables, checked by hand arithmetic rather than by running the model."""

import math

import pytest
import torch
from torch import nn

from cnnzoo import count_params, create_model, list_models, model_card

NIN_NAMES = ["nin", "nin_caffe", "nin_imagenet"]


def conv_side(side, kernel, stride=1, padding=0):
    return (side + 2 * padding - kernel) // stride + 1


def pool_side(side, kernel=3, stride=2):
    return math.ceil((side - kernel) / stride) + 1  # Caffe and cuda-convnet keep the partial last window


def conv_params(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def stage_outputs(model, x):
    shapes = []

    def record(module, args, out):
        if not out.is_meta:  # create_model's input check first runs the model on the meta device
            shapes.append(tuple(out.shape))

    hooks = [stage.register_forward_hook(record) for stage in model.stages]
    out = model(x)
    for h in hooks:
        h.remove()
    return shapes, out


def test_registered():
    assert set(NIN_NAMES) <= set(list_models("nin*"))


def test_cifar_stage_shapes():
    # conv 5x5 p2 keeps 32; 3x3/2 pool: 32 -> 16; conv 5x5 p2 keeps 16; pool: 16 -> 8; conv 3x3 p1 keeps 8.
    s1 = pool_side(conv_side(32, 5, padding=2))
    s2 = pool_side(conv_side(s1, 5, padding=2))
    s3 = conv_side(s2, 3, padding=1)
    assert (s1, s2, s3) == (16, 8, 8)
    for name in ("nin", "nin_caffe"):
        shapes, out = stage_outputs(create_model(name).eval(), torch.randn(2, 3, 32, 32))
        assert shapes == [(2, 96, s1, s1), (2, 192, s2, s2), (2, 10, s3, s3)]
        assert out.shape == (2, 10)  # global average pooling: 8x8 -> 1x1


def test_imagenet_stage_shapes():
    # conv1 11x11/4 on 224: 54; three 3x3/2 pools rounding up: 27, 13, 6 (rounding down would give 26, 12, 5).
    s0 = conv_side(224, 11, stride=4)
    s1 = pool_side(s0)
    s2 = pool_side(conv_side(s1, 5, padding=2))
    s3 = pool_side(conv_side(s2, 3, padding=1))
    s4 = conv_side(s3, 3, padding=1)
    assert (s0, s1, s2, s3, s4) == (54, 27, 13, 6, 6)
    shapes, out = stage_outputs(create_model("nin_imagenet").eval(), torch.randn(1, 3, 224, 224))
    assert shapes == [(1, 96, s1, s1), (1, 256, s2, s2), (1, 384, s3, s3), (1, 1000, s4, s4)]
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("name", NIN_NAMES)
def test_no_fully_connected_layer(name):
    model = create_model(name)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(p.numel() for p in model.head.parameters()) == 0


@pytest.mark.parametrize("name", NIN_NAMES)
def test_last_conv_has_num_classes_filters(name):
    model = create_model(name, num_classes=7)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == 7 and convs[-1].kernel_size == (1, 1)


@pytest.mark.parametrize("name", NIN_NAMES)
def test_relu_after_every_convolution(name):
    # The releases put a ReLU after the class-map convolution too, so the logits are never negative.
    model = create_model(name).eval()
    for stage in model.stages:
        layers = list(stage.mlpconv)
        assert [type(m) for m in layers] == [nn.Conv2d, nn.ReLU] * (len(layers) // 2)
    out = model(torch.randn(2, *model_card(name).input_size))
    assert (out >= 0).all()


@pytest.mark.parametrize("name", NIN_NAMES)
def test_head_is_global_average_of_class_maps(name):
    model = create_model(name).eval()
    recorded = []
    model.stages[-1].register_forward_hook(lambda m, i, o: None if o.is_meta else recorded.append(o.detach()))
    out = model(torch.randn(2, *model_card(name).input_size))
    (maps,) = recorded
    torch.testing.assert_close(out, maps.mean(dim=(2, 3)))


def test_pooling_kinds():
    def pools(name):
        model = create_model(name)
        return [type(stage.pool) if hasattr(stage, "pool") else None for stage in model.stages]

    assert pools("nin") == [nn.MaxPool2d, nn.MaxPool2d, None]  # Sec. 4.1 and the cuda-convnet settings
    assert pools("nin_caffe") == [nn.MaxPool2d, nn.AvgPool2d, None]  # the Caffe model zoo release
    assert pools("nin_imagenet") == [nn.MaxPool2d] * 3 + [None]
    for name in NIN_NAMES:
        for m in create_model(name).modules():
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                assert (m.kernel_size, m.stride, m.padding, m.ceil_mode) == (3, 2, 0, True)


def test_average_pool_edge_windows_divide_by_what_they_cover():
    # Caffe divides a partial window at the border by the pixels it covers: a constant map stays constant.
    pool = create_model("nin_caffe").stages[1].pool
    assert (pool(torch.ones(1, 1, 16, 16)) == 1).all()


@pytest.mark.parametrize(("name", "after"), [("nin", [0, 1]), ("nin_caffe", [0, 1]), ("nin_imagenet", [2])])
def test_dropout_placement(name, after):
    model = create_model(name)
    with_dropout = [i for i, stage in enumerate(model.stages) if any(isinstance(m, nn.Dropout) for m in stage)]
    assert with_dropout == after
    for i in after:
        names = [n for n, _ in model.stages[i].named_children()]
        assert names == ["mlpconv", "pool", "dropout"]  # dropout acts on the pooled output
        assert model.stages[i].dropout.p == 0.5


@pytest.mark.parametrize("name", ["nin", "nin_imagenet"])
def test_dropout_only_in_training(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.rand(2, *model_card(name).input_size)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_dropout_option():
    model = create_model("nin", dropout=0.2)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2]
    with pytest.raises(ValueError, match="dropout"):
        create_model("nin", dropout=1.0)
    with pytest.raises(TypeError, match="dropout"):
        create_model("nin", dropout="half")


def test_cifar_param_count_from_layer_table():
    # (in, out, kernel) of every convolution in the released CIFAR-10 network
    table = [
        (3, 192, 5), (192, 160, 1), (160, 96, 1),
        (96, 192, 5), (192, 192, 1), (192, 192, 1),
        (192, 192, 3), (192, 192, 1), (192, 10, 1),
    ]
    expected = sum(conv_params(*row) for row in table)
    assert expected == 966_986
    assert count_params(create_model("nin")) == expected
    assert count_params(create_model("nin_caffe")) == expected  # pooling has no weights


def test_imagenet_param_count_from_layer_table():
    table = [
        (3, 96, 11), (96, 96, 1), (96, 96, 1),
        (96, 256, 5), (256, 256, 1), (256, 256, 1),
        (256, 384, 3), (384, 384, 1), (384, 384, 1),
        (384, 1024, 3), (1024, 1024, 1), (1024, 1000, 1),
    ]
    expected = sum(conv_params(*row) for row in table)
    assert expected == 7_595_176  # about 29 MiB of float32, the size of the released snapshot
    assert count_params(create_model("nin_imagenet")) == expected


def test_num_classes_and_in_chans_change_only_the_ends():
    model = create_model("nin", num_classes=100, in_chans=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 1 and convs[-1].out_channels == 100
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize(("name", "stds"), [
    ("nin", [0.05] * 9),
    ("nin_imagenet", [0.01, 0.05, 0.05, 0.05, 0.05, 0.05, 0.01, 0.05, 0.05, 0.05, 0.05, 0.01]),
])
def test_initialisation_as_released(name, stds):
    torch.manual_seed(0)
    convs = [m for m in create_model(name).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == len(stds)
    for conv, std in zip(convs, stds):
        assert (conv.bias == 0).all()
        if conv.weight.numel() >= 10_000:  # enough samples for the sample std to be within a few percent
            assert conv.weight.std().item() == pytest.approx(std, rel=0.05)
            assert abs(conv.weight.mean().item()) < std / 10


def test_cards():
    card = model_card("nin")
    assert (card.dataset, card.input_size, card.num_classes) == ("cifar10", (3, 32, 32), 10)
    assert card.params is None and card.top1_err == 10.41 and "Table 1" in card.err_source
    assert card.deviations == ()
    assert model_card("nin_caffe").deviations and model_card("nin_caffe").top1_err == pytest.approx(100 - 89.6)
    card = model_card("nin_imagenet")
    assert (card.dataset, card.input_size, card.num_classes) == ("imagenet", (3, 224, 224), 1000)
    assert card.params is None and card.top1_err == pytest.approx(100 - 59.36)
    assert card.paper.arxiv == "1312.4400"


@pytest.mark.parametrize("name", NIN_NAMES)
def test_forward_backward(name):
    model = create_model(name, num_classes=5)
    out = model(torch.randn(2, *model_card(name).input_size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
