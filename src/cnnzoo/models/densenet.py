"""DenseNet: Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017,
arXiv:1608.06993.

Inside a dense block, layer l receives the concatenation of the block's input x_0 and the outputs of all l - 1
layers before it, x_l = H_l([x_0, ..., x_{l-1}]) (Eq. 2), and adds k feature maps of its own (k: the growth
rate), so its input has k_0 + k(l - 1) maps. Counting x_0 as a node, an L-layer block has L(L+1)/2 direct
connections. Transition layers between blocks (BN-ReLU-1x1 conv-2x2 average pool) change the map size; with
compression theta they keep floor(theta * m) of the m maps (Sec. 3).

- ImageNet, DenseNet-BC of Table 1 (k = 32): `densenet121`, `densenet169`, `densenet201`, `densenet264`, and
  `densenet161` (k = 48), which is not in the paper: it comes from the authors' release (README and
  models/densenet.lua of liuzhuang13/DenseNet). Stem 7x7/2 conv with 2k filters and 3x3/2 max-pool, bottleneck
  layers BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k), compression 0.5, BN-ReLU, global average pool, FC.
  Errors: Table 3, single crop. Submodule names are torchvision's (`features.conv0` ... `features.norm5`,
  `classifier`), so the four torchvision twins load its state_dicts.
- CIFAR, Table 2 (Sec. 3, "Implementation Details"): three dense blocks at 32, 16 and 8 pixels. DenseNet
  (`densenet40_k12`, `densenet100_k12`, `densenet100_k24`): (L - 4) / 3 layers BN-ReLU-3x3 conv per block, a
  first 3x3 conv with 16 filters, transitions that keep the width. DenseNet-BC (`densenet_bc100_k12`,
  `densenet_bc250_k24`, `densenet_bc190_k40`): (L - 4) / 6 bottleneck layers per block, a first conv with 2k
  filters, compression 0.5. The same names as the ImageNet nets (`features.conv0`, `features.denseblock{i}`,
  `features.transition{i}`, `features.norm4`, `classifier`).

Options: `dropout`, the paper's dropout after every convolution but the first (rate 0.2 for the CIFAR and SVHN
runs without augmentation, Sec. 4.2; 0 otherwise); `memory_efficient`, which recomputes each layer's
concatenation, BN, ReLU and first convolution in the backward pass instead of storing them (Pleiss et al. 2017,
the authors' "technical report on the memory-efficient implementation", Sec. 4.2), with the same outputs and
gradients; unlike torchvision's option it updates batch norm's running statistics once per step, not twice.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cnnzoo.models.papers import HUANG_2017
from cnnzoo.models.resnet import he_init
from cnnzoo.registry import ModelCard, register_model

__all__ = ["DenseLayer", "BottleneckDenseLayer", "DenseBlock", "Transition", "DenseNet", "CifarDenseNet"]

# Table 1 (k = 32) and, for DenseNet-161, the authors' release: layers per dense block. The name counts weight
# layers (stem conv, two per layer, three transitions, FC), except DenseNet-264: its blocks give 265.
IMAGENET_DENSENETS = {  # name: (growth rate k, layers per block, Table 3 single-crop (top-1 %, top-5 %), torchvision)
    "densenet121": (32, (6, 12, 24, 16), (25.02, 7.71), "densenet121"),
    "densenet169": (32, (6, 12, 32, 32), (23.80, 6.85), "densenet169"),
    "densenet201": (32, (6, 12, 48, 32), (22.58, 6.34), "densenet201"),
    "densenet264": (32, (6, 12, 64, 48), (22.15, 6.12), None),
    "densenet161": (48, (6, 12, 36, 24), None, "densenet161"),
}
# The paper states one ImageNet parameter count, in the text of Sec. 4.4: "a DenseNet-201 with 20M parameters".
# Fig. 3 (left) plots the others against top-1 error without printing them, so those cards carry none.
IMAGENET_PARAMS = {"densenet201": (20e6, "Sec. 4.4 text")}
# DenseNet-161 is only in the authors' README (Torch model, 224x224 single crop): top-1 22.2, no top-5.
DENSENET161_TOP1 = 22.2

# Table 2, CIFAR: name: (depth L, growth rate k, parameters as reported, C10+ test error %). Every count is
# rounded to 0.1M. The errors are the C10+ column (standard translation and mirroring augmentation, no dropout).
CIFAR_DENSENETS = {
    "densenet40_k12": (40, 12, 1.0e6, 5.24),
    "densenet100_k12": (100, 12, 7.0e6, 4.10),
    "densenet100_k24": (100, 24, 27.2e6, 3.74),
}
CIFAR_DENSENETS_BC = {
    "densenet_bc100_k12": (100, 12, 0.8e6, 4.51),
    "densenet_bc250_k24": (250, 24, 15.3e6, 3.62),
    "densenet_bc190_k40": (190, 40, 25.6e6, 3.46),
}
CIFAR_FIRST_CONV = 16  # DenseNet's first convolution; DenseNet-BC's has 2k filters (Sec. 3)
COMPRESSION_BC = 0.5  # theta (Sec. 3, "Compression")
BOTTLENECK_FACTOR = 4  # "we let each 1x1 convolution produce 4k feature-maps" (Sec. 3, "Bottleneck layers")


class _ConcatLayer(nn.Module):
    """H_l of Eq. (2) on the list [x_0, ..., x_{l-1}]; returns x_l, its k new feature maps.

    A subclass splits H_l in two: `_entry` (concatenation, BN, ReLU, the first convolution), the part whose
    stored activations grow with l, and `_exit` (the rest). With `memory_efficient`, `_entry` is checkpointed.
    """

    convs = 0  # convolutions per layer: turns the depth L into layers per block

    def __init__(self, in_channels: int, growth_rate: int, *, dropout: float, memory_efficient: bool):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.out_channels = growth_rate
        self.dropout = dropout
        self.memory_efficient = memory_efficient

    def _entry(self, features: tuple[Tensor, ...] | list[Tensor], recompute: bool) -> Tensor:
        raise NotImplementedError

    def _exit(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    def forward(self, features: list[Tensor] | Tensor) -> Tensor:
        if isinstance(features, Tensor):
            features = [features]
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            calls = []

            def entry(*inputs: Tensor) -> Tensor:
                calls.append(None)  # the second call is the recomputation in the backward pass
                return self._entry(inputs, recompute=len(calls) > 1)

            out = checkpoint(entry, *features, use_reentrant=False)
        else:
            out = self._entry(features, recompute=False)
        return self._exit(out)


def _normalise(norm: nn.BatchNorm2d, x: Tensor, recompute: bool) -> Tensor:
    """norm(x); when recomputing in training, the same batch statistics without a second running-average update.

    Momentum 0 leaves the running averages exactly as they are, and the call saves the same tensors for the backward
    pass as the first one (which non-reentrant checkpointing checks).
    """
    if recompute and norm.training and norm.track_running_stats:
        return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, True, 0.0, norm.eps)
    return norm(x)


class DenseLayer(_ConcatLayer):
    """DenseNet's H_l: BN-ReLU-3x3 conv with k filters (Sec. 3, "Composite function")."""

    convs = 1

    def __init__(self, in_channels: int, growth_rate: int, *, dropout: float = 0.0, memory_efficient: bool = False):
        super().__init__(in_channels, growth_rate, dropout=dropout, memory_efficient=memory_efficient)
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)

    def _entry(self, features, recompute):
        return self.conv(self.relu(_normalise(self.norm, torch.cat(features, 1), recompute)))

    def _exit(self, x):
        return self._drop(x)


class BottleneckDenseLayer(_ConcatLayer):
    """DenseNet-B's H_l: BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3 conv (k) (Sec. 3, "Bottleneck layers")."""

    convs = 2

    def __init__(self, in_channels: int, growth_rate: int, *, dropout: float = 0.0, memory_efficient: bool = False):
        super().__init__(in_channels, growth_rate, dropout=dropout, memory_efficient=memory_efficient)
        width = BOTTLENECK_FACTOR * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)

    def _entry(self, features, recompute):
        return self.conv1(self.relu1(_normalise(self.norm1, torch.cat(features, 1), recompute)))

    def _exit(self, x):
        x = self._drop(x)  # the authors' code drops after the 1x1 convolution too ("after each convolutional layer")
        return self._drop(self.conv2(self.relu2(self.norm2(x))))


class DenseBlock(nn.ModuleDict):
    """Layers that each see the block input and every earlier layer's output; returns all of them concatenated."""

    def __init__(self, layer: type[_ConcatLayer], num_layers: int, in_channels: int, growth_rate: int, *,
                 dropout: float, memory_efficient: bool):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", layer(in_channels + i * growth_rate, growth_rate, dropout=dropout,
                                                         memory_efficient=memory_efficient))
        self.in_channels = in_channels
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv-2x2 average pool between two dense blocks (Sec. 3, "Pooling layers"; Table 1)."""

    def __init__(self, in_channels: int, out_channels: int, *, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)
        self.dropout = dropout
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.relu(self.norm(x)))
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        return self.pool(x)


def _add_blocks(features: nn.Sequential, layer: type[_ConcatLayer], block_config: tuple[int, ...], channels: int,
                growth_rate: int, compression: float, dropout: float, memory_efficient: bool) -> int:
    """Dense blocks with transitions between them, then the final BN; returns the number of output maps."""
    if not 0.0 < compression <= 1.0:
        raise ValueError(f"compression must be in (0, 1], got {compression}")
    for i, num_layers in enumerate(block_config):
        block = DenseBlock(layer, num_layers, channels, growth_rate, dropout=dropout, memory_efficient=memory_efficient)
        features.add_module(f"denseblock{i + 1}", block)
        channels = block.out_channels
        if i < len(block_config) - 1:
            transition = Transition(channels, int(compression * channels), dropout=dropout)  # floor(theta * m)
            features.add_module(f"transition{i + 1}", transition)
            channels = transition.out_channels
    features.add_module(f"norm{len(block_config) + 1}", nn.BatchNorm2d(channels))
    return channels


def _init(model: nn.Module) -> None:
    # Sec. 4.2 "the weight initialization introduced by [10]": He et al.'s N(0, 2/n), n = k*k*filters as in the
    # authors' code; BN 1 and 0; the classifier's bias 0, its weight U(+-1/sqrt(fan_in)) (Torch's and PyTorch's
    # default).
    he_init(model, mode="fan_out")
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class DenseNet(nn.Module):
    """ImageNet DenseNet-BC of Table 1: 7x7/2 conv (2k), 3x3/2 max-pool, four dense blocks, BN-ReLU, pool, FC.

    Args:
        growth_rate: k.
        block_config: layers per dense block.
        compression: theta of the transitions.
    """

    def __init__(self, *, growth_rate: int, block_config: tuple[int, ...], compression: float = COMPRESSION_BC,
                 num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.0, memory_efficient: bool = False):
        super().__init__()
        stem = 2 * growth_rate
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_chans, stem, 7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(stem))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        channels = _add_blocks(self.features, BottleneckDenseLayer, tuple(block_config), stem, growth_rate,
                               compression, dropout, memory_efficient)
        self.classifier = nn.Linear(channels, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        # 224x224: stem (N, 2k, 56, 56), blocks at 56, 28, 14 and 7 pixels, (N, C, 7, 7) after norm5.
        x = F.relu(self.features(x), inplace=True)  # in place after norm5, as torchvision
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class CifarDenseNet(nn.Module):
    """CIFAR DenseNet of Sec. 3: 3x3 conv, three dense blocks at 32, 16 and 8 pixels, BN-ReLU, global pool, FC.

    Args:
        layer: DenseLayer (DenseNet) or BottleneckDenseLayer (DenseNet-B).
        depth: L = 3 blocks x layers x convolutions per layer + 4 (first conv, two transitions, classifier).
        first_conv: filters of the first convolution (16; 2k for DenseNet-BC).
        compression: theta of the transitions (1: DenseNet; 0.5: DenseNet-BC).
    """

    def __init__(self, *, layer: type[_ConcatLayer], depth: int, growth_rate: int, first_conv: int,
                 compression: float, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0,
                 memory_efficient: bool = False):
        super().__init__()
        per_block, rest = divmod(depth - 4, 3 * layer.convs)
        if rest or per_block < 1:
            raise ValueError(f"depth {depth} is not 3 * {layer.convs} * n + 4 for {layer.__name__}")
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_chans, first_conv, 3, padding=1, bias=False))
        channels = _add_blocks(self.features, layer, (per_block,) * 3, first_conv, growth_rate, compression,
                               dropout, memory_efficient)
        self.classifier = nn.Linear(channels, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x))  # blocks at 32, 16 and 8 pixels: (N, C, 8, 8)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


_NOT_IN_PAPER = ("not in the paper: growth rate 48, blocks (6, 12, 36, 24) and its error come from the authors' "
                 "release (liuzhuang13/DenseNet README and models/densenet.lua); Table 1 lists k = 32 nets only")
_IMAGENET = dict(family="densenet", paper=HUANG_2017, dataset="imagenet", input_size=(3, 224, 224))
_CIFAR = dict(family="densenet", paper=HUANG_2017, dataset="cifar10", input_size=(3, 32, 32))

for name, (k, blocks, errors, twin) in IMAGENET_DENSENETS.items():
    if errors is not None:
        reported = dict(top1_err=errors[0], top5_err=errors[1],
                        err_source="Table 3, single-crop (224x224) testing, ILSVRC-2012 val")
        deviations = ()
    else:
        reported = dict(top1_err=DENSENET161_TOP1,
                        err_source="the authors' README (Torch model, 224x224 single crop), not in the paper")
        deviations = (_NOT_IN_PAPER,)
    if name in IMAGENET_PARAMS:
        params, where = IMAGENET_PARAMS[name]
        reported |= dict(params=params, params_source=where, params_rounding=1e6)
    card = ModelCard(**_IMAGENET, torchvision=twin, deviations=deviations, **reported)
    register_model(name, card)(partial(DenseNet, growth_rate=k, block_config=blocks, compression=COMPRESSION_BC))

for table, layer in ((CIFAR_DENSENETS, DenseLayer), (CIFAR_DENSENETS_BC, BottleneckDenseLayer)):
    bc = layer is BottleneckDenseLayer
    for name, (depth, k, params, err) in table.items():
        card = ModelCard(**_CIFAR, params=params, params_source="Table 2", params_rounding=0.1e6, top1_err=err,
                         err_source="Table 2, C10+ column (CIFAR-10 with standard augmentation), test error")
        register_model(name, card)(partial(CifarDenseNet, layer=layer, depth=depth, growth_rate=k,
                                           first_conv=2 * k if bc else CIFAR_FIRST_CONV,
                                           compression=COMPRESSION_BC if bc else 1.0))
