"""Inception-v4 and Inception-ResNet-v2: Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning", AAAI 2017, arXiv:1602.07261.

`inception_v4`: the network of Fig. 9, from the stem of Fig. 3, the Inception-A/B/C blocks of Figs. 4-6 and the
reduction blocks of Figs. 7 and 8, with Reduction-A's filter banks (k, l, m, n) from Table 1.

`inception_v4_tf`: the Inception-v4 the authors released with TF-slim (tensorflow/models,
research/slim/nets/inception_v4.py; ported by timm as `inception_v4`). It has the figures' widths, block counts and
grids, but three of its factorised pairs run in the other order (the stem's Mixed-4a, Inception-B's and
Inception-C's longest branches; option `release_order`), so the released weights compute it and not Fig. 9's net.

`inception_resnet_v2`: the network of Fig. 15 as the paper builds Inception-ResNet-v2: the same stem (Fig. 3), the
residual blocks of Figs. 16, 17 and 19, Reduction-A (Fig. 7, Table 1) and Reduction-B (Fig. 18). Each residual
block scales its branch before adding it to its input (Sec. 3.3, Fig. 20), and batch normalisation sits only on
the ordinary convolutions, never on the sums (Sec. 3.2).

`inception_resnet_v2_tf`: the Inception-ResNet-v2 the authors released with TF-slim (tensorflow/models,
research/slim/nets/inception_resnet_v2.py), which differs from the paper's figures (an Inception-v3-like stem, twice
the blocks, other widths, a last 1x1 convolution). A TF-slim maintainer says it was built on the authors' advice
and is what they intended (tensorflow/models issue 1553); it is the network of the released checkpoint and of the
timm and Keras ports.

Every convolution box of the figures is convolution (no bias), batch normalisation (eps 0.001) and ReLU, as in the
TF-slim release. Unmarked convolutions keep the grid size; those marked "V" in the figures are unpadded. The single
crop errors are Table 2's; the two releases' are TF-slim's README's. The paper states no parameter counts.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.models.papers import SZEGEDY_2016
from cnnzoo.registry import ModelCard, register_model


class Layout(NamedTuple):
    """How many blocks each grid gets, and Reduction-A's filter banks."""

    blocks: tuple[int, int, int]  # repeats of the 35x35 (A), 17x17 (B) and 8x8 (C) blocks
    reduction_a: tuple[int, int, int, int]  # (k, l, m, n) of Fig. 7, from Table 1


# Figs. 9 and 15 (repeats) and Table 1 (k, l, m, n). The released Inception-ResNet-v2's row is read from its code;
# the released Inception-v4 has the paper's row.
LAYOUTS = {
    "inception_v4": Layout(blocks=(4, 7, 3), reduction_a=(192, 224, 256, 384)),
    "inception_resnet_v2": Layout(blocks=(5, 10, 5), reduction_a=(256, 256, 384, 384)),
    "inception_resnet_v2_tf": Layout(blocks=(10, 20, 10), reduction_a=(256, 256, 384, 384)),
}
# Sec. 3.3 scales residuals by "between 0.1 and 0.3" and names no values; these are the release's (A, B, C).
RESIDUAL_SCALE = (0.17, 0.10, 0.20)
RELEASE_TOP = 1536  # the release's last 1x1 convolution ("Conv2d_7b_1x1"), which no figure shows


class ConvBN(nn.Sequential):
    """One "Conv" box of the figures: convolution without bias, batch normalisation, ReLU.

    Args:
        kernel_size: an int for a square kernel or (height, width) for the factorised 1x7, 7x1, 1x3 and 3x1 ones.
        valid: no padding (the figures' "V"); otherwise the grid keeps its size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
                 stride: int = 1, valid: bool = False):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        padding = (0, 0) if valid else (kh // 2, kw // 2)
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)  # TF-slim's epsilon
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels


def _ordered(first: tuple[int, int], second: tuple[int, int],
             release_order: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """A factorised pair's two kernels in the figures' order, or swapped as the TF-slim release runs them."""
    return (second, first) if release_order else (first, second)


def _avg_pool() -> nn.AvgPool2d:
    # The figures' "Avg Pooling" inside the blocks: 3x3, stride 1, grid kept. The release pools with TensorFlow's
    # SAME padding, which leaves the padding out of the average at the borders.
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def _max_pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2)  # every max-pool of the figures is 3x3, stride 2, "V"


class Concat(nn.Module):
    """Runs every branch on the same input and stacks their maps: the figures' "Filter concat"."""

    def __init__(self, *branches: nn.Module, out_channels: int):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.out_channels = out_channels

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class Stem(nn.Sequential):
    """Fig. 3, the stem of Inception-v4 and Inception-ResNet-v2: 299x299x3 to 35x35x384.

    Args:
        release_order: Mixed-4a's 7x7 factorised as 1x7 then 7x1, as the TF-slim release has it.
    """

    def __init__(self, in_chans: int, *, release_order: bool = False):
        k7x1, k1x7 = _ordered((7, 1), (1, 7), release_order)
        super().__init__(
            ConvBN(in_chans, 32, 3, stride=2, valid=True),  # 149x149x32
            ConvBN(32, 32, 3, valid=True),  # 147x147x32
            ConvBN(32, 64, 3),  # 147x147x64
            Concat(_max_pool(), ConvBN(64, 96, 3, stride=2, valid=True), out_channels=64 + 96),  # 73x73x160
            Concat(
                nn.Sequential(ConvBN(160, 64, 1), ConvBN(64, 96, 3, valid=True)),
                # Fig. 3 factorises 7x7 as 7x1 then 1x7; the release the other way round (same weights count)
                nn.Sequential(ConvBN(160, 64, 1), ConvBN(64, 64, k7x1), ConvBN(64, 64, k1x7),
                              ConvBN(64, 96, 3, valid=True)),
                out_channels=96 + 96,
            ),  # 71x71x192
            Concat(ConvBN(192, 192, 3, stride=2, valid=True), _max_pool(), out_channels=192 + 192),  # 35x35x384
        )
        self.out_channels = 384


class ReleasedStem(nn.Sequential):
    """The stem of the released Inception-ResNet-v2: Inception-v3's first layers and a 35x35 block, to 35x35x320."""

    def __init__(self, in_chans: int):
        super().__init__(
            ConvBN(in_chans, 32, 3, stride=2, valid=True),  # 149x149x32
            ConvBN(32, 32, 3, valid=True),  # 147x147x32
            ConvBN(32, 64, 3),  # 147x147x64
            _max_pool(),  # 73x73x64
            ConvBN(64, 80, 1),  # 73x73x80
            ConvBN(80, 192, 3, valid=True),  # 71x71x192
            _max_pool(),  # 35x35x192
            Concat(  # the release's "Mixed_5b"
                ConvBN(192, 96, 1),
                nn.Sequential(ConvBN(192, 48, 1), ConvBN(48, 64, 5)),
                nn.Sequential(ConvBN(192, 64, 1), ConvBN(64, 96, 3), ConvBN(96, 96, 3)),
                nn.Sequential(_avg_pool(), ConvBN(192, 64, 1)),
                out_channels=96 + 64 + 96 + 64,
            ),  # 35x35x320
        )
        self.out_channels = 320


class InceptionA(Concat):
    """Fig. 4, the 35x35 block of Inception-v4 (384 maps in and out)."""

    def __init__(self, in_channels: int):
        super().__init__(
            ConvBN(in_channels, 96, 1),
            nn.Sequential(ConvBN(in_channels, 64, 1), ConvBN(64, 96, 3)),
            nn.Sequential(ConvBN(in_channels, 64, 1), ConvBN(64, 96, 3), ConvBN(96, 96, 3)),
            nn.Sequential(_avg_pool(), ConvBN(in_channels, 96, 1)),
            out_channels=96 + 96 + 96 + 96,
        )


class InceptionB(Concat):
    """Fig. 5, the 17x17 block of Inception-v4 (1024 maps in and out).

    Args:
        release_order: the longest branch starts its pairs with 7x1, as the TF-slim release has it.
    """

    def __init__(self, in_channels: int, *, release_order: bool = False):
        k1x7, k7x1 = _ordered((1, 7), (7, 1), release_order)
        super().__init__(
            ConvBN(in_channels, 384, 1),
            nn.Sequential(ConvBN(in_channels, 192, 1), ConvBN(192, 224, (1, 7)), ConvBN(224, 256, (7, 1))),
            # Fig. 5 starts this branch's factorised pairs with 1x7; the release starts with 7x1 (same weights count)
            nn.Sequential(ConvBN(in_channels, 192, 1), ConvBN(192, 192, k1x7), ConvBN(192, 224, k7x1),
                          ConvBN(224, 224, k1x7), ConvBN(224, 256, k7x1)),
            nn.Sequential(_avg_pool(), ConvBN(in_channels, 128, 1)),
            out_channels=384 + 256 + 256 + 128,
        )


class InceptionC(Concat):
    """Fig. 6, the 8x8 block of Inception-v4 (1536 maps in and out); two branches end in a 1x3 / 3x1 split.

    Args:
        release_order: the longest branch runs 3x1 (448) then 1x3 (512), as the TF-slim release has it.
    """

    def __init__(self, in_channels: int, *, release_order: bool = False):
        k1x3, k3x1 = _ordered((1, 3), (3, 1), release_order)
        super().__init__(
            ConvBN(in_channels, 256, 1),
            nn.Sequential(ConvBN(in_channels, 384, 1),
                          Concat(ConvBN(384, 256, (1, 3)), ConvBN(384, 256, (3, 1)), out_channels=512)),
            # Fig. 6 has 1x3 (448) then 3x1 (512); the release has 3x1 then 1x3 (same weights count). The split
            # after it is 1x3 then 3x1 in both.
            nn.Sequential(ConvBN(in_channels, 384, 1), ConvBN(384, 448, k1x3), ConvBN(448, 512, k3x1),
                          Concat(ConvBN(512, 256, (1, 3)), ConvBN(512, 256, (3, 1)), out_channels=512)),
            nn.Sequential(_avg_pool(), ConvBN(in_channels, 256, 1)),
            out_channels=256 + 512 + 512 + 256,
        )


class ReductionA(Concat):
    """Fig. 7, 35x35 to 17x17, with the filter banks k, l, m, n of Table 1."""

    def __init__(self, in_channels: int, k: int, l: int, m: int, n: int):  # noqa: E741 (the paper's letters)
        super().__init__(
            ConvBN(in_channels, n, 3, stride=2, valid=True),
            nn.Sequential(ConvBN(in_channels, k, 1), ConvBN(k, l, 3), ConvBN(l, m, 3, stride=2, valid=True)),
            _max_pool(),
            out_channels=n + m + in_channels,
        )


class ReductionB(Concat):
    """Fig. 8, Inception-v4's 17x17 to 8x8 reduction."""

    def __init__(self, in_channels: int):
        super().__init__(
            nn.Sequential(ConvBN(in_channels, 192, 1), ConvBN(192, 192, 3, stride=2, valid=True)),
            nn.Sequential(ConvBN(in_channels, 256, 1), ConvBN(256, 256, (1, 7)), ConvBN(256, 320, (7, 1)),
                          ConvBN(320, 320, 3, stride=2, valid=True)),
            _max_pool(),
            out_channels=192 + 320 + in_channels,
        )


class ResidualReductionB(Concat):
    """Fig. 18, Inception-ResNet-v2's 17x17 to 8x8 reduction."""

    def __init__(self, in_channels: int):
        super().__init__(
            nn.Sequential(ConvBN(in_channels, 256, 1), ConvBN(256, 384, 3, stride=2, valid=True)),
            nn.Sequential(ConvBN(in_channels, 256, 1), ConvBN(256, 288, 3, stride=2, valid=True)),
            nn.Sequential(ConvBN(in_channels, 256, 1), ConvBN(256, 288, 3),
                          ConvBN(288, 320, 3, stride=2, valid=True)),
            _max_pool(),
            out_channels=384 + 288 + 320 + in_channels,
        )


class ResidualInception(nn.Module):
    """An Inception-ResNet block: ReLU(x + scale * up(concat(branches(x)))).

    `up` is the figures' "1x1 Conv (Linear)": a plain convolution with a bias, no batch normalisation and no ReLU,
    that brings the branches back to the input's width so the two can be added (Sec. 3.2). Nothing normalises the
    sum; the ReLU after it is the figures' "Relu" box.

    Args:
        scale: the factor on the residual before the addition (Sec. 3.3, Fig. 20).
        activate: the ReLU after the sum; the release's very last block has none.
    """

    def __init__(self, in_channels: int, branches: list[nn.Module], branch_channels: int, *, scale: float,
                 activate: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = nn.Conv2d(branch_channels, in_channels, 1)
        self.scale = scale
        self.relu = nn.ReLU(inplace=True) if activate else nn.Identity()
        self.out_channels = in_channels

    def forward(self, x):
        residual = self.up(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.relu(x + self.scale * residual)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class InceptionResNetA(ResidualInception):
    """Fig. 16, Inception-ResNet-v2's 35x35 block."""

    def __init__(self, in_channels: int, *, scale: float):
        super().__init__(in_channels, [
            ConvBN(in_channels, 32, 1),
            nn.Sequential(ConvBN(in_channels, 32, 1), ConvBN(32, 32, 3)),
            nn.Sequential(ConvBN(in_channels, 32, 1), ConvBN(32, 48, 3), ConvBN(48, 64, 3)),
        ], 32 + 32 + 64, scale=scale)


class InceptionResNetB(ResidualInception):
    """Fig. 17, Inception-ResNet-v2's 17x17 block."""

    def __init__(self, in_channels: int, *, scale: float):
        super().__init__(in_channels, [
            ConvBN(in_channels, 192, 1),
            nn.Sequential(ConvBN(in_channels, 128, 1), ConvBN(128, 160, (1, 7)), ConvBN(160, 192, (7, 1))),
        ], 192 + 192, scale=scale)


class InceptionResNetC(ResidualInception):
    """Fig. 19, Inception-ResNet-v2's 8x8 block."""

    def __init__(self, in_channels: int, *, scale: float, activate: bool = True):
        super().__init__(in_channels, [
            ConvBN(in_channels, 192, 1),
            nn.Sequential(ConvBN(in_channels, 192, 1), ConvBN(192, 224, (1, 3)), ConvBN(224, 256, (3, 1))),
        ], 192 + 256, scale=scale, activate=activate)


def _head(in_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    # Figs. 9 and 15: average pooling over the whole final grid (8x8 at 299x299), dropout (keep 0.8), softmax.
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout),
                         nn.Linear(in_channels, num_classes))


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class InceptionV4(nn.Module):
    """Fig. 9: stem, 4 x Inception-A, Reduction-A, 7 x Inception-B, Reduction-B, 3 x Inception-C, pool, classifier.

    Args:
        release_order: run the three factorised pairs that the TF-slim release orders differently from Figs. 3, 5
            and 6 in the release's order (`inception_v4_tf`), so that its weights compute the same function.
        dropout: probability of dropping a pooled feature before the classifier (Fig. 9 keeps 0.8, so 0.2).
    """

    def __init__(self, layout: Layout, *, release_order: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float = 0.2):
        super().__init__()
        _check_dropout(dropout)
        (a, b, c), (k, l, m, n) = layout  # noqa: E741
        self.stem = Stem(in_chans, release_order=release_order)
        self.inception_a = nn.Sequential(*[InceptionA(self.stem.out_channels) for _ in range(a)])
        self.reduction_a = ReductionA(self.stem.out_channels, k, l, m, n)
        width = self.reduction_a.out_channels
        self.inception_b = nn.Sequential(*[InceptionB(width, release_order=release_order) for _ in range(b)])
        self.reduction_b = ReductionB(width)
        width = self.reduction_b.out_channels
        self.inception_c = nn.Sequential(*[InceptionC(width, release_order=release_order) for _ in range(c)])
        self.head = _head(width, num_classes, dropout)

    def forward(self, x):
        x = self.stem(x)  # (N, 384, 35, 35) at 299x299
        x = self.inception_a(x)  # (N, 384, 35, 35)
        x = self.reduction_a(x)  # (N, 1024, 17, 17)
        x = self.inception_b(x)  # (N, 1024, 17, 17)
        x = self.reduction_b(x)  # (N, 1536, 8, 8)
        x = self.inception_c(x)  # (N, 1536, 8, 8)
        return self.head(x)


class InceptionResNetV2(nn.Module):
    """Fig. 15: stem, Inception-ResNet-A blocks, Reduction-A, -B blocks, Reduction-B, -C blocks, pool, classifier.

    Args:
        release_top: end as the released network does: its last 8x8 block unscaled and without ReLU, then a 1x1
            convolution to 1536 maps before the pooling. The figures have neither.
        dropout: probability of dropping a pooled feature before the classifier (Fig. 15 keeps 0.8, so 0.2).
        residual_scale: the factors on the residuals of the A, B and C blocks (Sec. 3.3: between 0.1 and 0.3).
    """

    def __init__(self, layout: Layout, *, stem: type[nn.Module] = Stem, release_top: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2,
                 residual_scale: tuple[float, float, float] = RESIDUAL_SCALE):
        super().__init__()
        _check_dropout(dropout)
        if len(residual_scale) != 3 or not all(isinstance(s, (int, float)) and not isinstance(s, bool)
                                                 for s in residual_scale):
            raise ValueError(f"residual_scale must be three numbers (A, B, C blocks), got {residual_scale!r}")
        (a, b, c), (k, l, m, n) = layout  # noqa: E741
        scale_a, scale_b, scale_c = (float(s) for s in residual_scale)
        self.stem = stem(in_chans)
        width = self.stem.out_channels
        self.inception_a = nn.Sequential(*[InceptionResNetA(width, scale=scale_a) for _ in range(a)])
        self.reduction_a = ReductionA(width, k, l, m, n)
        width = self.reduction_a.out_channels
        self.inception_b = nn.Sequential(*[InceptionResNetB(width, scale=scale_b) for _ in range(b)])
        self.reduction_b = ResidualReductionB(width)
        width = self.reduction_b.out_channels
        blocks_c = [InceptionResNetC(width, scale=scale_c) for _ in range(c)]
        if release_top:
            blocks_c[-1] = InceptionResNetC(width, scale=1.0, activate=False)
        self.inception_c = nn.Sequential(*blocks_c)
        head = _head(RELEASE_TOP if release_top else width, num_classes, dropout)
        if release_top:
            head.insert(0, ConvBN(width, RELEASE_TOP, 1))
        self.head = head

    def forward(self, x):
        # Channels at 299x299 for the paper's build (the release's in brackets)
        x = self.stem(x)  # (N, 384 [320], 35, 35)
        x = self.inception_a(x)  # (N, 384 [320], 35, 35)
        x = self.reduction_a(x)  # (N, 1152 [1088], 17, 17)
        x = self.inception_b(x)  # (N, 1152 [1088], 17, 17)
        x = self.reduction_b(x)  # (N, 2144 [2080], 8, 8)
        x = self.inception_c(x)  # (N, 2144 [2080], 8, 8)
        return self.head(x)


# Third-party counts for comparison, not the paper's: timm 1.0 reports 42,679,816 parameters for its port of the
# released Inception-v4 and 55,843,464 for the released Inception-ResNet-v2 (both with 1000 classes, batch norm
# with scale and shift, no auxiliary head). tests/test_inception_v4.py checks our counts against both these
# figures and a count written out from the figures' widths. A kh x kw convolution has as many weights as a kw x kh
# one, so `inception_v4` and `inception_v4_tf` have the same count.

_COMMON = (
    "batch normalisation (eps 0.001) after every convolution, which has no bias, as in the authors' TF-slim "
    "release; the paper gives no per-layer placement. Each normalisation learns a scale and a shift (PyTorch's "
    "default, as timm's port); the release learns only the shift",
    "the average pools inside the blocks are 3x3, stride 1, padded to keep the grid, and leave the padding out of "
    "the average (the release's TensorFlow SAME pooling); the figures say only 'Avg Pooling'",
    "the final average pool is global (adaptive), so inputs larger than 299x299 also work",
    "dropout is PyTorch's inverted form with drop probability 0.2 (the figures' 'keep 0.8'); the network returns "
    "logits for softmax cross-entropy",
)
# Neither figure has an auxiliary classifier (the releases add one on the 17x17 grid), and the paper gives no
# initialisation: PyTorch's defaults are used.
_RESIDUAL = (
    "residual scales 0.17, 0.10 and 0.20 for the A, B and C blocks (the release's; option residual_scale): Sec. 3.3 "
    "says only that factors between 0.1 and 0.3 were picked",
    "each block's '1x1 Conv (Linear)' has a bias and no batch normalisation, as in the release; the paper says "
    "batch normalisation is not applied on top of the summations and is silent on this convolution",
)

register_model("inception_v4", ModelCard(
    family="inception_v4", paper=SZEGEDY_2016, dataset="imagenet", input_size=(3, 299, 299),
    top1_err=20.0, top5_err=5.0, err_source="Table 2, single crop, single model, non-blacklisted ILSVRC-2012 val",
    deviations=_COMMON,
))(partial(InceptionV4, LAYOUTS["inception_v4"], release_order=False))

register_model("inception_v4_tf", ModelCard(
    family="inception_v4", paper=SZEGEDY_2016, dataset="imagenet", input_size=(3, 299, 299),
    top1_err=19.8, top5_err=4.8,
    err_source="tensorflow/models research/slim README (checkpoint inception_v4_2016_09_09: 80.2 / 95.2 % "
               "accuracy), single crop, ILSVRC-2012 val; not a figure of the paper",
    deviations=(
        "this is the network of the authors' TF-slim release (tensorflow/models, research/slim/nets/inception_v4.py, "
        "as timm ports it in timm/models/inception_v4.py), not of the paper's figures: Fig. 9's widths, block counts "
        "and grids, but three factorised pairs run in the other order, so that the released weights compute it",
        "the stem's Mixed-4a factorises its 7x7 as 1x7 then 7x1 (64 maps each); Fig. 3 has 7x1 then 1x7",
        "Inception-B's longest branch runs 1x1 (192), 7x1 (192), 1x7 (224), 7x1 (224), 1x7 (256); Fig. 5 has "
        "1x7, 7x1, 1x7, 7x1 after the 1x1",
        "Inception-C's longest branch runs 1x1 (384), 3x1 (448), 1x3 (512) before its 1x3 / 3x1 split; Fig. 6 has "
        "1x3 (448) then 3x1 (512)",
        "1000 classes, as timm's port; the released checkpoint has 1001 (a background class first)",
        "no auxiliary classifier; the release has one on the 17x17 grid (after its last Inception-B, Mixed_6h)",
        *_COMMON,
    ),
))(partial(InceptionV4, LAYOUTS["inception_v4"], release_order=True))

register_model("inception_resnet_v2", ModelCard(
    family="inception_v4", paper=SZEGEDY_2016, dataset="imagenet", input_size=(3, 299, 299),
    top1_err=19.9, top5_err=4.9, err_source="Table 2, single crop, single model, non-blacklisted ILSVRC-2012 val",
    deviations=(
        "the 1x1 linear convolutions of the 17x17 and 8x8 blocks restore their input's width, 1152 and 2144 maps, "
        "which a residual sum needs; Figs. 17 and 19 label them 1154 and 2048, which cannot be added to what "
        "Reduction-A (Table 1: k, l, m, n = 256, 256, 384, 384, on the stem's 384 maps) and Reduction-B (Fig. 18) "
        "produce. The classifier therefore sees 2144 pooled features",
        *_RESIDUAL,
        *_COMMON,
    ),
))(partial(InceptionResNetV2, LAYOUTS["inception_resnet_v2"], stem=Stem, release_top=False))

register_model("inception_resnet_v2_tf", ModelCard(
    family="inception_v4", paper=SZEGEDY_2016, dataset="imagenet", input_size=(3, 299, 299),
    top1_err=19.6, top5_err=4.7,
    err_source="tensorflow/models research/slim README (checkpoint inception_resnet_v2_2016_08_30: 80.4 / 95.3 % "
               "accuracy), single crop, ILSVRC-2012 val; not a figure of the paper",
    deviations=(
        "this is the network of the authors' TF-slim release, not of the paper's figures: an Inception-v3-like stem "
        "(3x3 convolutions 32, 32, 64, max-pool, 1x1 80, 3x3 192, max-pool, then a 35x35 Inception block) giving "
        "35x35x320 instead of Fig. 3's 35x35x384",
        "10, 20 and 10 residual blocks instead of Fig. 15's 5, 10 and 5; widths 320, 1088 and 2080 on the three grids",
        "the last 8x8 block adds its residual unscaled and has no ReLU, and a 1x1 convolution to 1536 maps precedes "
        "the average pool; no figure shows either",
        "1000 classes; the released checkpoint has 1001 (a background class first)",
        "no auxiliary classifier; the release has one on the 17x17 grid",
        *_RESIDUAL,
        *_COMMON,
    ),
))(partial(InceptionResNetV2, LAYOUTS["inception_resnet_v2_tf"], stem=ReleasedStem, release_top=True))
