"""AlexNet as Krizhevsky et al. 2012 specify it, and torchvision's single-tower AlexNet (Krizhevsky 2014).

Expected numbers are written out from the papers' text (kernel counts and shapes, map sizes, constants), not
taken from the model or typed in from a count of it.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnzoo import count_params, create_model, model_card
from cnnzoo.layers import PaperLRN
from helpers import stage_sides

# Sec. 3.5: "96 kernels of size 11x11x3", "256 kernels of size 5x5x48", "384 kernels of size 3x3x256",
# "384 kernels of size 3x3x192", "256 kernels of size 3x3x192"; the fully-connected layers have 4096 neurons each.
PAPER_KERNELS = [(96, 11, 3), (256, 5, 48), (384, 3, 256), (384, 3, 192), (256, 3, 192)]


def conv_params(kernels: int, size: int, depth: int) -> int:
    return kernels * size * size * depth + kernels  # weights + one bias per kernel


def fc_params(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def convs(model):
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


def linears(model):
    return [m for m in model.classifier if isinstance(m, nn.Linear)]


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return create_model("alexnet").eval()


def test_kernels_are_the_papers(alexnet):
    for conv, (kernels, size, depth) in zip(convs(alexnet), PAPER_KERNELS, strict=True):
        assert conv.weight.shape == (kernels, depth, size, size)
        assert count_params(conv) == conv_params(kernels, size, depth)
    assert [c.stride[0] for c in convs(alexnet)] == [4, 1, 1, 1, 1]


def test_towers_are_groups_of_two(alexnet):
    # Sec. 3.2 and Fig. 2: conv2, conv4 and conv5 see only their own GPU's maps; conv3 sees both.
    assert [c.groups for c in convs(alexnet)] == [1, 2, 1, 2, 2]
    conv2 = convs(alexnet)[1]
    assert count_params(conv2) == 2 * (128 * 48 * 5 * 5 + 128)  # two towers of 128 kernels, each 5x5x48


def test_grouping_removes_exactly_the_cross_tower_weights(alexnet):
    ungrouped = copy.deepcopy(alexnet)
    for i, m in enumerate(ungrouped.features):
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            ungrouped.features[i] = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
    # Without towers, conv2's kernels would be 5x5x96 and conv4's and conv5's 3x3x384: each loses half its depth.
    removed = 256 * 5 * 5 * 48 + 384 * 3 * 3 * 192 + 256 * 3 * 3 * 192
    assert count_params(ungrouped) - count_params(alexnet) == removed


def test_count_is_the_sum_of_the_papers_layers(alexnet):
    expected = sum(conv_params(*k) for k in PAPER_KERNELS)
    expected += fc_params(6 * 6 * 256, 4096) + fc_params(4096, 4096) + fc_params(4096, 1000)
    assert count_params(alexnet) == expected
    card = model_card("alexnet")
    assert abs(expected - card.params) <= card.params_rounding / 2  # "60 million parameters"


def test_map_sizes_at_227(alexnet):
    # Fig. 2 and Sec. 3.5: conv1 55, pool 27, conv2 27, pool 13, conv3-5 13, pool 6 (6x6x256 into FC6).
    assert stage_sides(alexnet, 227) == [55, 27, 27, 13, 13, 13, 13, 6]


def test_224_input_is_rejected_with_the_size_that_works(alexnet):
    with pytest.raises(ValueError, match="227"):
        alexnet(torch.randn(1, 3, 224, 224))


def test_lrn_after_relu_in_layers_1_and_2_only(alexnet):
    kinds = [type(m) for m in alexnet.features]
    assert kinds[:8] == [nn.Conv2d, nn.ReLU, PaperLRN, nn.MaxPool2d] * 2
    assert PaperLRN not in kinds[8:]
    for lrn in (m for m in alexnet.features if isinstance(m, PaperLRN)):
        assert (lrn.size, lrn.paper_alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


def test_lrn_computes_the_papers_formula(alexnet):
    # Sec. 3.3: b_i = a_i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2) ** beta.
    lrn = next(m for m in alexnet.features if isinstance(m, PaperLRN))
    a = 60 * torch.rand(1, 9, 2, 2)  # large enough that alpha's term matters
    n_maps = a.shape[1]
    expected = torch.stack([
        a[:, i] / (2 + 1e-4 * (a[:, max(0, i - 2):min(n_maps - 1, i + 2) + 1] ** 2).sum(1)) ** 0.75
        for i in range(n_maps)
    ], dim=1)
    torch.testing.assert_close(lrn(a), expected)


def test_dropout_drops_the_outputs_of_fc6_and_fc7():
    model = create_model("alexnet", dropout=0.3)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.3, 0.3]


def test_paper_initialisation(alexnet):
    # Sec. 5: weights from N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere.
    layers = convs(alexnet) + linears(alexnet)
    biases = [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]  # conv1-5, FC6-8
    assert [layer.bias.unique().tolist() for layer in layers] == biases
    for layer in layers:
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert abs(layer.weight.mean().item()) < 1e-3


# --- torchvision's AlexNet, after "One weird trick" (Krizhevsky 2014) ---


def test_owt_loads_torchvision_weights_and_gives_identical_outputs():
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(num_classes=10).eval()
    ours = create_model("alexnet_owt", num_classes=10).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_owt_map_sizes_at_224():
    assert stage_sides(create_model("alexnet_owt"), 224) == [55, 27, 27, 13, 13, 13, 13, 6]


def test_owt_widths_fit_the_2014_papers_parameter_claim(alexnet):
    # "This model has 0.2% more parameters ... than the two-tower model" (Krizhevsky 2014). torchvision's widths,
    # 64-192-384-256-256, fit that; the paper's footnote widths, 64-192-384-384-256, would not.
    two_tower = count_params(alexnet)
    one_tower = count_params(create_model("alexnet_owt"))
    assert round(100 * (one_tower / two_tower - 1), 1) == 0.2
    footnote = (one_tower - conv_params(256, 3, 384) - conv_params(256, 3, 256)
                + conv_params(384, 3, 384) + conv_params(256, 3, 384))
    assert round(100 * (footnote / two_tower - 1), 1) != 0.2


def test_cards():
    paper, owt = model_card("alexnet"), model_card("alexnet_owt")
    assert paper.input_size == (3, 227, 227) and paper.torchvision is None
    assert (paper.top1_err, paper.top5_err) == (40.7, 18.2)
    assert owt.input_size == (3, 224, 224) and owt.torchvision == "alexnet"
    assert owt.params is None


def test_floor_pooling_suffices_for_alexnet():
    # (55 - 3) / 2 + 1 = 27 and (27 - 3) / 2 + 1 = 13 exactly: rounding does not matter here (it does for ZFNet).
    assert F.max_pool2d(torch.zeros(1, 1, 55, 55), 3, 2).shape[-1] == 27
