"""ZFNet: Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, arXiv:1311.2901.

The 8-layer network of Fig. 3 (`zfnet`): AlexNet with a 7x7 stride-2 first layer and a stride-2 second layer
(Sec. 4.1), dense connections throughout instead of AlexNet's two towers (Sec. 3), and contrast normalisation
after pooling in layers 1 and 2. `zfnet_large` is Table 2's model (b), the same net with 512, 1024 and 512 maps in
layers 3, 4 and 5. Errors are Table 2's single-net rows (ILSVRC-2012 validation). The paper states no parameter
count. Training-time details that are not part of the module: filters whose RMS exceeds 0.1 are renormalised to
0.1 after each update (Sec. 3).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from cnnzoo.layers import PaperLRN
from cnnzoo.models.papers import ZEILER_2013
from cnnzoo.registry import ModelCard, register_model

# Table 2: maps in layers 3, 4, 5 for the Fig. 3 model and for model (b), with that row's single-net errors.
# name: ((conv3, conv4, conv5), (val top-1 %, val top-5 %), Table 2 row)
VARIANTS = {
    "zfnet": ((384, 384, 256), (38.4, 16.5), "1 convnet as per Fig. 3"),
    "zfnet_large": ((512, 1024, 512), (37.5, 16.0),
                    "1 convnet as per Fig. 3 but with layers 3,4,5: 512,1024,512 maps (b)"),
}


class ZFNet(nn.Module):
    """The network of Fig. 3, with the maps of layers 3-5 as a parameter.

    Args:
        widths: maps in layers 3, 4 and 5.
        dropout: probability of dropping an output of layers 6 and 7 (0.5 in Sec. 3).
    """

    def __init__(self, widths: tuple[int, int, int], *, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        c3, c4, c5 = widths
        # Fig. 3 gives each layer's maps and output size, not its padding or rounding. Padding 1 on the 7x7
        # stride-2 conv is the smallest that gives 110x110 from 224x224; the 3x3 stride-2 pools must round up
        # (ceil_mode) to give 55 from 110 and 13 from 26, where rounding down gives 54 and 12. Layer 2's 5x5
        # stride-2 conv needs no padding: (55 - 5) / 2 + 1 = 26.
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 96, kernel_size=7, stride=2, padding=1),  # layer 1: 110x110
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # 55x55
            # "Contrast normalized across feature maps", after pooling (Fig. 3 caption). The paper refers to
            # Krizhevsky et al. for the operation and gives no constants, so these are AlexNet's (Sec. 3.3).
            PaperLRN(size=5, alpha=1e-4, beta=0.75, k=2.0),
            nn.Conv2d(96, 256, kernel_size=5, stride=2),  # layer 2: 26x26
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # 13x13
            PaperLRN(size=5, alpha=1e-4, beta=0.75, k=2.0),
            nn.Conv2d(256, c3, kernel_size=3, padding=1),  # layer 3: 13x13
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),  # layer 4: 13x13
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),  # layer 5: 13x13
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # 6x6
        )
        # Sec. 3: "Dropout is used in the fully connected layers (6 and 7)"; as in AlexNet, it drops their outputs.
        self.classifier = nn.Sequential(
            nn.Linear(c5 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),  # layer 6
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),  # layer 7
            nn.Linear(4096, num_classes),  # C-way softmax (in the loss)
        )
        # Sec. 3: "All weights are initialized to 1e-2 and biases are set to 0." Read as the standard deviation of
        # zero-mean Gaussian weights, as in Krizhevsky et al.: a constant would give every filter the same gradient.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)  # (N, c5, 6, 6) at 224x224
        return self.classifier(x.flatten(1))


_DEVIATIONS = (
    "padding and rounding are not given in the paper: conv1 pads by 1 and the max-pools round up (ceil mode), "
    "the choices that reproduce Fig. 3's 110, 55, 26, 13 and 6",
    "contrast normalisation is AlexNet's local response normalisation with AlexNet's constants "
    "(k=2, n=5, alpha=1e-4, beta=0.75); the paper names the operation but gives no constants",
    "weights initialised from N(0, 0.01), reading the paper's 'initialized to 1e-2' as a standard deviation",
    "the training-time renormalisation of filters whose RMS exceeds 0.1 (Sec. 3) is left to the trainer",
)

for name, (widths, (top1, top5), row) in VARIANTS.items():
    card = ModelCard(
        family="zfnet", paper=ZEILER_2013, dataset="imagenet", input_size=(3, 224, 224),
        top1_err=top1, top5_err=top5, err_source=f"Table 2, '{row}', ILSVRC-2012 val",
        deviations=_DEVIATIONS,
    )
    register_model(name, card)(partial(ZFNet, widths))
