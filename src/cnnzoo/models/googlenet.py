"""GoogLeNet (Inception v1), twice: the network of the paper and torchvision's batch-normalised one.

`googlenet`: Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke & Rabinovich, "Going Deeper with
Convolutions", CVPR 2015, arXiv:1409.4842. The network of Table 1 and Fig. 3: a convolutional stem with local
response normalisation, nine inception modules with dimension reductions (Fig. 2b), 7x7 average pooling, 40%
dropout and one linear layer; ReLU after every convolution. The two auxiliary classifiers of Sec. 5 sit on
inception (4a) and (4d); in training mode the forward pass returns their logits next to the main ones and
`googlenet_loss` adds them with the paper's weight of 0.3; in evaluation mode they are skipped. Pooling rounds
up, as in Caffe, which is what gives Table 1's map sizes. The error on the card is Table 3's single model,
single crop row; the paper reports no top-1 error, so the card's `other_top1_err` is the one BVLC's Caffe
replication of this network states (its readme), kept apart from the paper's figures.

`googlenet_bn`: torchvision's `googlenet`, which adds batch normalisation and differs from the paper in the
ways its card lists. It has torchvision's module names, so torchvision's state_dicts load into it (with or
without the auxiliary heads). In training mode it returns (logits, aux1, aux2), main first and the heads in
network order; torchvision's own tuple is (logits, aux_logits2, aux_logits1).

The building blocks are public: `Inception` (Fig. 2b), `NaiveInception` (Fig. 2a) and `InceptionAux`, each
with its branch widths as arguments and an `out_channels` attribute.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.models.papers import SZEGEDY_2014
from cnnzoo.registry import ModelCard, register_model

__all__ = [
    "TABLE_1", "AUX_LOSS_WEIGHT", "Widths", "GoogLeNetOutput", "ConvReLU", "ConvBNReLU", "Inception",
    "NaiveInception", "InceptionAux", "GoogLeNet", "GoogLeNetBN", "googlenet_loss",
]


class Widths(NamedTuple):
    """One row of Table 1: filters per branch of an inception module."""

    ch1x1: int  # "#1x1"
    ch3x3_reduce: int  # "#3x3 reduce": 1x1 filters before the 3x3 convolution
    ch3x3: int  # "#3x3"
    ch5x5_reduce: int  # "#5x5 reduce"
    ch5x5: int  # "#5x5"
    pool_proj: int  # "pool proj": 1x1 filters after the 3x3 max-pool

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


# Table 1, the inception rows. A module's input is the previous module's output (192 maps from the stem for 3a);
# a 3x3 stride-2 max-pool follows 3b and 4e.
TABLE_1 = {          # #1x1 #3x3red #3x3 #5x5red #5x5 pool proj     output size
    "3a": Widths(64,  96,  128, 16, 32,  32),   # 28x28x256
    "3b": Widths(128, 128, 192, 32, 96,  64),   # 28x28x480
    "4a": Widths(192, 96,  208, 16, 48,  64),   # 14x14x512
    "4b": Widths(160, 112, 224, 24, 64,  64),   # 14x14x512
    "4c": Widths(128, 128, 256, 24, 64,  64),   # 14x14x512
    "4d": Widths(112, 144, 288, 32, 64,  64),   # 14x14x528
    "4e": Widths(256, 160, 320, 32, 128, 128),  # 14x14x832
    "5a": Widths(256, 160, 320, 32, 128, 128),  # 7x7x832
    "5b": Widths(384, 192, 384, 48, 128, 128),  # 7x7x1024
}
STEM_CHANNELS = 192  # Table 1: the stem ends with 192 maps of 28x28
AUX_LOSS_WEIGHT = 0.3  # Sec. 5: "the losses of the auxiliary classifiers were weighted by 0.3"


class GoogLeNetOutput(NamedTuple):
    """What a GoogLeNet returns in training mode with its auxiliary classifiers on."""

    logits: Tensor
    aux1: Tensor  # the head on inception (4a)
    aux2: Tensor  # the head on inception (4d)


def googlenet_loss(output: Tensor | tuple[Tensor, ...], target: Tensor, *, aux_weight: float = AUX_LOSS_WEIGHT,
                   **cross_entropy_kwargs) -> Tensor:
    """Softmax cross-entropy of the main logits plus `aux_weight` times that of each auxiliary head (Sec. 5).

    `output` is what the model returned: a tensor (evaluation mode, or heads off) or a tuple whose first
    element is the main logits. Extra keyword arguments go to `F.cross_entropy` (e.g. label_smoothing).
    """
    if isinstance(output, Tensor):
        return F.cross_entropy(output, target, **cross_entropy_kwargs)
    if not isinstance(output, tuple) or not output or not all(isinstance(o, Tensor) for o in output):
        raise TypeError(f"googlenet_loss expects logits or a tuple of logits, got {type(output).__name__}")
    main, *aux = output
    loss = F.cross_entropy(main, target, **cross_entropy_kwargs)
    for logits in aux:
        loss = loss + aux_weight * F.cross_entropy(logits, target, **cross_entropy_kwargs)
    return loss


class ConvReLU(nn.Module):
    """A convolution with bias followed by a ReLU: the paper's unit ("all the convolutions ... use rectified
    linear activation", Table 1 notes)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch normalisation (eps 1e-3) and ReLU: torchvision's GoogLeNet unit."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """The inception module with dimension reductions (Fig. 2b): four branches concatenated along channels.

    Args:
        conv_block: the convolution unit (ConvReLU in the paper, ConvBNReLU in torchvision's net).
        large_kernel: kernel of the "5x5" branch; torchvision's net has 3 there.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int, ch5x5_reduce: int, ch5x5: int,
                 pool_proj: int, *, conv_block: type[nn.Module] = ConvReLU, large_kernel: int = 5):
        super().__init__()
        self.branch1 = conv_block(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            conv_block(in_channels, ch3x3_reduce, 1),
            conv_block(ch3x3_reduce, ch3x3, 3, padding=1),
        )
        self.branch3 = nn.Sequential(
            conv_block(in_channels, ch5x5_reduce, 1),
            conv_block(ch5x5_reduce, ch5x5, large_kernel, padding=large_kernel // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, 1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class NaiveInception(nn.Module):
    """The naive inception module (Fig. 2a): 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool side by side.

    The pool branch passes all `in_channels` maps through, so the output is always deeper than the input,
    which is why Sec. 4 adds the 1x1 reductions of `Inception`.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, ch5x5: int, *,
                 conv_block: type[nn.Module] = ConvReLU):
        super().__init__()
        self.branch1 = conv_block(in_channels, ch1x1, 1)
        self.branch2 = conv_block(in_channels, ch3x3, 3, padding=1)
        self.branch3 = conv_block(in_channels, ch5x5, 5, padding=2)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """An auxiliary classifier (Sec. 5): pool to 4x4, 1x1 conv 128 + ReLU, FC 1024 + ReLU, dropout, FC.

    Args:
        pool: the pooling that brings the 14x14 maps to 4x4 (the paper's 5x5 stride-3 average pool, or
            torchvision's adaptive one).
        dropout: ratio of dropped FC-1024 outputs (70% in the paper).
    """

    def __init__(self, in_channels: int, num_classes: int, *, pool: nn.Module,
                 conv_block: type[nn.Module] = ConvReLU, dropout: float = 0.7):
        super().__init__()
        self.pool = pool
        self.conv = conv_block(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pool(x))  # (N, 128, 4, 4)
        return self.fc2(self.dropout(self.relu(self.fc1(x.flatten(1)))))


def _check_dropout(**ratios: float) -> None:
    for option, p in ratios.items():
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{option} must be in [0, 1), got {p}")


class _InceptionV1(nn.Module):
    """What both GoogLeNets share: the modules of Table 1 after the stem, the heads, and that part of forward."""

    def _build_body(self, conv_block: type[nn.Module], *, large_kernel: int, pool4: nn.Module) -> int:
        channels = STEM_CHANNELS
        for name, widths in TABLE_1.items():
            module = Inception(channels, *widths, conv_block=conv_block, large_kernel=large_kernel)
            setattr(self, f"inception{name}", module)
            channels = module.out_channels
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = pool4
        return channels

    def _stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutput:
        x = self._stem(x)  # (N, 192, 28, 28) at 224x224
        x = self.inception3b(self.inception3a(x))  # (N, 480, 28, 28)
        x = self.inception4a(self.maxpool3(x))  # (N, 512, 14, 14)
        heads = self.training and self.aux1 is not None
        aux1 = self.aux1(x) if heads else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # (N, 528, 14, 14)
        aux2 = self.aux2(x) if heads else None
        x = self.maxpool4(self.inception4e(x))  # (N, 832, 7, 7)
        x = self.inception5b(self.inception5a(x))  # (N, 1024, 7, 7)
        x = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        return GoogLeNetOutput(x, aux1, aux2) if heads else x


class GoogLeNet(_InceptionV1):
    """The network of Table 1 and Fig. 3, with the auxiliary classifiers of Sec. 5.

    Args:
        aux_logits: build the two auxiliary classifiers (used in training mode only).
        dropout: ratio of dropped pooled features before the classifier (40% in Table 1).
        dropout_aux: ratio of dropped FC-1024 outputs in each auxiliary classifier (70% in Sec. 5).
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 dropout: float = 0.4, dropout_aux: float = 0.7):
        super().__init__()
        _check_dropout(dropout=dropout, dropout_aux=dropout_aux)
        self.aux_logits = aux_logits
        # Stem: Table 1's first rows, with the two LocalRespNorm layers of Fig. 3. The paper gives no constants;
        # these are BVLC's Caffe replication (bvlc_googlenet, made with Szegedy's help): size 5, alpha 1e-4,
        # beta 0.75 and Caffe's default k = 1. Caffe divides alpha by the size, as PyTorch does, so they go into
        # nn.LocalResponseNorm unchanged.
        self.conv1 = ConvReLU(in_chans, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.conv2 = ConvReLU(64, 64, 1)  # Table 1's "#3x3 reduce" of the stem's convolution row
        self.conv3 = ConvReLU(64, STEM_CHANNELS, 3, padding=1)
        self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        channels = self._build_body(ConvReLU, large_kernel=5, pool4=nn.MaxPool2d(3, stride=2, ceil_mode=True))
        if aux_logits:
            # "An average pooling layer with 5x5 filter size and stride 3", giving 4x4 maps on (4a) and (4d).
            self.aux1 = InceptionAux(self.inception4a.out_channels, num_classes, dropout=dropout_aux,
                                     pool=nn.AvgPool2d(5, stride=3, ceil_mode=True))
            self.aux2 = InceptionAux(self.inception4d.out_channels, num_classes, dropout=dropout_aux,
                                     pool=nn.AvgPool2d(5, stride=3, ceil_mode=True))
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AvgPool2d(7, stride=1)  # Table 1: "avg pool 7x7/1" to 1x1x1024
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self):
        # The paper gives no initialisation. BVLC's Caffe replication fills every convolution and FC weight with
        # Caffe's "xavier" (uniform in +-sqrt(3 / fan_in), which is kaiming_uniform_ with gain 1) and every bias with
        # 0.2, except the three classifiers, whose biases start at 0.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")
                nn.init.constant_(m.bias, 0.2)
        for classifier in (self.fc, *(head.fc2 for head in (self.aux1, self.aux2) if head is not None)):
            nn.init.zeros_(classifier.bias)

    def _stem(self, x: Tensor) -> Tensor:
        x = self.lrn1(self.maxpool1(self.conv1(x)))  # (N, 64, 56, 56)
        x = self.conv3(self.conv2(x))  # (N, 192, 56, 56)
        return self.maxpool2(self.lrn2(x))  # (N, 192, 28, 28)


# `transform_input` maps input normalised with ImageNet's mean and std (torchvision's transforms) back to pixels
# in [0, 1] and on to (pixel - 0.5) / 0.5: x * std / 0.5 + (mean - 0.5) / 0.5, per channel.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_TRANSFORM_SCALE = tuple(s / 0.5 for s in _IMAGENET_STD)
_TRANSFORM_SHIFT = tuple((m - 0.5) / 0.5 for m in _IMAGENET_MEAN)


class GoogLeNetBN(_InceptionV1):
    """torchvision's GoogLeNet: batch normalisation after every convolution, and the changes its card lists.

    Args:
        aux_logits: build the two auxiliary classifiers (used in training mode only).
        transform_input: re-normalise ImageNet-normalised input to (x - 0.5) / 0.5, the scaling of the ported
            TensorFlow weights (torchvision turns it on with its pretrained weights).
        dropout: ratio of dropped pooled features before the classifier (torchvision's 0.2).
        dropout_aux: ratio of dropped FC-1024 outputs in each auxiliary classifier.
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 transform_input: bool = False, dropout: float = 0.2, dropout_aux: float = 0.7):
        super().__init__()
        _check_dropout(dropout=dropout, dropout_aux=dropout_aux)
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input re-normalises RGB input and needs in_chans=3, got {in_chans}")
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.conv1 = ConvBNReLU(in_chans, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBNReLU(64, 64, 1)
        self.conv3 = ConvBNReLU(64, STEM_CHANNELS, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        channels = self._build_body(ConvBNReLU, large_kernel=3, pool4=nn.MaxPool2d(2, stride=2, ceil_mode=True))
        if aux_logits:
            self.aux1 = InceptionAux(self.inception4a.out_channels, num_classes, conv_block=ConvBNReLU,
                                     dropout=dropout_aux, pool=nn.AdaptiveAvgPool2d(4))
            self.aux2 = InceptionAux(self.inception4d.out_channels, num_classes, conv_block=ConvBNReLU,
                                     dropout=dropout_aux, pool=nn.AdaptiveAvgPool2d(4))
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self):
        # torchvision's init_weights=True: weights from N(0, 0.01^2) truncated at +-2 (200 standard deviations, so
        # in effect untruncated); batch norm scale 1, shift 0; linear biases keep PyTorch's default.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stem(self, x: Tensor) -> Tensor:
        if self.transform_input:
            x = x * x.new_tensor(_TRANSFORM_SCALE).view(1, 3, 1, 1) + x.new_tensor(_TRANSFORM_SHIFT).view(1, 3, 1, 1)
        x = self.maxpool1(self.conv1(x))  # (N, 64, 56, 56)
        x = self.conv3(self.conv2(x))  # (N, 192, 56, 56)
        return self.maxpool2(x)  # (N, 192, 28, 28)


register_model("googlenet", ModelCard(
    family="googlenet", paper=SZEGEDY_2014, dataset="imagenet", input_size=(3, 224, 224),
    # No parameter total in the paper: the text says "12x fewer parameters" than AlexNet, and Table 1's params
    # column is not a count of this network (its conv1 row, 2.7K, is 9.4K here; rows 4c and 5a differ too).
    macs=1.5e9,
    macs_source='Sec. 1: "a computational budget of 1.5 billion multiply-adds at inference time"; Table 1\'s ops '
                "column sums to 1,502M (its conv1 row, 34M, is 118M here)",
    top5_err=10.07, err_source="Table 3, 1 model, 1 crop, ILSVRC-2014 val",
    other_top1_err=31.3,
    other_top1_source="BVLC's Caffe replication of this network (BVLC/caffe models/bvlc_googlenet/readme.md: top-1 "
                      "68.7%, top-5 88.9%, center crop, ILSVRC val), not a figure of the paper",
    deviations=(
        "initialisation: BVLC's Caffe replication (bvlc_googlenet train_val.prototxt), Caffe 'xavier' weights "
        "(uniform in +-sqrt(3/fan_in)) and biases 0.2, 0 in the three classifiers; the paper gives none, and that "
        "replication's readme lists 'xavier instead of gaussian' among its differences from the original",
        "local response normalisation constants from the same Caffe replication (size 5, alpha 1e-4 averaged over "
        "the window, beta 0.75, Caffe's default k 1); the paper shows the two layers in Fig. 3 without constants",
    ),
))(GoogLeNet)

register_model("googlenet_bn", ModelCard(
    family="googlenet", paper=SZEGEDY_2014, dataset="imagenet", input_size=(3, 224, 224), torchvision="googlenet",
    deviations=(
        "batch normalisation (eps 1e-3) after every convolution, and convolutions without bias (torchvision's)",
        "the '5x5' branch of every inception module has 3x3 kernels (torchvision keeps this from the TensorFlow "
        "port it took its weights from; pytorch/vision#906)",
        "no local response normalisation in the stem",
        "the max-pool before inception (5a) is 2x2 stride 2, not 3x3 stride 2",
        "adaptive average pooling to 1x1 before the classifier, so inputs of other sizes work",
        "dropout 0.2 before the classifier, not 0.4",
        "the auxiliary classifiers pool adaptively to 4x4 instead of 5x5 stride-3 average pooling, and normalise "
        "their 1x1 convolution",
        "transform_input option: re-normalises ImageNet-normalised input to (x - 0.5) / 0.5",
        "initialisation: torchvision's (weights from N(0, 0.01^2) truncated at +-2, batch norm 1 and 0, linear "
        "biases PyTorch's default); the paper gives none",
    ),
))(GoogLeNetBN)
