"""ResNet: He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385.

ImageNet networks of Table 1 (18 to 152 layers) with projection shortcuts where dimensions grow (option B,
Sec. 3.3), the bottleneck's stride on its first 1x1 convolution as the paper has it, and the `_v1_5` twins with
the stride on the 3x3 as torchvision builds them. The CIFAR-10 networks of Sec. 4.2 (depth 6n+2, Table 6) use
parameter-free zero-padding shortcuts (option A). The `plain` twins are the same stacks without shortcuts
(Table 2, Fig. 6). Every residual network takes `survival_prob`, the last block's survival probability p_L of
stochastic depth (Huang et al. 2016, see stochastic_depth.py); 1.0, the default, is the paper's net.

ImageNet submodule names are torchvision's (`conv1` ... `layer4`, `fc`; `downsample` for projections), so
`resnet18`, `resnet34` and `resnet50_v1_5` ... load its state_dicts. The CIFAR nets name theirs once:
`stem`, `stages.{i}.{j}`, `pool`, `head`.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.layers import StochasticDepth, linear_decay, skip_branch, symbolic_tracing
from cnnzoo.models.papers import HE_2015
from cnnzoo.registry import ModelCard, register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "CifarResNet", "CifarBasicBlock", "ZeroPadShortcut", "he_init"]

# Table 1: blocks per stage (conv2_x .. conv5_x) and the "FLOPs" (multiply-adds) it states for 224x224.
IMAGENET_RESNETS = {  # name: (block, layers, multiply-adds)
    "resnet18": ("basic", (2, 2, 2, 2), 1.8e9),
    "resnet34": ("basic", (3, 4, 6, 3), 3.6e9),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 3.8e9),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 7.6e9),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 11.3e9),
}
# ILSVRC-2012 val error, 10-crop testing: Table 3 (top-1, top-5) where the net is listed there, else Table 2
# (top-1 only). Table 2's ResNet-18 used zero-padding shortcuts (option A); Table 3's ResNet-34 row is option B.
IMAGENET_ERRORS = {  # name: (top-1 %, top-5 %, where)
    "resnet18": (27.88, None, "Table 2, ResNet-18 with option A (zero-padding) shortcuts"),
    "resnet34": (24.52, 7.46, "Table 3, ResNet-34 B (projection shortcuts where dimensions grow)"),
    "resnet50": (22.85, 6.71, "Table 3, ResNet-50"),
    "resnet101": (21.75, 6.05, "Table 3, ResNet-101"),
    "resnet152": (21.43, 5.71, "Table 3, ResNet-152"),
    "plain18": (27.94, None, "Table 2, plain-18"),
    "plain34": (28.54, 10.02, "Table 3, plain-34"),
}

# Sec. 4.2 and Table 6: depth 6n+2, three stages of n blocks with 16, 32, 64 filters at 32, 16, 8 pixels.
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_RESNETS = {  # name: (n, params as reported, the unit it is rounded to, CIFAR-10 test error %)
    "resnet20": (3, 0.27e6, 0.01e6, 8.75),
    "resnet32": (5, 0.46e6, 0.01e6, 7.51),
    "resnet44": (7, 0.66e6, 0.01e6, 7.17),
    "resnet56": (9, 0.85e6, 0.01e6, 6.97),
    "resnet110": (18, 1.7e6, 0.1e6, 6.43),
    "resnet1202": (200, 19.4e6, 0.1e6, 7.93),
}
_CIFAR_ERR_NOTES = {"resnet110": ", best of 5 runs (mean 6.61 +- 0.16)"}
CIFAR_PLAIN = {"plain20": 3, "plain32": 5, "plain44": 7, "plain56": 9, "plain110": 18}  # name: n (Fig. 6)


class ResidualBlock(nn.Module):
    """relu(branch(x) + shortcut(x)), the branch kept with probability p in training (stochastic depth).

    Subclasses build the branch and the shortcut and set `_shortcut_module` (the shortcut's submodule name).
    """

    _shortcut_module = ""

    def _setup(self, residual: bool, survival_prob: float) -> None:
        if not residual and survival_prob < 1.0:
            raise ValueError("stochastic depth needs shortcuts: a plain block cannot be dropped")
        self.residual = residual
        self.stochastic_depth = StochasticDepth(survival_prob) if survival_prob < 1.0 else None

    def branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def skip(self, x: Tensor) -> Tensor:
        """The shortcut path: identity, or the shortcut module where there is one."""
        module = getattr(self, self._shortcut_module)
        return x if module is None else module(x)

    def forward(self, x: Tensor) -> Tensor:
        drop = self.stochastic_depth
        if drop is not None and symbolic_tracing():  # the decision a graph node, drawn where keep() draws
            factor = drop.factor(x)
            out = self.branch(x) * factor  # computed even when dropped: a traced graph has no `if`
        elif drop is not None and not drop.keep():  # dropped for this mini-batch: the branch is not computed
            params = [p for n, p in self.named_parameters()
                      if p.requires_grad and not n.startswith(self._shortcut_module + ".")]
            return torch.relu(skip_branch(self.skip(x), params))
        else:
            out = self.branch(x)
            if drop is not None:
                out = drop(out)  # scaled by p in eval mode
        if self.residual:
            out += self.skip(x)  # in place, as torchvision: the branch ends in a normalisation, which keeps its
            # input, not its output, for backward (autograd's version check would catch a branch that did not)
        return self.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (Fig. 5 left), the first strided where the stage downsamples.

    `stride_on_3x3` is accepted so both blocks share a signature; here the stride is always on a 3x3.
    """

    expansion = 1
    _shortcut_module = "downsample"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, *, stride_on_3x3: bool = False, residual: bool = True,
                 survival_prob: float = 1.0):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("the basic block has no groups or width factor; use Bottleneck for those")
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.out_channels = planes
        self._setup(residual, survival_prob)

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand by 4 (Fig. 5 right).

    Args:
        stride_on_3x3: put the stage's stride on the 3x3 (torchvision's "v1.5") instead of the first 1x1 (the paper).
        groups, base_width: the 3x3 is grouped and the inner width is int(planes * base_width / 64) * groups, as in
            torchvision (ResNeXt, Wide ResNet); 1 and 64 give the paper's block.
    """

    expansion = 4
    _shortcut_module = "downsample"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, *, stride_on_3x3: bool = False, residual: bool = True,
                 survival_prob: float = 1.0):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (1, stride) if stride_on_3x3 else (stride, 1)
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.out_channels = planes * self.expansion
        self._setup(residual, survival_prob)

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def he_init(model: nn.Module, mode: str = "fan_out") -> None:
    """Sec. 3.4: "We initialize the weights as in [13]": He et al. 2015's N(0, 2/n) for every convolution.

    n counts the fan-out by default (that paper's backward-pass form, as fb.resnet.torch and torchvision use);
    "fan_in" is its forward form. BN starts at gamma 1, beta 0 (no zero-init of a block's last gamma).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    """ImageNet ResNet of Table 1: 7x7/2 conv, 3x3/2 max-pool, four stages, global average pool, FC.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage (conv2_x .. conv5_x).
        stride_on_3x3: bottleneck stride on the 3x3 (torchvision "v1.5") rather than the first 1x1 (the paper).
        groups, width_per_group: grouped 3x3 and its width per group, as torchvision (ResNeXt, Wide ResNet).
        shortcuts: False builds the plain network (no identity or projection shortcuts, Table 2).
        survival_prob: p_L of stochastic depth, decaying linearly over all blocks; 1.0 turns it off.
    """

    def __init__(self, block: type[nn.Module], layers: list[int] | tuple[int, ...], *, stride_on_3x3: bool = False,
                 groups: int = 1, width_per_group: int = 64, shortcuts: bool = True, num_classes: int = 1000,
                 in_chans: int = 3, survival_prob: float = 1.0):
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must give 4 positive block counts (conv2_x .. conv5_x), got {layers!r}")
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        survival = iter(linear_decay(sum(layers), survival_prob))
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                downsample = None
                if shortcuts and (stride != 1 or self.inplanes != planes * block.expansion):
                    downsample = nn.Sequential(  # option B: projection where dimensions change
                        nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                        nn.BatchNorm2d(planes * block.expansion),
                    )
                stage.append(block(self.inplanes, planes, stride, downsample, groups, width_per_group,
                                   stride_on_3x3=stride_on_3x3, residual=shortcuts, survival_prob=next(survival)))
                self.inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, 56, 56) at 224x224
        x = self.layer1(x)  # (N, 64 or 256, 56, 56)
        x = self.layer2(x)  # (N, 128 or 512, 28, 28)
        x = self.layer3(x)  # (N, 256 or 1024, 14, 14)
        x = self.layer4(x)  # (N, 512 or 2048, 7, 7)
        return self.fc(self.avgpool(x).flatten(1))


class ZeroPadShortcut(nn.Module):
    """Option A (Sec. 3.3): identity subsampled by the stride, extra channels filled with zeros; no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"zero padding cannot reduce channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zeros after the existing channels

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


class CifarBasicBlock(ResidualBlock):
    """Two 3x3 convolutions; `shortcut` (a class) is built where the dimensions change, identity elsewhere."""

    _shortcut_module = "shortcut"

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, shortcut: type[nn.Module] | None,
                 survival_prob: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = shortcut(in_channels, out_channels, stride) if shortcut is not None and changes else None
        self.out_channels = out_channels
        self._setup(shortcut is not None, survival_prob)

    def branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class CifarResNet(nn.Module):
    """CIFAR ResNet of Sec. 4.2: 3x3 conv (16), three stages of n blocks (16, 32, 64 filters), average pool, FC.

    Args:
        blocks_per_stage: n; the depth is 6n + 2.
        shortcut: the shortcut class used where dimensions change (ZeroPadShortcut: option A); None builds the
            plain network, whose blocks have no shortcut at all.
        survival_prob: p_L of stochastic depth, decaying linearly over all 3n blocks; 1.0 turns it off.
    """

    def __init__(self, blocks_per_stage: int, *, shortcut: type[nn.Module] | None, num_classes: int = 10,
                 in_chans: int = 3, survival_prob: float = 1.0):
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")
        survival = iter(linear_decay(3 * blocks_per_stage, survival_prob))
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, CIFAR_WIDTHS[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(CIFAR_WIDTHS[0]),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], CIFAR_WIDTHS[0]
        for i, width in enumerate(CIFAR_WIDTHS):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1  # "subsampling is performed by convolutions with a stride of 2"
                blocks.append(CifarBasicBlock(channels, width, stride, shortcut=shortcut,
                                              survival_prob=next(survival)))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (N, 16, 32, 32)
        x = self.stages(x)  # (N, 16, 32, 32) -> (N, 32, 16, 16) -> (N, 64, 8, 8)
        return self.head(self.pool(x).flatten(1))


_FC_INIT = ("initialisation: He et al.'s N(0, 2/n) for the convolutions (Sec. 3.4); the final fully connected layer "
            "keeps PyTorch's default initialisation")
_V1_5 = ("stride 2 of each downsampling bottleneck on its 3x3 convolution (torchvision's ResNet v1.5); the paper puts "
         "it on the first 1x1 (Table 1), which needs fewer multiply-adds")
_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
_IMAGENET = dict(family="resnet", paper=HE_2015, dataset="imagenet", input_size=(3, 224, 224))
_CIFAR = dict(family="resnet", paper=HE_2015, dataset="cifar10", input_size=(3, 32, 32))


def _errors(name: str) -> dict:
    top1, top5, where = IMAGENET_ERRORS[name]
    return dict(top1_err=top1, top5_err=top5, err_source=f"{where}, 10-crop testing, ILSVRC-2012 val")


for name, (kind, layers, macs) in IMAGENET_RESNETS.items():
    block = _BLOCKS[kind]
    structure = dict(groups=1, width_per_group=64, shortcuts=True)
    twin = name if kind == "basic" else None  # torchvision's basic-block nets are the paper's
    card = ModelCard(**_IMAGENET, macs=macs, macs_source="Table 1", torchvision=twin, deviations=(_FC_INIT,),
                     **_errors(name))
    register_model(name, card)(partial(ResNet, block, layers, stride_on_3x3=False, **structure))
    if kind == "bottleneck":
        v1_5 = ModelCard(**_IMAGENET, torchvision=name, deviations=(_V1_5, _FC_INIT))
        register_model(f"{name}_v1_5", v1_5)(partial(ResNet, block, layers, stride_on_3x3=True, **structure))
    if kind == "basic":
        plain = name.replace("resnet", "plain")
        plain_card = ModelCard(**_IMAGENET, deviations=(_FC_INIT,), **_errors(plain))
        register_model(plain, plain_card)(partial(ResNet, block, layers, stride_on_3x3=False, groups=1,
                                                  width_per_group=64, shortcuts=False, survival_prob=1.0))

for name, (n, params, rounding, err) in CIFAR_RESNETS.items():
    card = ModelCard(**_CIFAR, params=params, params_source="Table 6", params_rounding=rounding, top1_err=err,
                     err_source="Table 6, CIFAR-10 test set" + _CIFAR_ERR_NOTES.get(name, ""),
                     deviations=(_FC_INIT,))
    register_model(name, card)(partial(CifarResNet, n, shortcut=ZeroPadShortcut))

for name, n in CIFAR_PLAIN.items():
    register_model(name, ModelCard(**_CIFAR, deviations=(_FC_INIT,)))(
        partial(CifarResNet, n, shortcut=None, survival_prob=1.0))
