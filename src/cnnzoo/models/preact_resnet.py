"""Pre-activation ResNet: He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016,
arXiv:1603.05027.

The full pre-activation Residual Unit of Fig. 4(e): every weight layer is preceded by BN and ReLU, and nothing
follows the addition, so the shortcut path is a clean identity from unit to unit. The Appendix fixes the ends of
the network: the first unit takes "the first activation right after conv1 and before splitting into two paths"
(here that BN-ReLU closes the stem and the first unit has no pre-activation of its own), and the last unit is
followed by an extra BN-ReLU before the average pool. Where a bottleneck unit changes the shape, its 1x1
projection shortcut takes the pre-activated input ("these projection shortcuts are also with pre-activation").

- `preact_resnet110`: CIFAR-10, basic units [3x3, 3x3] with 16, 32, 64 filters, depth 6n + 2 with n = 18
  (Table 3). The Appendix gives projection shortcuts to the bottleneck nets only, so this net keeps He et al.
  2015's option A where the shape changes: the subsampled input with zero channels appended, no parameters.
  It takes the raw input, keeping the identity path clean; the paper does not say which.
- `preact_resnet164`, `preact_resnet1001`: CIFAR-10, bottleneck units [1x1, 3x3, 1x1] of width 16, 32, 64 with
  outputs 64, 128, 256, depth 9n + 2 with n = 18 and 111 (Tables 3 and 4). Stride 2 on the first 1x1 of a unit,
  as in He et al. 2015 and the authors' released code (KaimingHe/resnet-1k-layers, resnet-pre-act.lua).
- `preact_resnet200`: ImageNet, bottleneck units [3, 24, 36, 3] on He et al. 2015's stem (Table 5). The paper
  trains it "using the same hyper-parameters and implementations as [1]", so the stem is that paper's
  7x7/2 conv1 and 3x3/2 max-pool, with conv1's BN-ReLU before the pool.

Every network takes `survival_prob`, the last unit's survival probability p_L of stochastic depth (Huang et al.
2016), decaying linearly over all units; a dropped unit returns its shortcut unchanged. 1.0, the default, is
the paper's network. Submodule names: `stem`, `stages.{i}.{j}`, `head` (`head.bn` and `head.relu` are the
extra activation after the last unit).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, Literal

from torch import Tensor, nn

from cnnzoo.layers import StochasticDepth, linear_decay, skip_branch, symbolic_tracing
from cnnzoo.models.papers import HE_2016
from cnnzoo.models.resnet import ZeroPadShortcut, he_init
from cnnzoo.registry import ModelCard, register_model

__all__ = ["PreActBasicBlock", "PreActBottleneck", "PreActResNet"]

CIFAR_WIDTHS = (16, 32, 64)  # per stage: a basic unit's filters, a bottleneck unit's inner width (output 4x)
IMAGENET_WIDTHS = (64, 128, 256, 512)

# name: (unit, units per stage, dataset, CIFAR-10 test error % or ImageNet (top-1 %, top-5 %)). Table 3 gives the
# CIFAR-10 errors (ResNet-164 and -1001 also in Table 4, median of 5 runs, mini-batch 128); Table 5 the ImageNet one.
VARIANTS = {
    "preact_resnet110": ("basic", (18, 18, 18), "cifar10", 6.37),
    "preact_resnet164": ("bottleneck", (18, 18, 18), "cifar10", 5.46),
    "preact_resnet1001": ("bottleneck", (111, 111, 111), "cifar10", 4.92),
    "preact_resnet200": ("bottleneck", (3, 24, 36, 3), "imagenet", (20.7, 5.3)),
}
# Table 4 "For the ResNets we also report the number of parameters": 1.7M (ResNet-164), 10.2M (ResNet-1001).
REPORTED_PARAMS = {"preact_resnet164": 1.7e6, "preact_resnet1001": 10.2e6}


class _PreActUnit(nn.Module):
    """shortcut + branch(BN-ReLU(x)), nothing after the sum; the branch kept with probability p in training.

    Subclasses build `bn1` (None when the input is already activated), the branch (`residual`) and `shortcut`.
    """

    def _setup(self, in_channels: int, out_channels: int, stride: int, shortcut: Literal["A", "B"],
               survival_prob: float) -> None:
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        self.out_channels = out_channels
        self.projection = False
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.projection = True  # the Appendix: projection shortcuts "are also with pre-activation"
        self.stochastic_depth = StochasticDepth(survival_prob) if survival_prob < 1.0 else None

    def preactivation(self, x: Tensor) -> Tensor:
        return x if self.bn1 is None else self.relu(self.bn1(x))

    def skip(self, x: Tensor, pre: Tensor) -> Tensor:
        """The shortcut path: the projection sees the pre-activated input, identity and zero padding the raw one."""
        return self.shortcut(pre if self.projection else x)

    def residual(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        pre = self.preactivation(x)
        shortcut = self.skip(x, pre)
        drop = self.stochastic_depth
        if drop is not None and symbolic_tracing():  # the decision a graph node, drawn where keep() draws
            factor = drop.factor(x)
            return shortcut + self.residual(pre) * factor  # computed even when dropped: a graph has no `if`
        if drop is not None and not drop.keep():
            # Dropped for this mini-batch: the branch is not computed and its weights get zero gradients (the
            # pre-activation stays live when the projection uses it).
            shared = ("shortcut.", "bn1.") if self.projection else ("shortcut.",)
            params = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(shared)]
            return skip_branch(shortcut, params)
        out = self.residual(pre)
        if drop is not None:
            out = drop(out)  # scaled by p in eval mode
        return shortcut + out


class PreActBasicBlock(_PreActUnit):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3 (Fig. 4(e)); the first convolution carries the stage's stride.

    Args:
        preactivate: False for the network's first unit, whose input is already conv1's activation (Appendix).
        shortcut: where the shape changes, "A" appends zero channels to the subsampled input and "B" projects
            the pre-activated input with a 1x1 convolution (He et al. 2015, Sec. 3.3); elsewhere the identity.
        dropout: dropout after the second ReLU, between the convolutions: Zagoruyko & Komodakis's wide-dropout
            block (their Fig. 1(d)); this paper has none.
        survival_prob: probability of keeping the branch in training (stochastic depth); 1.0 keeps it always.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, preactivate: bool = True,
                 shortcut: Literal["A", "B"] = "B", dropout: float = 0.0, survival_prob: float = 1.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.bn1 = nn.BatchNorm2d(in_channels) if preactivate else None
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self._setup(in_channels, planes, stride, shortcut, survival_prob)

    def residual(self, pre: Tensor) -> Tensor:
        out = self.relu(self.bn2(self.conv1(pre)))
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv2(out)


class PreActBottleneck(_PreActUnit):
    """BN-ReLU-conv1x1 (reduce), BN-ReLU-conv3x3, BN-ReLU-conv1x1 (expand by 4); stride on the first 1x1.

    Args: as PreActBasicBlock's; the bottleneck nets use projection shortcuts (Appendix), so "B" is the default.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, preactivate: bool = True,
                 shortcut: Literal["A", "B"] = "B", survival_prob: float = 1.0):
        super().__init__()
        out_channels = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels) if preactivate else None
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self._setup(in_channels, out_channels, stride, shortcut, survival_prob)

    def residual(self, pre: Tensor) -> Tensor:
        out = self.relu(self.bn2(self.conv1(pre)))
        out = self.relu(self.bn3(self.conv2(out)))
        return self.conv3(out)


class PreActResNet(nn.Module):
    """Stem with the first activation, stages of pre-activation units, the extra BN-ReLU, global average pool, FC.

    Args:
        block: builds a unit as block(in_channels, width, stride, preactivate=..., survival_prob=...); the unit
            exposes `out_channels`. PreActBasicBlock, PreActBottleneck, or a partial of one.
        layers: units per stage; the first unit of every stage after the first halves the side.
        widths: per stage, a basic unit's filters or a bottleneck unit's inner width.
        imagenet_stem: He et al. 2015's 7x7/2 conv (64) and 3x3/2 max-pool instead of the CIFAR 3x3 conv (16).
        survival_prob: p_L of stochastic depth, decaying linearly over all units; 1.0 turns it off.
    """

    def __init__(self, block: Callable[..., nn.Module], layers: list[int] | tuple[int, ...],
                 widths: list[int] | tuple[int, ...], *, imagenet_stem: bool = False, num_classes: int = 10,
                 in_chans: int = 3, survival_prob: float = 1.0):
        super().__init__()
        if len(layers) != len(widths) or any(n < 1 for n in layers):
            raise ValueError(f"layers must give a positive unit count per stage ({len(widths)}), got {layers!r}")
        survival = iter(linear_decay(sum(layers), survival_prob))
        if imagenet_stem:
            channels = 64
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chans, channels, 7, stride=2, padding=3, bias=False),
                bn=nn.BatchNorm2d(channels), relu=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            ))
        else:
            channels = 16
            self.stem = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chans, channels, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(channels), relu=nn.ReLU(inplace=True),
            ))
        stages = []
        for i, (units, width) in enumerate(zip(layers, widths)):
            stage = []
            for j in range(units):
                stride = 2 if i > 0 and j == 0 else 1
                first = i == 0 and j == 0  # takes the stem's activation: no pre-activation of its own
                unit = block(channels, width, stride, preactivate=not first, survival_prob=next(survival))
                stage.append(unit)
                channels = unit.out_channels
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(OrderedDict(
            bn=nn.BatchNorm2d(channels), relu=nn.ReLU(inplace=True),  # the extra activation after the last unit
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1), fc=nn.Linear(channels, num_classes),
        ))
        he_init(self)  # "the weights are initialized as in [23]" (Appendix): N(0, 2/n), n the fan-out
        nn.init.zeros_(self.head.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # CIFAR: (N, 16, 32, 32); ImageNet: (N, 64, 56, 56) at 224x224
        x = self.stages(x)  # CIFAR: (N, 64 or 256, 8, 8); ImageNet: (N, 2048, 7, 7)
        return self.head(x)


_BLOCKS = {"basic": partial(PreActBasicBlock, shortcut="A"), "bottleneck": PreActBottleneck}
_CIFAR_ERR = "Table 3, pre-activation unit, CIFAR-10 test set, flip/translation augmentation, mini-batch 128"
_ERR_SOURCES = {
    "preact_resnet110": _CIFAR_ERR,
    "preact_resnet164": f"{_CIFAR_ERR} (Table 4: median of 5 runs)",
    "preact_resnet1001": f"{_CIFAR_ERR} (Table 4: median of 5 runs; 4.62 with mini-batch 64)",
    "preact_resnet200": "Table 5, pre-act Residual Unit, scale augmentation, 224 training crops, a single 320x320 test "
                        "crop, ILSVRC-2012 val (20.1 / 4.8 with scale and aspect-ratio augmentation)",
}
# Table 4's 10.2M for ResNet-1001 fits only without batch norm's scales and shifts: the authors' network
# (resnet-pre-act.lua: projection shortcuts only where the shape changes, no convolution biases) has 10,327,706
# parameters, of which convolution and fully connected weights are 10,178,490 and batch norm 149,216. ResNet-164's
# 1.7M fits either way; both cards compare the count without normalisation layers.

for name, (kind, layers, dataset, err) in VARIANTS.items():
    imagenet = dataset == "imagenet"
    top1, top5 = err if imagenet else (err, None)
    params = REPORTED_PARAMS.get(name)
    card = ModelCard(
        family="preact_resnet", paper=HE_2016, dataset=dataset, input_size=(3, 224, 224) if imagenet else (3, 32, 32),
        params=params, params_source="Table 4" if params else "", params_rounding=0.1e6 if params else 1.0,
        params_exclude_norm=params is not None, top1_err=top1, top5_err=top5, err_source=_ERR_SOURCES[name],
    )
    widths = IMAGENET_WIDTHS if imagenet else CIFAR_WIDTHS
    register_model(name, card)(partial(PreActResNet, _BLOCKS[kind], layers, widths, imagenet_stem=imagenet))
