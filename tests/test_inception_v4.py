"""Inception-v4 and Inception-ResNet-v2 as Szegedy et al. 2016 (arXiv:1602.07261) draw them, and the released
Inception-v4 and Inception-ResNet-v2.

Shapes are checked on the meta device (no memory, no arithmetic); the only real forwards are of single blocks on
small grids. Expected widths and parameter counts are written out from the paper's figures and Table 1 (and, for
`inception_v4_tf` and `inception_resnet_v2_tf`, from the TF-slim release's code), not read off the models.
"""

import pytest
import torch
from torch import nn

from cnnzoo import count_params, create_model
from cnnzoo.models.inception_v4 import (
    ConvBN, InceptionResNetA, InceptionResNetB, InceptionResNetC, ReleasedStem, ResidualInception, Stem,
)

NAMES = ["inception_v4", "inception_v4_tf", "inception_resnet_v2", "inception_resnet_v2_tf"]


def meta_model(name, **options):
    with torch.device("meta"):
        return create_model(name, **options).eval()


def meta_input(side=299, channels=3):
    return torch.empty(2, channels, side, side, device="meta")


def chw(x):
    return tuple(x.shape[1:])


# --- widths and grid sizes ---------------------------------------------------------------------------------------

def test_stem_gives_35x35x384():  # Fig. 3
    with torch.device("meta"):
        stem = Stem(3)
    sides = []
    x = meta_input()
    for layer in stem:
        x = layer(x)
        sides.append(chw(x))
    # Fig. 3's annotations: 149x149x32, 147x147x32, 147x147x64, 73x73x160, 71x71x192, 35x35x384
    assert sides == [(32, 149, 149), (32, 147, 147), (64, 147, 147), (160, 73, 73), (192, 71, 71), (384, 35, 35)]


def test_released_stem_gives_35x35x320():
    with torch.device("meta"):
        stem = ReleasedStem(3)
    assert chw(stem(meta_input())) == (320, 35, 35)


# Grid after each stage at 299x299. Inception-v4: Fig. 9. The paper's Inception-ResNet-v2: the stem's 384 maps,
# then Reduction-A adds n + m = 384 + 384 (1152), Reduction-B adds 384 + 288 + 320 (Fig. 18; 2144). The release:
# 320, then 320 + 384 + 384 = 1088, then 1088 + 992 = 2080.
STAGES = {
    "inception_v4": [(384, 35), (384, 35), (1024, 17), (1024, 17), (1536, 8), (1536, 8)],
    "inception_v4_tf": [(384, 35), (384, 35), (1024, 17), (1024, 17), (1536, 8), (1536, 8)],
    "inception_resnet_v2": [(384, 35), (384, 35), (1152, 17), (1152, 17), (2144, 8), (2144, 8)],
    "inception_resnet_v2_tf": [(320, 35), (320, 35), (1088, 17), (1088, 17), (2080, 8), (2080, 8)],
}


@pytest.mark.parametrize("name", NAMES)
def test_stage_outputs(name):
    model = meta_model(name)
    x, got = meta_input(), []
    for stage in ("stem", "inception_a", "reduction_a", "inception_b", "reduction_b", "inception_c"):
        x = getattr(model, stage)(x)
        got.append((x.shape[1], x.shape[2]))
        assert x.shape[2] == x.shape[3]
    assert got == STAGES[name]
    assert model(meta_input()).shape == (2, 1000)


# Table 1: Reduction-A's filter banks (k, l, m, n)
REDUCTION_A = {
    "inception_v4": (192, 224, 256, 384),
    "inception_v4_tf": (192, 224, 256, 384),  # the release's Mixed_6a
    "inception_resnet_v2": (256, 256, 384, 384),
    "inception_resnet_v2_tf": (256, 256, 384, 384),  # the release's Mixed_6a
}


@pytest.mark.parametrize("name", NAMES)
def test_reduction_a_filter_banks(name):
    k, l, m, n = REDUCTION_A[name]  # noqa: E741
    conv_n, stack, pool = meta_model(name).reduction_a.branches
    assert conv_n.conv.out_channels == n and conv_n.conv.stride == (2, 2) and conv_n.conv.padding == (0, 0)
    assert [c.conv.out_channels for c in stack] == [k, l, m]
    assert [c.conv.kernel_size for c in stack] == [(1, 1), (3, 3), (3, 3)]
    assert stack[2].conv.stride == (2, 2) and stack[2].conv.padding == (0, 0)  # "3x3 Conv (m stride 2 V)"
    assert isinstance(pool, nn.MaxPool2d)


BLOCKS = {"inception_v4": (4, 7, 3), "inception_v4_tf": (4, 7, 3), "inception_resnet_v2": (5, 10, 5),
          "inception_resnet_v2_tf": (10, 20, 10)}


@pytest.mark.parametrize("name", NAMES)
def test_block_counts(name):
    model = meta_model(name)
    assert (len(model.inception_a), len(model.inception_b), len(model.inception_c)) == BLOCKS[name]
    residual = name.startswith("inception_resnet")
    for stage in (model.inception_a, model.inception_b, model.inception_c):
        assert all(isinstance(block, ResidualInception) == residual for block in stage)


def test_factorised_kernels_follow_the_figures():
    model = meta_model("inception_v4")
    # Fig. 3: 1x1 (64), 7x1 (64), 1x7 (64), 3x3 (96 V)
    branch = model.stem[4].branches[1]
    assert [c.conv.kernel_size for c in branch] == [(1, 1), (7, 1), (1, 7), (3, 3)]
    assert [c.conv.out_channels for c in branch] == [64, 64, 64, 96]
    # Fig. 5, longest branch: 1x1 (192), 1x7 (192), 7x1 (224), 1x7 (224), 7x1 (256)
    branch = model.inception_b[0].branches[2]
    assert [c.conv.kernel_size for c in branch] == [(1, 1), (1, 7), (7, 1), (1, 7), (7, 1)]
    assert [c.conv.out_channels for c in branch] == [192, 192, 224, 224, 256]
    # Fig. 6, longest branch: 1x1 (384), 1x3 (448), 3x1 (512), then 1x3 (256) and 3x1 (256) side by side
    *stack, split = model.inception_c[0].branches[2]
    assert [c.conv.kernel_size for c in stack] == [(1, 1), (1, 3), (3, 1)]
    assert [c.conv.out_channels for c in stack] == [384, 448, 512]
    assert [c.conv.kernel_size for c in split.branches] == [(1, 3), (3, 1)]


def kernels(model):
    """(kernel, maps) of every convolution box, by state_dict name."""
    return {name: (m.conv.kernel_size, m.conv.out_channels) for name, m in model.named_modules()
            if isinstance(m, ConvBN)}


def test_factorised_kernels_follow_the_release_in_inception_v4_tf():
    model = meta_model("inception_v4_tf")
    # TF-slim's Mixed_4a, Branch_1: 1x1 (64), [1, 7] (64), [7, 1] (64), 3x3 (96 VALID)
    branch = model.stem[4].branches[1]
    assert [c.conv.kernel_size for c in branch] == [(1, 1), (1, 7), (7, 1), (3, 3)]
    assert [c.conv.out_channels for c in branch] == [64, 64, 64, 96]
    for block in model.inception_b:  # block_inception_b, Branch_2: 1x1 (192), [7, 1] (192), [1, 7] (224), ...
        assert [(c.conv.kernel_size, c.conv.out_channels) for c in block.branches[2]] == [
            ((1, 1), 192), ((7, 1), 192), ((1, 7), 224), ((7, 1), 224), ((1, 7), 256)]
        # Branch_1 is the same in the figure and the release: [1, 7] (224), then [7, 1] (256)
        assert [c.conv.kernel_size for c in block.branches[1]] == [(1, 1), (1, 7), (7, 1)]
    for block in model.inception_c:  # block_inception_c, Branch_2: 1x1 (384), [3, 1] (448), [1, 3] (512), split
        *stack, split = block.branches[2]
        assert [(c.conv.kernel_size, c.conv.out_channels) for c in stack] == [((1, 1), 384), ((3, 1), 448),
                                                                               ((1, 3), 512)]
        assert [c.conv.kernel_size for c in split.branches] == [(1, 3), (3, 1)]  # Conv2d_0d_1x3, Conv2d_0e_3x1
    # Everything else is inception_v4's: the same boxes and names, and exactly these 2 + 7 x 4 + 3 x 2 kernels
    # transposed (the same weights count)
    paper, release = kernels(meta_model("inception_v4")), kernels(model)
    assert list(paper) == list(release)
    swapped = {name for name in paper if paper[name] != release[name]}
    assert all(release[n] == (paper[n][0][::-1], paper[n][1]) for n in swapped) and len(swapped) == 2 + 28 + 6
    assert list(meta_model("inception_v4").state_dict()) == list(model.state_dict())


def test_every_box_is_conv_bn_relu_without_bias():
    for block in meta_model("inception_v4").modules():
        if isinstance(block, ConvBN):
            assert block.conv.bias is None
            assert block.bn.eps == pytest.approx(1e-3) and isinstance(block.relu, nn.ReLU)


# --- residual blocks ---------------------------------------------------------------------------------------------

def residual_of(block, x):
    """The block's branch path, written out: concatenate the branches, then the linear 1x1 convolution."""
    return block.up(torch.cat([branch(x) for branch in block.branches], dim=1))


@pytest.mark.parametrize("make, width", [
    (InceptionResNetA, 384), (InceptionResNetB, 1152), (InceptionResNetC, 2144),
])
def test_residual_block_adds_its_scaled_branch_to_its_input(make, width):
    torch.manual_seed(0)
    block = make(width, scale=0.17).eval()
    x = torch.randn(2, width, 3, 3)
    with torch.no_grad():
        expected = torch.relu(x + 0.17 * residual_of(block, x))
        torch.testing.assert_close(block(x), expected)
        assert not torch.allclose(block(x), torch.relu(x))  # the branch does contribute


def test_no_normalisation_after_the_sum():
    # Sec. 3.2: batch normalisation on the traditional layers only. With the linear 1x1 convolution silenced, the
    # block must hand back ReLU(x) exactly, for an input far from zero mean and unit variance; a normalisation on
    # the sum (or on the linear convolution) would rescale it.
    torch.manual_seed(0)
    block = InceptionResNetA(384, scale=0.17).train()
    nn.init.zeros_(block.up.weight)
    nn.init.zeros_(block.up.bias)
    x = 5.0 + 3.0 * torch.randn(2, 384, 4, 4)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.children())
    assert type(block.up) is nn.Conv2d and block.up.bias is not None  # "1x1 Conv (Linear)": no BN, no ReLU


def test_residual_widths_follow_figures_16_17_19():
    model = meta_model("inception_resnet_v2")
    a, b, c = model.inception_a[0], model.inception_b[0], model.inception_c[0]
    # Fig. 16: 32 | 32, 32 | 32, 48, 64, then 1x1 (384 Linear)
    assert [[m.conv.out_channels for m in br.modules() if isinstance(m, ConvBN)] for br in a.branches] == [
        [32], [32, 32], [32, 48, 64]]
    assert (a.up.in_channels, a.up.out_channels) == (128, 384)
    # Fig. 17: 192 | 128, 160 (1x7), 192 (7x1); the linear 1x1 restores the 1152 input maps (the figure says 1154)
    assert [[m.conv.out_channels for m in br.modules() if isinstance(m, ConvBN)] for br in b.branches] == [
        [192], [128, 160, 192]]
    assert (b.up.in_channels, b.up.out_channels) == (384, 1152)
    # Fig. 19: 192 | 192, 224 (1x3), 256 (3x1); the linear 1x1 restores the 2144 input maps (the figure says 2048)
    assert [[m.conv.out_channels for m in br.modules() if isinstance(m, ConvBN)] for br in c.branches] == [
        [192], [192, 224, 256]]
    assert (c.up.in_channels, c.up.out_channels) == (448, 2144)


def test_residual_scales_and_the_option():
    model = meta_model("inception_resnet_v2")
    assert {b.scale for b in model.inception_a} == {0.17}
    assert {b.scale for b in model.inception_b} == {0.10}
    assert {b.scale for b in model.inception_c} == {0.20}
    model = meta_model("inception_resnet_v2", residual_scale=(0.3, 0.2, 0.1))
    assert (model.inception_a[0].scale, model.inception_b[-1].scale, model.inception_c[2].scale) == (0.3, 0.2, 0.1)
    with pytest.raises(ValueError, match="three numbers"):
        meta_model("inception_resnet_v2", residual_scale=(0.1, 0.2))
    with pytest.raises(TypeError, match="residual_scale"):
        meta_model("inception_resnet_v2", residual_scale=[0.1, 0.2, 0.3])


def test_release_top():
    model = meta_model("inception_resnet_v2_tf")
    *scaled, last = model.inception_c
    assert {b.scale for b in scaled} == {0.20} and len(scaled) == 9
    assert last.scale == 1.0 and isinstance(last.relu, nn.Identity)
    assert isinstance(model.head[0], ConvBN) and model.head[0].conv.out_channels == 1536
    assert model.head[-1].in_features == 1536
    paper = meta_model("inception_resnet_v2")
    assert isinstance(paper.inception_c[-1].relu, nn.ReLU) and paper.head[-1].in_features == 2144


@pytest.mark.parametrize("name", NAMES)
def test_dropout_option(name):
    assert meta_model(name).head[-2].p == pytest.approx(0.2)  # "Dropout (keep 0.8)"
    assert meta_model(name, dropout=0.5).head[-2].p == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dropout"):
        meta_model(name, dropout=1.0)


# --- parameter counts --------------------------------------------------------------------------------------------
# The paper states no parameter count. These are written out from the figures' widths: a convolution box has
# kh * kw * in * out weights and a batch normalisation with a scale and a shift per map; a "Linear" 1x1 has
# in * out weights and a bias per map; the classifier has 1000 outputs and biases.

def cbn(cin, cout, kh, kw=None):
    return kh * (kw if kw is not None else kh) * cin * cout + 2 * cout


def linear_1x1(cin, cout):
    return cin * cout + cout


def fc(cin):
    return cin * 1000 + 1000


STEM = (  # Fig. 3
    cbn(3, 32, 3) + cbn(32, 32, 3) + cbn(32, 64, 3)
    + cbn(64, 96, 3)
    + cbn(160, 64, 1) + cbn(64, 96, 3)
    + cbn(160, 64, 1) + cbn(64, 64, 7, 1) + cbn(64, 64, 1, 7) + cbn(64, 96, 3)
    + cbn(192, 192, 3)
)


def reduction_a(cin, k, l, m, n):  # noqa: E741  (Fig. 7)
    return cbn(cin, n, 3) + cbn(cin, k, 1) + cbn(k, l, 3) + cbn(l, m, 3)


def residual_reduction_b(cin):  # Fig. 18
    return (cbn(cin, 256, 1) + cbn(256, 384, 3) + cbn(cin, 256, 1) + cbn(256, 288, 3)
            + cbn(cin, 256, 1) + cbn(256, 288, 3) + cbn(288, 320, 3))


def resnet_a(c):  # Fig. 16
    return cbn(c, 32, 1) + cbn(c, 32, 1) + cbn(32, 32, 3) + cbn(c, 32, 1) + cbn(32, 48, 3) + cbn(48, 64, 3) \
        + linear_1x1(128, c)


def resnet_b(c):  # Fig. 17
    return cbn(c, 192, 1) + cbn(c, 128, 1) + cbn(128, 160, 1, 7) + cbn(160, 192, 7, 1) + linear_1x1(384, c)


def resnet_c(c):  # Fig. 19
    return cbn(c, 192, 1) + cbn(c, 192, 1) + cbn(192, 224, 1, 3) + cbn(224, 256, 3, 1) + linear_1x1(448, c)


INCEPTION_A = cbn(384, 96, 1) + cbn(384, 64, 1) + cbn(64, 96, 3) \
    + cbn(384, 64, 1) + cbn(64, 96, 3) + cbn(96, 96, 3) + cbn(384, 96, 1)  # Fig. 4
INCEPTION_B = (  # Fig. 5
    cbn(1024, 384, 1)
    + cbn(1024, 192, 1) + cbn(192, 224, 1, 7) + cbn(224, 256, 7, 1)
    + cbn(1024, 192, 1) + cbn(192, 192, 1, 7) + cbn(192, 224, 7, 1) + cbn(224, 224, 1, 7) + cbn(224, 256, 7, 1)
    + cbn(1024, 128, 1)
)
INCEPTION_C = (  # Fig. 6
    cbn(1536, 256, 1)
    + cbn(1536, 384, 1) + cbn(384, 256, 1, 3) + cbn(384, 256, 3, 1)
    + cbn(1536, 384, 1) + cbn(384, 448, 1, 3) + cbn(448, 512, 3, 1) + cbn(512, 256, 1, 3) + cbn(512, 256, 3, 1)
    + cbn(1536, 256, 1)
)
REDUCTION_B = cbn(1024, 192, 1) + cbn(192, 192, 3) \
    + cbn(1024, 256, 1) + cbn(256, 256, 1, 7) + cbn(256, 320, 7, 1) + cbn(320, 320, 3)  # Fig. 8

RELEASED_STEM = (  # the release's Conv2d_1a .. Conv2d_4a and Mixed_5b
    cbn(3, 32, 3) + cbn(32, 32, 3) + cbn(32, 64, 3) + cbn(64, 80, 1) + cbn(80, 192, 3)
    + cbn(192, 96, 1) + cbn(192, 48, 1) + cbn(48, 64, 5)
    + cbn(192, 64, 1) + cbn(64, 96, 3) + cbn(96, 96, 3) + cbn(192, 64, 1)
)

EXPECTED_PARAMS = {
    "inception_v4": STEM + 4 * INCEPTION_A + reduction_a(384, 192, 224, 256, 384) + 7 * INCEPTION_B
    + REDUCTION_B + 3 * INCEPTION_C + fc(1536),
    "inception_v4_tf": STEM + 4 * INCEPTION_A + reduction_a(384, 192, 224, 256, 384) + 7 * INCEPTION_B
    + REDUCTION_B + 3 * INCEPTION_C + fc(1536),  # the release's order of kh x kw and kw x kh: the same terms
    "inception_resnet_v2": STEM + 5 * resnet_a(384) + reduction_a(384, 256, 256, 384, 384) + 10 * resnet_b(1152)
    + residual_reduction_b(1152) + 5 * resnet_c(2144) + fc(2144),
    "inception_resnet_v2_tf": RELEASED_STEM + 10 * resnet_a(320) + reduction_a(320, 256, 256, 384, 384)
    + 20 * resnet_b(1088) + residual_reduction_b(1088) + 10 * resnet_c(2080) + cbn(2080, 1536, 1) + fc(1536),
}


@pytest.mark.parametrize("name", NAMES)
def test_params_match_a_count_from_the_figures(name):
    assert count_params(meta_model(name)) == EXPECTED_PARAMS[name]


# timm 1.0.31's counts for its ports of the two released TF-slim networks (reference/papers.md, section 7), from a
# third party whose code we did not use. Inception-v4's release has the paper's widths (only three factorised pairs
# run in the other order), so the count from the figures must agree with it too.
TIMM_PARAMS = {"inception_v4": 42_679_816, "inception_v4_tf": 42_679_816, "inception_resnet_v2_tf": 55_843_464}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_params_match_timms_ports_of_the_release(name):
    assert EXPECTED_PARAMS[name] == TIMM_PARAMS[name]
    assert count_params(meta_model(name)) == TIMM_PARAMS[name]
