"""AlexNet, twice: the 2012 two-tower network and torchvision's single-tower one.

`alexnet`: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
NIPS 2012. The network of Sec. 3.5 and Fig. 2: five convolutions, ReLU everywhere, local response normalisation
(Sec. 3.3) after the first two, overlapping 3x3 stride-2 max-pooling (Sec. 3.4), three fully connected layers
with dropout on the first two (Sec. 4.2), and the initialisation of Sec. 5. The two GPUs become one device: the
layers whose kernels see only their own GPU's maps (conv2, conv4, conv5) are convolutions with groups=2. Errors
are from Table 2 (one CNN, ILSVRC-2012 validation).

`alexnet_owt`: torchvision's `alexnet`, which follows the single-tower net of Krizhevsky, "One weird trick for
parallelizing convolutional neural networks", arXiv:1404.5997 (2014). It has torchvision's module names, so
torchvision's state_dicts load into it; its card lists where torchvision's net and that paper part ways.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from cnnzoo.layers import PaperLRN
from cnnzoo.models.papers import KRIZHEVSKY_2012, KRIZHEVSKY_2014
from cnnzoo.registry import ModelCard, register_model


class Conv(NamedTuple):
    """One convolution of Fig. 2, followed by a ReLU."""

    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1  # 2 where each GPU's kernels see only the maps on that GPU (Sec. 3.2)
    bias_init: float = 0.0  # Sec. 5: 1 in conv2, conv4 and conv5 "to provide the ReLUs with positive inputs"


# Sec. 3.5 and Fig. 2, for a 227x227 input (the size that makes conv1's arithmetic give Fig. 2's 55x55).
# "LRN" is Sec. 3.3's response normalisation (after the ReLU), "M" the overlapping 3x3 stride-2 max-pool.
# Kernel depths as the paper gives them: conv2 5x5x48, conv3 3x3x256, conv4 and conv5 3x3x192.
LAYERS_2012 = [
    Conv(96, 11, stride=4),                             # 55x55; each tower's 48 kernels see all 3 input channels
    "LRN", "M",                                         # 27x27
    Conv(256, 5, padding=2, groups=2, bias_init=1.0),   # 27x27
    "LRN", "M",                                         # 13x13
    Conv(384, 3, padding=1),                            # 13x13; the towers exchange maps here
    Conv(384, 3, padding=1, groups=2, bias_init=1.0),   # 13x13
    Conv(256, 3, padding=1, groups=2, bias_init=1.0),   # 13x13
    "M",                                                # 6x6
]
HIDDEN = (4096, 4096)  # FC6, FC7 ("the fully-connected layers have 4096 neurons each"); their biases start at 1


class AlexNet(nn.Module):
    """The 2012 network of Fig. 2, its two towers modelled by grouped convolutions.

    Args:
        dropout: probability of dropping an output of FC6 and FC7 (0.5 in Sec. 4.2).
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        bias_init: list[tuple[nn.Module, float]] = []
        channels = in_chans
        for item in LAYERS_2012:
            if item == "LRN":
                # Sec. 3.3 sums over the n neighbouring maps among all N maps of the layer, so one LRN spans both
                # towers' maps; the constants are the paper's (PaperLRN takes alpha as printed).
                layers.append(PaperLRN(size=5, alpha=1e-4, beta=0.75, k=2.0))
            elif item == "M":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            else:
                conv = nn.Conv2d(channels, item.out_channels, item.kernel_size, stride=item.stride,
                                 padding=item.padding, groups=item.groups)
                layers += [conv, nn.ReLU(inplace=True)]
                bias_init.append((conv, item.bias_init))
                channels = item.out_channels
        self.features = nn.Sequential(*layers)

        # Sec. 4.2: dropout "consists of setting to zero the output of each hidden neuron with probability 0.5" and
        # is used "in the first two fully-connected layers". The dropped values are FC6's and FC7's outputs, so each
        # Dropout follows that layer's ReLU, as in Krizhevsky's cuda-convnet2 layer files. torchvision puts Dropout
        # before FC6 and FC7 instead, which drops conv5's pooled features and leaves FC7's outputs whole.
        fc6, fc7 = nn.Linear(channels * 6 * 6, HIDDEN[0]), nn.Linear(HIDDEN[0], HIDDEN[1])
        fc8 = nn.Linear(HIDDEN[1], num_classes)
        self.classifier = nn.Sequential(
            fc6, nn.ReLU(inplace=True), nn.Dropout(dropout),
            fc7, nn.ReLU(inplace=True), nn.Dropout(dropout),
            fc8,
        )
        bias_init += [(fc6, 1.0), (fc7, 1.0), (fc8, 0.0)]

        # Sec. 5: every weight from N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere.
        for layer, bias in bias_init:
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.constant_(layer.bias, bias)

    def forward(self, x):
        x = self.features(x)  # (N, 256, 6, 6) at 227x227
        return self.classifier(x.flatten(1))


class AlexNetOWT(nn.Module):
    """torchvision's AlexNet: one tower of 64-192-384-256-256 filters, no LRN, adaptive 6x6 pooling.

    Args:
        dropout: probability of dropping the inputs of FC6 and FC7 (torchvision's placement).
    """

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2),  # 55x55 at 224x224
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 27x27
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 13x13
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 6x6
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # any input from 63x63 up ends at 6x6
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        # Initialisation: PyTorch's defaults, as torchvision leaves them.

    def forward(self, x):
        x = self.avgpool(self.features(x))  # (N, 256, 6, 6)
        return self.classifier(x.flatten(1))


register_model("alexnet", ModelCard(
    family="alexnet", paper=KRIZHEVSKY_2012, dataset="imagenet", input_size=(3, 227, 227),
    params=60e6, params_source='Abstract and Sec. 4 ("60 million parameters")', params_rounding=1e7,
    top1_err=40.7, top5_err=18.2, err_source="Table 2, 1 CNN, ILSVRC-2012 val",
    deviations=(
        "input 227x227: the paper states 224x224, which does not fit its own conv1 arithmetic "
        "((224 - 11) / 4 + 1 is not a whole number); 227 gives Fig. 2's 55x55 maps",
        "the two-GPU split runs on one device: conv2, conv4 and conv5 are grouped convolutions (groups=2), "
        "which connect each half of the maps only to its own half, as each GPU did",
        "dropout is PyTorch's inverted form (kept outputs doubled in training, nothing done at test time); the "
        "paper halves the outputs at test time instead, which is the same in expectation",
    ),
))(AlexNet)

# The 2014 paper gives no absolute parameter count (only "0.2% more parameters" than the two-tower net) and its
# results table could not be checked here, so the card carries no reported figures.
register_model("alexnet_owt", ModelCard(
    family="alexnet", paper=KRIZHEVSKY_2014, dataset="imagenet", input_size=(3, 224, 224), torchvision="alexnet",
    deviations=(
        "filter counts 64-192-384-256-256 are torchvision's (from Krizhevsky's cuda-convnet2 single-GPU layer "
        "file); the paper's footnote 1 lists 64-192-384-384-256, but only torchvision's widths give the "
        "'0.2% more parameters' than the two-tower net that the paper states",
        "no local response normalisation (torchvision drops it); the paper describes its net as the 2012 model "
        "in one tower, and Krizhevsky's single-GPU layer file normalises after conv1 and conv2",
        "conv1 padding 2 and an adaptive 6x6 average pool before the classifier (torchvision's), so 224x224 "
        "input works and other sizes do too",
        "dropout drops the inputs of FC6 and FC7 (torchvision's order), not the outputs of FC6 and FC7 as in the "
        "2012 paper and Krizhevsky's layer file",
        "the paper's output layer is 1000 independent logistic units trained with cross-entropy; this net returns "
        "logits for softmax cross-entropy, as torchvision's weights were trained",
        "initialisation: PyTorch's defaults (torchvision's); Krizhevsky's layer file draws weights from Gaussians "
        "of std 0.01 or 0.03",
    ),
))(AlexNetOWT)
