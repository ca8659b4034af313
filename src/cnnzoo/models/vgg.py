"""VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015,
arXiv:1409.1556.

Every configuration of the paper's Table 1 (A, A-LRN, B, C, D, E), with the parameter counts of its Table 2
and the single-scale errors of its Table 3 for training scale S = 256 and test scale Q = 256 (dense
evaluation, Sec. 3.2; the scale-jittered rows are better still). The `_bn` twins add batch
normalisation after every convolution, as torchvision does; the paper has none. Submodule names are
torchvision's (`features`, `classifier`), so `vgg11/13/16/19` and their `_bn` twins load its state_dicts.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from cnnzoo.layers import PaperLRN
from cnnzoo.models.papers import SIMONYAN_2014
from cnnzoo.registry import ModelCard, register_model

# Table 1. A number is a 3x3 convolution with that many filters, "1x1-N" a 1x1 convolution (config C),
# "M" a 2x2 stride-2 max-pool, "LRN" Krizhevsky's local response normalisation (config A-LRN).
CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, "1x1-256", "M", 512, 512, "1x1-512", "M", 512, 512, "1x1-512", "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """A VGG configuration: the convolutional stack of Table 1, then FC-4096, FC-4096, FC-classes.

    Args:
        config: a row of CONFIGS.
        batch_norm: batch normalisation after every convolution (torchvision's `_bn` variants, not in the paper).
        dropout: dropout ratio on the first two fully connected layers (0.5 in the paper, Sec. 3.1).
    """

    def __init__(self, config: list, *, batch_norm: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        channels = in_chans
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            elif item == "LRN":
                layers.append(PaperLRN(size=5, alpha=1e-4, beta=0.75, k=2.0))  # Sec. 2.1: AlexNet's, its Sec. 3.3
            else:
                kernel, width = (1, int(item[4:])) if isinstance(item, str) else (3, item)
                layers.append(nn.Conv2d(channels, width, kernel_size=kernel, padding=kernel // 2))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    def _init_weights(self):
        # Sec. 3.1 trained net A from N(0, variance 1e-2) and started deeper nets from A's weights, then notes that
        # Glorot & Bengio's initialisation makes that pre-training unnecessary: every configuration uses it here.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)  # (N, 512, 7, 7) at 224x224
        return self.classifier(x.flatten(1))


_INIT = ("initialisation: Glorot & Bengio's for every configuration (the note in Sec. 3.1); the paper trained net A "
         "from N(0, variance 1e-2) and initialised deeper nets from A's weights")
_BN = "batch normalisation after every convolution (torchvision's variant; the paper has none)"

# name: (config, params in millions as reported in Table 2, Table 3 row (top-1 %, top-5 %, setting), torchvision)
VARIANTS = {
    "vgg11": ("A", 133, (29.6, 10.4, "S=256, Q=256"), "vgg11"),
    "vgg11_lrn": ("A-LRN", 133, (29.7, 10.5, "S=256, Q=256"), None),
    "vgg13": ("B", 133, (28.7, 9.9, "S=256, Q=256"), "vgg13"),
    "vgg16_c": ("C", 134, (28.1, 9.4, "S=256, Q=256"), None),
    "vgg16": ("D", 138, (27.0, 8.8, "S=256, Q=256"), "vgg16"),
    "vgg19": ("E", 144, (27.3, 9.0, "S=256, Q=256"), "vgg19"),
}

for name, (config, millions, (top1, top5, setting), twin) in VARIANTS.items():
    card = ModelCard(
        family="vgg", paper=SIMONYAN_2014, dataset="imagenet", input_size=(3, 224, 224),
        params=millions * 1e6, params_source="Table 2", params_rounding=1e6,
        top1_err=top1, top5_err=top5, err_source=f"Table 3, config {config}, single scale {setting}, dense evaluation, ILSVRC-2012 val",
        torchvision=twin, deviations=(_INIT,),
    )
    register_model(name, card)(partial(VGG, CONFIGS[config], batch_norm=False))
    if twin is not None:
        bn_card = ModelCard(
            family="vgg", paper=SIMONYAN_2014, dataset="imagenet", input_size=(3, 224, 224),
            torchvision=f"{twin}_bn", deviations=(_BN, _INIT),
        )
        register_model(f"{name}_bn", bn_card)(partial(VGG, CONFIGS[config], batch_norm=True))
