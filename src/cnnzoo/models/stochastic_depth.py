"""Stochastic depth: Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks with Stochastic Depth", ECCV 2016,
arXiv:1603.09382.

In training, each residual block l is kept for the whole mini-batch with probability p_l and otherwise skipped
(the block's output is relu(shortcut)); at test time every block runs with its branch scaled by p_l. The
probabilities decay linearly from 1 at the input to p_L = 0.5 for the last block: p_l = 1 - (l / L)(1 - p_L).
Traced by torch.fx, a block draws its decision in a graph node and multiplies its branch by 1 or 0, so the
traced graph re-samples on every call (`cnnzoo.layers.keep_factor`).

The networks are the ResNets of resnet.py with `survival_prob` p_L: the 110- and 1202-layer CIFAR ResNets
(Sec. 4, Table 1 of the paper) and the 152-layer ImageNet ResNet. On CIFAR the downsampling shortcut follows the
authors' Torch code (yueatsprograms/Stochastic_Depth, ResidualDrop.lua): 2x2 average pooling with stride 2, then
zero channels appended. Which bottleneck (stride on the 1x1 or the 3x3) the authors' ImageNet run used is not
checked here; `resnet152_sd` is the paper's ResNet-152 of He et al. (stride on the 1x1).
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from torch import Tensor

from cnnzoo.models.papers import HUANG_2016
from cnnzoo.models.resnet import Bottleneck, CifarResNet, ResNet, ZeroPadShortcut, he_init
from cnnzoo.registry import ModelCard, register_model

__all__ = ["AvgPoolZeroPadShortcut"]

FINAL_SURVIVAL = 0.5  # p_L, "linear decay" with p_L = 0.5 throughout the paper's experiments

# CIFAR-10 with standard augmentation, test error at the epoch of best validation error (45k/5k split).
CIFAR_SD = {  # name: (blocks per stage n, depth 6n+2, test error %, where it is stated)
    "resnet110_sd": (18, 110, 5.23, "README of the authors' code (yueatsprograms/Stochastic_Depth); Papers with "
                                    "Code lists the paper's CIFAR-10 result as 94.77% accuracy"),
    "resnet1202_sd": (200, 1202, 4.91, "abstract"),
}


class AvgPoolZeroPadShortcut(ZeroPadShortcut):
    """Downsampling shortcut of the authors' code: average pool (kernel = stride), then zero channels appended."""

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"avg_pool={self.stride}x{self.stride}, zero_channels={self.extra}"


def _cifar(blocks_per_stage: int, *, num_classes: int = 10, in_chans: int = 3,
           survival_prob: float = FINAL_SURVIVAL) -> CifarResNet:
    model = CifarResNet(blocks_per_stage, shortcut=AvgPoolZeroPadShortcut, num_classes=num_classes,
                        in_chans=in_chans, survival_prob=survival_prob)
    he_init(model, mode="fan_in")  # the authors' code: nninit.kaiming, std = sqrt(2 / fan-in)
    return model


def _imagenet(*, num_classes: int = 1000, in_chans: int = 3, survival_prob: float = FINAL_SURVIVAL) -> ResNet:
    return ResNet(Bottleneck, (3, 8, 36, 3), stride_on_3x3=False, num_classes=num_classes, in_chans=in_chans,
                  survival_prob=survival_prob)


_TORCH_DEFAULTS = ("the authors' Torch code gives every convolution a zero-initialised bias (cancelled by the batch "
                   "normalisation after it) and leaves batch-norm gamma at Torch's default U(0, 1); here convolutions "
                   "have no bias and gamma starts at 1")

for name, (n, depth, err, where) in CIFAR_SD.items():
    card = ModelCard(family="stochastic_depth", paper=HUANG_2016, dataset="cifar10", input_size=(3, 32, 32),
                     top1_err=err, err_source=f"{where}; {depth} layers, CIFAR-10 with augmentation, p_L = 0.5",
                     deviations=(_TORCH_DEFAULTS,))
    register_model(name, card)(partial(_cifar, n))

register_model("resnet152_sd", ModelCard(family="stochastic_depth", paper=HUANG_2016, dataset="imagenet",
                                         input_size=(3, 224, 224)))(_imagenet)
