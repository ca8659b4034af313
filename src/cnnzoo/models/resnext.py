"""ResNeXt: Xie, Girshick, Dollár, Tu & He, "Aggregated Residual Transformations for Deep Neural Networks",
CVPR 2017, arXiv:1611.05431.

A ResNeXt block sums C transformations of the same bottleneck shape (Eqn. 3; C is the cardinality, d the width
of each path's bottleneck). Fig. 3 draws it three ways, built here as three block classes that compute the same
function with the same weights and convert into one another: separate paths summed (a), early concatenation (b)
and a grouped convolution (c). The registered networks use (c), as the paper's do (Sec. 4).

ImageNet: ResNeXt-50 (32x4d) of Table 1 and ResNeXt-101 (64x4d) of Table 4, plus torchvision's ResNeXt-101
(32x8d), which the paper does not report. They are resnet.py's ResNet with a grouped 3x3 that carries the stage's
stride, as Sec. 4 puts it ("stride-2 convolutions in the 3x3 layer of the first block in each stage"), so they
load torchvision's state_dicts. CIFAR: ResNeXt-29 8x64d and 16x64d of Table 7 (Sec. 5.3 and Appendix A).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
from torch import Tensor, nn

from cnnzoo.layers import linear_decay
from cnnzoo.models.papers import XIE_2016
from cnnzoo.models.resnet import Bottleneck, ResNet, ResidualBlock
from cnnzoo.registry import ModelCard, register_model

__all__ = ["AggregatedBlock", "SeparatePathsBlock", "EarlyConcatBlock", "GroupedConvBlock", "CifarResNeXt",
           "convert_blocks"]

# ImageNet (224x224). Reported figures: Table 1 (params, multiply-adds), Table 3 (top-1), Table 4 (top-1, top-5),
# all single 224x224 center crop on ILSVRC-2012 val. None: the paper gives no such figure for that network.
IMAGENET_RESNEXTS = {  # name: (blocks per stage, cardinality C, width d, params, macs, top-1 %, top-5 %, err source)
    "resnext50_32x4d": ((3, 4, 6, 3), 32, 4, 25.0e6, 4.2e9, 22.2, None, "Table 3"),
    "resnext101_32x8d": ((3, 4, 23, 3), 32, 8, None, None, None, None, ""),
    "resnext101_64x4d": ((3, 4, 23, 3), 64, 4, None, None, 20.4, 5.3, "Table 4"),
}

# CIFAR (32x32), Sec. 5.3 and Appendix A: a 3x3 conv with 64 filters, three stages of three bottleneck blocks whose
# outputs are 256, 512 and 1024 wide at 32, 16 and 8 pixels (29 layers), global average pool, FC. The width of
# every layer doubles with each stage (Sec. 3.1), so d doubles too: 64, 128, 256 for the "x64d" template.
CIFAR_STEM = 64
CIFAR_STAGE_WIDTHS = (256, 512, 1024)
CIFAR_BLOCKS_PER_STAGE = 3
CIFAR_RESNEXTS = {  # Table 7: name: (C, d of the first stage, params, CIFAR-10 test error %, CIFAR-100 test error %)
    "resnext29_8x64d": (8, 64, 34.4e6, 3.65, 17.77),
    "resnext29_16x64d": (16, 64, 68.1e6, 3.58, 17.31),
}


def _he_normal_(weight: Tensor, fan_out: int) -> None:
    # He et al. 2015's N(0, 2/n) with n counted on the output side (k * k * output channels), as fb.resnet.torch.
    nn.init.normal_(weight, 0.0, math.sqrt(2.0 / fan_out))


class AggregatedBlock(ResidualBlock):
    """What the three forms of Fig. 3 share: the configuration, the BN after aggregation, the shortcut.

    The aggregated transformation ends in one batch normalisation over the summed output (`bn3`), after the
    aggregation and before the addition to the shortcut, in every form. That placement is what makes the forms
    one function: the sum of C 1x1 convolutions, each over one path's d channels (a), equals a single 1x1
    convolution over the C*d concatenated channels (b); C parallel 1x1 convolutions to d channels, and the 3x3
    convolutions on d channels after them, concatenated (b), are one 1x1 convolution to C*d channels and one 3x3
    convolution with C groups (c); and BN normalises each channel on its own, so C BNs of d channels equal one BN
    of C*d channels, with batch statistics as well as running ones. A BN on each
    path's output before the sum would break (a) <-> (b): normalising C terms apart is not normalising their sum.
    So the forms agree in training and evaluation alike, up to floating-point summation order.

    Subclasses build the transformation and give `to_grouped`/`from_grouped`: its weights and buffers in the
    grouped form's names, the form every conversion goes through.

    Args:
        cardinality: C, the number of aggregated transformations (paths).
        bottleneck_width: d, the width of each path's bottleneck; the grouped layers are C * d wide.
        stride: on the 3x3 convolutions (Sec. 4), 2 where a stage downsamples.
        survival_prob: stochastic depth (Huang et al. 2016): the block is kept with this probability in training.
    """

    _shortcut_module = "shortcut"

    def __init__(self, in_channels: int, out_channels: int, *, cardinality: int, bottleneck_width: int,
                 stride: int = 1, survival_prob: float = 1.0):
        super().__init__()
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("cardinality", cardinality), ("bottleneck_width", bottleneck_width)):
            if value < 1:
                raise ValueError(f"{arg} must be at least 1, got {value}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cardinality, self.bottleneck_width, self.stride = cardinality, bottleneck_width, stride
        self.width = cardinality * bottleneck_width
        self._build_transform()
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None  # identity
        if stride != 1 or in_channels != out_channels:  # projection where dimensions change (type B, Sec. 4)
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
            _he_normal_(self.shortcut[0].weight, out_channels)
        self._setup(True, survival_prob)

    def _build_transform(self) -> None:
        raise NotImplementedError

    def aggregate(self, x: Tensor) -> Tensor:
        """The summed transformations of Eqn. 2, before `bn3`."""
        raise NotImplementedError

    def branch(self, x: Tensor) -> Tensor:
        return self.bn3(self.aggregate(x))

    def to_grouped(self) -> dict[str, Tensor]:
        """The transformation's tensors under the grouped form's names (conv1, bn1, conv2, bn2, conv3)."""
        raise NotImplementedError

    def from_grouped(self, state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    def config(self) -> dict:
        p = self.stochastic_depth.survival_prob if self.stochastic_depth is not None else 1.0
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, cardinality=self.cardinality,
                    bottleneck_width=self.bottleneck_width, stride=self.stride, survival_prob=p)

    def as_form(self, form: type[AggregatedBlock]) -> AggregatedBlock:
        """A block of another form (a class below) with this one's configuration, weights and buffers."""
        if not (isinstance(form, type) and issubclass(form, AggregatedBlock)):
            raise TypeError(f"form must be a subclass of AggregatedBlock, got {form!r}")
        ref = next(self.parameters())
        other = form(**self.config()).to(device=ref.device, dtype=ref.dtype).train(self.training)
        shared = {k: v for k, v in self.state_dict().items() if k.startswith(("bn3.", "shortcut."))}
        with torch.no_grad():
            other.from_grouped({k: v.detach().clone() for k, v in self.to_grouped().items()})
            other.load_state_dict(shared, strict=False)
        return other


def _path(in_channels: int, width: int, stride: int, fan_width: int, out_channels: int | None = None) -> nn.Sequential:
    """One path of forms (a) and (b): 1x1 to d, 3x3 on d (strided), and in form (a) a 1x1 back to the output width.

    Initialised with the fan-out of the aggregated layer it is a slice of (fan_width = C * d), so that every form
    starts from the same distribution as the grouped one.
    """
    layers = OrderedDict(
        conv1=nn.Conv2d(in_channels, width, 1, bias=False), bn1=nn.BatchNorm2d(width), relu1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), bn2=nn.BatchNorm2d(width),
        relu2=nn.ReLU(inplace=True),
    )
    _he_normal_(layers["conv1"].weight, fan_width)
    _he_normal_(layers["conv2"].weight, 9 * fan_width)
    if out_channels is not None:
        layers["conv3"] = nn.Conv2d(width, out_channels, 1, bias=False)
        _he_normal_(layers["conv3"].weight, out_channels)
    return nn.Sequential(layers)


def _paths_to_grouped(paths: nn.ModuleList) -> dict[str, Tensor]:
    # Path i owns output channels i*d .. (i+1)*d - 1 of the grouped conv1, bn1, conv2 (group i) and bn2.
    state = {}
    for layer in ("conv1", "bn1", "conv2", "bn2"):
        per_path = [getattr(p, layer).state_dict() for p in paths]
        for key in per_path[0]:
            if key == "num_batches_tracked":  # one counter per BN; the paths' counters advance together
                state[f"{layer}.{key}"] = per_path[0][key]
            else:
                state[f"{layer}.{key}"] = torch.cat([s[key] for s in per_path])
    return state


def _grouped_to_paths(paths: nn.ModuleList, state: dict[str, Tensor]) -> None:
    c = len(paths)
    for layer in ("conv1", "bn1", "conv2", "bn2"):
        for key, _ in getattr(paths[0], layer).state_dict().items():
            value = state[f"{layer}.{key}"]
            parts = [value] * c if key == "num_batches_tracked" else value.chunk(c)
            for path, part in zip(paths, parts):
                getattr(path, layer).state_dict()[key].copy_(part)


class SeparatePathsBlock(AggregatedBlock):
    """Fig. 3(a): C paths of 1x1 (d), 3x3 (d), 1x1 (output width), summed; then BN, shortcut, ReLU."""

    def _build_transform(self) -> None:
        self.paths = nn.ModuleList(
            _path(self.in_channels, self.bottleneck_width, self.stride, self.width, self.out_channels)
            for _ in range(self.cardinality))

    def aggregate(self, x: Tensor) -> Tensor:
        out = self.paths[0](x)
        for path in self.paths[1:]:
            out = out + path(x)
        return out

    def to_grouped(self) -> dict[str, Tensor]:
        state = _paths_to_grouped(self.paths)
        state["conv3.weight"] = torch.cat([p.conv3.weight for p in self.paths], dim=1)  # input channels, per path
        return state

    def from_grouped(self, state: dict[str, Tensor]) -> None:
        _grouped_to_paths(self.paths, state)
        for path, part in zip(self.paths, state["conv3.weight"].chunk(self.cardinality, dim=1)):
            path.conv3.weight.copy_(part)


class EarlyConcatBlock(AggregatedBlock):
    """Fig. 3(b): C paths of 1x1 (d) and 3x3 (d), concatenated, one 1x1 to the output width; BN, shortcut, ReLU."""

    def _build_transform(self) -> None:
        self.paths = nn.ModuleList(
            _path(self.in_channels, self.bottleneck_width, self.stride, self.width) for _ in range(self.cardinality))
        self.conv3 = nn.Conv2d(self.width, self.out_channels, 1, bias=False)
        _he_normal_(self.conv3.weight, self.out_channels)

    def aggregate(self, x: Tensor) -> Tensor:
        return self.conv3(torch.cat([path(x) for path in self.paths], dim=1))

    def to_grouped(self) -> dict[str, Tensor]:
        return {**_paths_to_grouped(self.paths), "conv3.weight": self.conv3.weight}

    def from_grouped(self, state: dict[str, Tensor]) -> None:
        _grouped_to_paths(self.paths, state)
        self.conv3.weight.copy_(state["conv3.weight"])


class GroupedConvBlock(AggregatedBlock):
    """Fig. 3(c): 1x1 (C*d), 3x3 with C groups (C*d), 1x1 to the output width; BN after each, shortcut, ReLU."""

    def _build_transform(self) -> None:
        width = self.width
        self.conv1 = nn.Conv2d(self.in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=self.stride, padding=1, groups=self.cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, self.out_channels, 1, bias=False)
        _he_normal_(self.conv1.weight, width)
        _he_normal_(self.conv2.weight, 9 * width)
        _he_normal_(self.conv3.weight, self.out_channels)

    def aggregate(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.conv3(out)

    def to_grouped(self) -> dict[str, Tensor]:
        layers = ("conv1", "bn1", "conv2", "bn2", "conv3")
        return {k: v for k, v in self.state_dict().items() if k.split(".")[0] in layers}

    def from_grouped(self, state: dict[str, Tensor]) -> None:
        self.load_state_dict(state, strict=False)


def convert_blocks(model: nn.Module, form: type[AggregatedBlock]) -> nn.Module:
    """Replace every ResNeXt block of `model`, in place, by its equivalent in `form`; returns `model`."""
    for name, child in model.named_children():
        if isinstance(child, AggregatedBlock):
            setattr(model, name, child.as_form(form))
        else:
            convert_blocks(child, form)
    return model


class CifarResNeXt(nn.Module):
    """ResNeXt-29 of Sec. 5.3: 3x3 conv (64), three stages of three blocks (256, 512, 1024 wide), average pool, FC.

    Args:
        cardinality: C.
        bottleneck_width: d in the first stage; it doubles with each stage, as every width does (Sec. 3.1).
        block: the form of Fig. 3 the blocks are built in (GroupedConvBlock, as the paper's).
        survival_prob: p_L of stochastic depth, decaying linearly over the nine blocks; 1.0 turns it off.
    """

    def __init__(self, cardinality: int, bottleneck_width: int, *, block: type[AggregatedBlock] = GroupedConvBlock,
                 num_classes: int = 10, in_chans: int = 3, survival_prob: float = 1.0):
        super().__init__()
        survival = iter(linear_decay(len(CIFAR_STAGE_WIDTHS) * CIFAR_BLOCKS_PER_STAGE, survival_prob))
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, CIFAR_STEM, 3, padding=1, bias=False),
            nn.BatchNorm2d(CIFAR_STEM),
            nn.ReLU(inplace=True),
        )
        _he_normal_(self.stem[0].weight, 9 * CIFAR_STEM)
        stages, channels = [], CIFAR_STEM
        for i, width in enumerate(CIFAR_STAGE_WIDTHS):
            blocks = []
            for j in range(CIFAR_BLOCKS_PER_STAGE):
                blocks.append(block(channels, width, cardinality=cardinality, bottleneck_width=bottleneck_width * 2**i,
                                    stride=2 if i > 0 and j == 0 else 1, survival_prob=next(survival)))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        nn.init.zeros_(self.head.bias)  # fb.resnet.torch zeroes the classifier's bias and keeps its default weights

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (N, 64, 32, 32)
        x = self.stages(x)  # (N, 256, 32, 32) -> (N, 512, 16, 16) -> (N, 1024, 8, 8)
        return self.head(self.pool(x).flatten(1))


_NOT_IN_PAPER = ("ResNeXt-101 (32x8d) is torchvision's configuration; the paper reports no 32x8d network "
                 "(its ResNeXt-101 rows are 32x4d, 2x64d and 64x4d, Tables 3-5)")
_ORIGINAL_BLOCKS = ("bottleneck blocks as in Sec. 4 and the authors' released code (BN and ReLU after each convolution, "
                    "ReLU after the addition); the authors' README says the paper's CIFAR results came from "
                    "pre-activated bottleneck blocks and a batch of 256, and that these original blocks with a batch "
                    "of 128 do better")

_FC_INIT = ("initialisation: He et al.'s N(0, 2/n) for the convolutions (Sec. 4); the final fully connected layer "
            "keeps PyTorch's default initialisation, where fb.resnet.torch, which Sec. 4 follows, zeroes its bias")

for name, (layers, c, d, params, macs, top1, top5, where) in IMAGENET_RESNEXTS.items():
    card = ModelCard(
        family="resnext", paper=XIE_2016, dataset="imagenet", input_size=(3, 224, 224),
        params=params, params_source="Table 1" if params else "", params_rounding=0.1e6 if params else 1.0,
        params_exclude_norm=params is not None,
        macs=macs, macs_source="Table 1 (FLOPs, counted as multiply-adds, Sec. 3.1)" if macs else "",
        top1_err=top1, top5_err=top5,
        err_source=f"{where}, single 224x224 center crop, ILSVRC-2012 val" if where else "",
        torchvision=name, deviations=(_FC_INIT,) if top1 else (_NOT_IN_PAPER, _FC_INIT),
    )
    # Sec. 4: the stride on the 3x3, as torchvision's bottleneck has it; C groups of d channels each.
    register_model(name, card)(
        partial(ResNet, Bottleneck, layers, stride_on_3x3=True, groups=c, width_per_group=d))

for name, (c, d, params, err10, err100) in CIFAR_RESNEXTS.items():
    # Table 7's counts match ours rounded to 0.1M once BN's scales and shifts are left out (16x64d: 68,155,210 in
    # all would round to 68.2M; 68,054,730 without BN gives the printed 68.1M), as do Table 1's (ResNet-50's
    # 25,557,032 would be 25.6M, not 25.5M). tests/test_resnext.py also checks the other fitting reading: the full
    # count truncated to 0.1M.
    card = ModelCard(
        family="resnext", paper=XIE_2016, dataset="cifar10", input_size=(3, 32, 32),
        params=params, params_source="Table 7", params_rounding=0.1e6, params_exclude_norm=True, top1_err=err10,
        err_source=f"Table 7, CIFAR-10 test error, mean of 10 runs (CIFAR-100: {err100})",
        deviations=(_ORIGINAL_BLOCKS,),
    )
    register_model(name, card)(partial(CifarResNeXt, cardinality=c, bottleneck_width=d, block=GroupedConvBlock))
