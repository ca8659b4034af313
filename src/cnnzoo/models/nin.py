"""Network in Network: Lin, Chen & Yan, "Network In Network", ICLR 2014, arXiv:1312.4400.

An mlpconv layer is a k x k convolution followed by 1x1 convolutions: a small multilayer perceptron slid over the
image (the authors' code calls the 1x1 layers "cccp", cascaded cross channel parametric pooling), with ReLU after
every convolution. The last mlpconv layer has one map per class, and global average pooling turns each map into
one logit: the network has no fully connected layer.

The paper gives no layer table, so the networks are taken from the authors' own releases:
- `nin`: the CIFAR-10 network of Sec. 4 (Table 1), layer for layer as the authors' cuda-convnet settings file
  (github.com/mavenlin/cuda-convnet, NIN/cifar-10_def) that produced the paper's results. As Sec. 4.1 says, max
  pooling follows each of the first two mlpconv layers, and dropout follows their outputs.
- `nin_caffe`: the same network as the authors later released it in the Caffe model zoo (gist
  e56253735ef32c3c296d), which averages instead of taking the maximum after the second mlpconv layer.
- `nin_imagenet`: the four-layer ImageNet network of the authors' Caffe model zoo release (gist
  d802a5849de39225bcc6). The paper reports no ImageNet experiment.

As in every release, a ReLU also follows the class-map convolution, so the logits are non-negative; and pooling
windows that run past the border are kept (Caffe's and cuda-convnet's rounding up), which gives the sides
32 -> 16 -> 8 on CIFAR and 54 -> 27 -> 13 -> 6 on ImageNet.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

from torch import nn

from cnnzoo.models.papers import LIN_2013
from cnnzoo.registry import ModelCard, register_model


class Stage(NamedTuple):
    """One mlpconv layer and what follows it."""

    kernel: int  # the first convolution's kernel; the others are 1x1
    stride: int
    padding: int
    widths: tuple[int, ...]  # filters of each convolution; the last stage's last width is the class count
    init_std: tuple[float, ...]  # std of the zero-mean Gaussian each convolution's weights start from
    pool: str  # "max" or "avg" (3x3, stride 2, rounding up), or "global" (average over the whole map: the head)
    dropout: bool  # dropout after the pooling


# The authors' cuda-convnet settings for the paper (NIN/cifar-10_def): every weight from N(0, 0.05^2).
NIN_CIFAR10 = (
    Stage(5, 1, 2, (192, 160, 96), (0.05, 0.05, 0.05), "max", dropout=True),
    Stage(5, 1, 2, (192, 192, 192), (0.05, 0.05, 0.05), "max", dropout=True),
    Stage(3, 1, 1, (192, 192, 10), (0.05, 0.05, 0.05), "global", dropout=False),
)
# The Caffe release changes the second pooling only. Its weight fillers were not checked: the paper's are kept.
NIN_CIFAR10_CAFFE = (NIN_CIFAR10[0], NIN_CIFAR10[1]._replace(pool="avg"), NIN_CIFAR10[2])
# The authors' Caffe model zoo release (train_val.prototxt of gist d802a5849de39225bcc6), 224x224 crops.
NIN_IMAGENET = (
    Stage(11, 4, 0, (96, 96, 96), (0.01, 0.05, 0.05), "max", dropout=False),
    Stage(5, 1, 2, (256, 256, 256), (0.05, 0.05, 0.05), "max", dropout=False),
    Stage(3, 1, 1, (384, 384, 384), (0.01, 0.05, 0.05), "max", dropout=True),
    Stage(3, 1, 1, (1024, 1024, 1000), (0.05, 0.05, 0.01), "global", dropout=False),
)

_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class MLPConv(nn.Sequential):
    """A k x k convolution, then 1x1 convolutions, each followed by ReLU."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernel_size: int, stride: int = 1,
                 padding: int = 0):
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            k, s, p = (kernel_size, stride, padding) if i == 0 else (1, 1, 0)
            layers += [nn.Conv2d(in_channels, width, k, stride=s, padding=p), nn.ReLU(inplace=True)]
            in_channels = width
        super().__init__(*layers)
        self.out_channels = in_channels


class NiN(nn.Module):
    """Stacked mlpconv layers with pooling and dropout between them, then global average pooling.

    Args:
        stages: a table such as NIN_CIFAR10; the last stage's last width is replaced by `num_classes`.
        dropout: dropout ratio wherever the table places dropout (0.5 in every release).
    """

    def __init__(self, stages: tuple[Stage, ...], *, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if [s.pool == "global" for s in stages] != [False] * (len(stages) - 1) + [True]:
            raise ValueError("only the last stage may, and must, end in global average pooling")
        blocks = []
        channels = in_chans
        for i, stage in enumerate(stages):
            widths = stage.widths[:-1] + (num_classes,) if i == len(stages) - 1 else stage.widths
            block = nn.Sequential()
            block.add_module("mlpconv", MLPConv(channels, widths, stage.kernel, stage.stride, stage.padding))
            if stage.pool != "global":
                block.add_module("pool", _POOLS[stage.pool](kernel_size=3, stride=2, ceil_mode=True))
            if stage.dropout:
                block.add_module("dropout", nn.Dropout(dropout))
            blocks.append(block)
            channels = widths[-1]
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))  # global average pooling, no weights
        self._init_weights([std for stage in stages for std in stage.init_std])

    def _init_weights(self, stds: list[float]):
        convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        for conv, std in zip(convs, stds, strict=True):
            nn.init.normal_(conv.weight, 0.0, std)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        # CIFAR 32x32: stages give 16x16, 8x8, then 8x8 class maps. ImageNet 224x224: 27x27, 13x13, 6x6, 6x6 maps.
        x = self.stages(x)
        return self.head(x)  # (N, num_classes): the mean of each class map


_NOT_IN_PAPER = ("the paper reports no ImageNet network; this is the authors' Caffe model zoo release "
                 "(gist d802a5849de39225bcc6)")
_CAFFE_AVG = ("average instead of max pooling after the second mlpconv layer, as in the authors' Caffe model zoo "
              "release (gist e56253735ef32c3c296d); the paper (Sec. 4.1) and its cuda-convnet settings use max pooling")

register_model("nin", ModelCard(
    family="nin", paper=LIN_2013, dataset="cifar10", input_size=(3, 32, 32),
    top1_err=10.41, err_source="Table 1, NIN + Dropout, CIFAR-10 test set without data augmentation",
))(partial(NiN, stages=NIN_CIFAR10))
register_model("nin_caffe", ModelCard(
    family="nin", paper=LIN_2013, dataset="cifar10", input_size=(3, 32, 32),
    top1_err=10.4, err_source="authors' Caffe model zoo release (gist e56253735ef32c3c296d): 89.6% accuracy, "
                              "CIFAR-10 test set",
    deviations=(_CAFFE_AVG,),
))(partial(NiN, stages=NIN_CIFAR10_CAFFE))
register_model("nin_imagenet", ModelCard(
    family="nin", paper=LIN_2013, dataset="imagenet", input_size=(3, 224, 224),
    top1_err=40.64, err_source="authors' Caffe model zoo release (gist d802a5849de39225bcc6): 59.36% top-1, "
                               "ILSVRC-2012 val, center crop",
    deviations=(_NOT_IN_PAPER,),
))(partial(NiN, stages=NIN_IMAGENET))
