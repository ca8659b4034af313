"""SqueezeNet: Iandola, Han, Moskewicz, Ashraf, Dally & Keutzer, "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv:1602.07360 (2016).

A Fire module squeezes its input with s1x1 1x1 filters, then expands the squeezed maps with e1x1 1x1 filters and
e3x3 3x3 filters side by side (padding 1, so both keep the side) and concatenates the two: it outputs
e1x1 + e3x3 maps. ReLU follows the squeeze and both expansions (Sec. 3.3.1).

- `squeezenet1_0`: the network of Table 1 and Sec. 3.3: conv1 (96 filters, 7x7/2), fire2 ... fire9, 3x3/2 max-pools
  after conv1, fire4 and fire8, dropout 0.5 after fire9, conv10 (1x1, one filter per class), ReLU and global average
  pooling. No fully connected layer.
- `squeezenet1_1`: not in the paper. The authors' later release (SqueezeNet_v1.1/README.md of
  github.com/forresti/SqueezeNet) keeps Table 1's Fire modules but uses 64 3x3/2 filters in conv1 and pools after
  conv1, fire3 and fire5, for 2.4x less computation.
- `squeezenet1_0_simple_bypass`, `squeezenet1_0_complex_bypass`: the macroarchitectures of Sec. 6 (Fig. 2, Table 3).
  Simple bypass adds each Fire module's input to its output around fire3, fire5, fire7 and fire9, the modules whose
  input and output widths match; complex bypass also adds a 1x1 convolution of the input around fire2, fire4, fire6
  and fire8, where they do not.

Module names are torchvision's (`features.N.squeeze`, `.expand1x1`, `.expand3x3`, `classifier.1`), so
`squeezenet1_0` and `squeezenet1_1` load its state_dicts. Max-pools keep a partial last window, as Caffe's do.
Weights start as in the authors' Caffe files: Caffe's "xavier" filler (uniform, variance 1 / fan-in) everywhere but
conv10, which starts from N(0, 0.01^2); biases start at 0. The released v1.0 file also pads conv10 by one pixel,
which Table 1 does not (its conv10 output is 13x13); this module follows Table 1.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from cnnzoo.models.papers import IANDOLA_2016
from cnnzoo.registry import ModelCard, register_model

# Table 1: (s1x1, e1x1, e3x3) of every Fire module. Both versions share them.
FIRE_MODULES = {
    "fire2": (16, 64, 64),
    "fire3": (16, 64, 64),
    "fire4": (32, 128, 128),
    "fire5": (32, 128, 128),
    "fire6": (48, 192, 192),
    "fire7": (48, 192, 192),
    "fire8": (64, 256, 256),
    "fire9": (64, 256, 256),
}


class Layout(NamedTuple):
    """What differs between the versions: conv1 and where the 3x3 stride-2 max-pools go."""

    conv1_filters: int
    conv1_kernel: int  # stride 2, no padding
    pool_after: tuple[str, ...]


VERSIONS = {
    "1_0": Layout(96, 7, ("conv1", "fire4", "fire8")),  # Table 1 and Sec. 3.3
    "1_1": Layout(64, 3, ("conv1", "fire3", "fire5")),  # the v1.1 release README: pool_{1,3,5}
}

# Sec. 6 and Fig. 2.
SIMPLE_BYPASS = ("fire3", "fire5", "fire7", "fire9")  # identity: input width equals output width
COMPLEX_BYPASS = ("fire2", "fire4", "fire6", "fire8")  # 1x1 convolution to the output width


class Fire(nn.Module):
    """Squeeze with 1x1 filters, then expand with 1x1 and 3x3 filters whose outputs are concatenated."""

    def __init__(self, in_channels: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = expand1x1_planes + expand3x3_planes
        self.squeeze = nn.Conv2d(in_channels, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        s = self.squeeze_activation(self.squeeze(x))
        e1 = self.expand1x1_activation(self.expand1x1(s))
        e3 = self.expand3x3_activation(self.expand3x3(s))
        return torch.cat([e1, e3], 1)  # e1x1 + e3x3 maps


class SimpleBypassFire(Fire):
    """A Fire module whose input is added to its output ("just a wire", Sec. 6); input and output widths must match."""

    def __init__(self, in_channels: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int):
        super().__init__(in_channels, squeeze_planes, expand1x1_planes, expand3x3_planes)
        if self.out_channels != in_channels:
            raise ValueError(f"a simple bypass needs equal input and output widths, got {in_channels} -> "
                             f"{self.out_channels}")

    def forward(self, x):
        return super().forward(x) + x  # the sum feeds the next layer directly: no ReLU after it (Fig. 2)


class ComplexBypassFire(Fire):
    """A Fire module plus a 1x1 convolution of its input to its output width (Sec. 6's complex bypass)."""

    def __init__(self, in_channels: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int):
        super().__init__(in_channels, squeeze_planes, expand1x1_planes, expand3x3_planes)
        self.bypass = nn.Conv2d(in_channels, self.out_channels, kernel_size=1)

    def forward(self, x):
        return super().forward(x) + self.bypass(x)


class SqueezeNet(nn.Module):
    """conv1, eight Fire modules with max-pools between them, then conv10 and global average pooling.

    Args:
        layout: a row of VERSIONS.
        simple_bypass: Fire modules with an identity bypass (Sec. 6).
        complex_bypass: Fire modules with a 1x1-convolution bypass (Sec. 6).
        dropout: probability of dropping an output of fire9 (0.5 in Sec. 3.3.1).
    """

    def __init__(self, layout: Layout, *, simple_bypass: tuple[str, ...] = (), complex_bypass: tuple[str, ...] = (),
                 num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        pool = partial(nn.MaxPool2d, kernel_size=3, stride=2, ceil_mode=True)  # Caffe rounds the output side up
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, layout.conv1_filters, kernel_size=layout.conv1_kernel, stride=2),
            nn.ReLU(inplace=True),
        ]
        if "conv1" in layout.pool_after:
            layers.append(pool())
        channels = layout.conv1_filters
        for name, widths in FIRE_MODULES.items():
            block = SimpleBypassFire if name in simple_bypass else ComplexBypassFire if name in complex_bypass else Fire
            layers.append(block(channels, *widths))
            channels = layers[-1].out_channels
            if name in layout.pool_after:
                layers.append(pool())
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv2d(channels, num_classes, kernel_size=1),  # conv10
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),  # avgpool10: Table 1's 13x13 window is the whole map at 227x227
        )
        self._init_weights()

    def _init_weights(self):
        conv10 = self.classifier[1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is conv10:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:  # Caffe's "xavier" filler: uniform on +-sqrt(3 / fan_in)
                    fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                    bound = math.sqrt(3.0 / fan_in)
                    nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)  # (N, 512, 13, 13) at 227x227 for v1.0; v1.1's pools round 56 -> 28 -> 14 up
        return self.classifier(x).flatten(1)  # conv10 maps averaged to one logit per class


_INPUT = ("input 227x227: Table 1 lists a 224x224 input, but its conv1 output of 111x111 (7x7, stride 2, no padding) "
          "needs 227x227, the crop of the authors' Caffe files; global average pooling lets 224x224 run too")
_V1_1 = ("not in the paper: SqueezeNet v1.1 from the authors' release (SqueezeNet_v1.1/README.md of "
         "github.com/forresti/SqueezeNet): conv1 has 64 3x3 filters instead of 96 7x7 ones, and the max-pools "
         "follow conv1, fire3 and fire5 instead of conv1, fire4 and fire8; the Fire modules are Table 1's. The "
         "README states 1.72 vs 0.72 GFLOPS per image (2.4x less computation) and at least 80.3% top-5 accuracy "
         "for both versions")
_BYPASS_CONV = ("the paper does not say whether the 1x1 bypass convolutions have biases or a ReLU, and no released "
                "file of this variant was found: here they have biases (Caffe's default) and no ReLU, so the bypass "
                "is linear")

_ERR_SOURCE = "ILSVRC-2012 val, single model, uncompressed 32-bit weights"

register_model("squeezenet1_0", ModelCard(
    family="squeezenet", paper=IANDOLA_2016, dataset="imagenet", input_size=(3, 227, 227),
    params=1_248_424, params_source="Table 1 (total of the '# parameter before pruning' column)", params_rounding=1,
    top1_err=42.5, top5_err=19.7, err_source=f"Table 2, SqueezeNet (57.5% top-1, 80.3% top-5), {_ERR_SOURCE}",
    torchvision="squeezenet1_0", deviations=(_INPUT,),
))(partial(SqueezeNet, VERSIONS["1_0"], simple_bypass=(), complex_bypass=()))

register_model("squeezenet1_1", ModelCard(
    family="squeezenet", paper=IANDOLA_2016, dataset="imagenet", input_size=(3, 227, 227),
    torchvision="squeezenet1_1", deviations=(_V1_1,),
))(partial(SqueezeNet, VERSIONS["1_1"], simple_bypass=(), complex_bypass=()))

register_model("squeezenet1_0_simple_bypass", ModelCard(
    family="squeezenet", paper=IANDOLA_2016, dataset="imagenet", input_size=(3, 227, 227),
    params=1_248_424, params_rounding=1,
    params_source="Table 1 total; Sec. 6: simple bypass connections add no parameters",
    top1_err=39.6, top5_err=17.5, err_source=f"Table 3, simple bypass (60.4% top-1, 82.5% top-5), {_ERR_SOURCE}",
    deviations=(_INPUT,),
))(partial(SqueezeNet, VERSIONS["1_0"], simple_bypass=SIMPLE_BYPASS, complex_bypass=()))

# Table 3 gives this variant's size in megabytes, not a parameter count, so the card records none.
register_model("squeezenet1_0_complex_bypass", ModelCard(
    family="squeezenet", paper=IANDOLA_2016, dataset="imagenet", input_size=(3, 227, 227),
    top1_err=41.2, top5_err=18.0, err_source=f"Table 3, complex bypass (58.8% top-1, 82.0% top-5), {_ERR_SOURCE}",
    deviations=(_INPUT, _BYPASS_CONV),
))(partial(SqueezeNet, VERSIONS["1_0"], simple_bypass=SIMPLE_BYPASS, complex_bypass=COMPLEX_BYPASS))
