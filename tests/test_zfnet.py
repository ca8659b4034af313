"""ZFNet as Zeiler & Fergus specify it in Fig. 3 and Sec. 3, and Table 2's larger model (b).

Expected numbers are written out from the paper (maps, kernel sizes, strides, output sizes), not taken from the
module's tables.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.layers import PaperLRN

# Fig. 3: (maps, kernel size, stride) of layers 1-5; model (b) has 512, 1024, 512 maps in layers 3, 4, 5.
FIG3 = {
    "zfnet": [(96, 7, 2), (256, 5, 2), (384, 3, 1), (384, 3, 1), (256, 3, 1)],
    "zfnet_large": [(96, 7, 2), (256, 5, 2), (512, 3, 1), (1024, 3, 1), (512, 3, 1)],
}


@pytest.fixture(scope="module", params=sorted(FIG3))
def named_model(request):
    torch.manual_seed(0)
    return request.param, create_model(request.param).eval()


def convs(model):
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


def test_layers_are_fig3s(named_model):
    name, model = named_model
    layers = [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs(model)]
    assert layers == FIG3[name]
    assert all(c.groups == 1 for c in convs(model))  # Sec. 3: dense connections replace AlexNet's towers


def test_map_sizes_are_fig3s(named_model):
    _, model = named_model
    x, sides = torch.zeros(1, 3, 224, 224), []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                sides.append(x.shape[-1])
    # conv1 110, pool 55, conv2 26, pool 13, conv3-5 13, pool 6 (6x6x256 = 9216 into layer 6 for the Fig. 3 model).
    assert sides == [110, 55, 26, 13, 13, 13, 13, 6]
    assert x.shape[1:] == (convs(model)[-1].out_channels, 6, 6)


def test_rounding_down_would_miss_fig3():
    # Why the pools round up: floor((110 - 3) / 2) + 1 = 54 and floor((26 - 3) / 2) + 1 = 12.
    assert F.max_pool2d(torch.zeros(1, 1, 110, 110), 3, 2).shape[-1] == 54
    assert F.max_pool2d(torch.zeros(1, 1, 26, 26), 3, 2).shape[-1] == 12


def test_normalisation_follows_pooling_in_layers_1_and_2(named_model):
    # Fig. 3 caption: relu, then max-pool (3x3, stride 2), then contrast normalisation across feature maps.
    _, model = named_model
    kinds = [type(m) for m in model.features]
    assert kinds[:8] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, PaperLRN] * 2
    assert PaperLRN not in kinds[8:]
    for lrn in (m for m in model.features if isinstance(m, PaperLRN)):
        assert (lrn.size, lrn.paper_alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


def test_count_is_the_sum_of_fig3s_layers(named_model):
    name, model = named_model
    depth, expected = 3, 0
    for maps, size, _ in FIG3[name]:
        expected += maps * size * size * depth + maps
        depth = maps
    expected += (6 * 6 * depth * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert count_params(model) == expected
    assert model_card(name).params is None  # the paper states no count


def test_dropout_drops_the_outputs_of_layers_6_and_7(named_model):
    _, model = named_model
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_paper_initialisation(named_model):
    # Sec. 3: weights 1e-2 (the standard deviation of a zero-mean Gaussian), biases 0.
    _, model = named_model
    for layer in (m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
        assert torch.count_nonzero(layer.bias) == 0
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_cards_quote_table2():
    fig3, large = model_card("zfnet"), model_card("zfnet_large")
    assert (fig3.top1_err, fig3.top5_err) == (38.4, 16.5)
    assert (large.top1_err, large.top5_err) == (37.5, 16.0)
    assert fig3.input_size == large.input_size == (3, 224, 224)
