"""Wide ResNet: Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, arXiv:1605.07146.

WRN-d-k (Table 1) is the pre-activation ResNet of He et al. 2016 (preact_resnet.py) made wider and shallower: a 3x3
conv with 16 filters, three groups of N = (d - 4) / 6 basic blocks B(3, 3) with 16k, 32k and 64k filters at 32, 16
and 8 pixels, the final BN-ReLU, average pooling and the classifier. Each block is BN-ReLU-conv3x3-BN-ReLU-conv3x3,
with dropout between the two convolutions when it is used (Fig. 1(d), Sec. 2.4; 0.3 on CIFAR, Sec. 3). Where a
block changes the shape its shortcut is a 1x1 convolution of the pre-activated input, as in the authors' code
(szagoruyko/wide-residual-networks, models/wide-resnet.lua), which also fixes d = 6N + 4.
`wide_resnet(depth, widen_factor)` builds any WRN-d-k; `wrn40_4`, `wrn16_8` and `wrn28_10` are registered with
the parameter counts and CIFAR-10 errors of Table 5 (mean/std preprocessing, no dropout).

On ImageNet the paper widens the original (post-activation) bottleneck ResNet-50: WRN-50-2-bottleneck doubles
the inner 1x1 and 3x3 width of every block (Table 8). `wide_resnet50_2` is that network built from resnet.py's
ResNet, with the stage's stride on the 3x3 as in the authors' released model (pretrained/README.md of their
repository prints it; it is based on fb.resnet.torch) and in torchvision, whose state_dict it loads.
`wide_resnet101_2` is torchvision's extension of the same widening to ResNet-101; the paper has no such network.
"""

from __future__ import annotations

from functools import partial

from cnnzoo.models.papers import ZAGORUYKO_2016
from cnnzoo.models.preact_resnet import CIFAR_WIDTHS, PreActBasicBlock, PreActResNet
from cnnzoo.models.resnet import Bottleneck, ResNet
from cnnzoo.registry import ModelCard, register_model

__all__ = ["WideResNet", "wide_resnet"]

# Table 5 (CIFAR, flip/translation augmentation, mean/std normalisation, no dropout, median of 5 runs).
CIFAR_WRNS = {  # name: (depth d, widening factor k, params as reported, CIFAR-10 test error %, Table 4 with ZCA %)
    "wrn40_4": (40, 4, 8.9e6, 4.53, 4.97),
    "wrn16_8": (16, 8, 11.0e6, 4.27, 4.81),
    "wrn28_10": (28, 10, 36.5e6, 4.00, 4.17),
}


class WideResNet(PreActResNet):
    """WRN-d-k on 32x32 inputs (Table 1): N = (d - 4) / 6 blocks per group, widths 16k, 32k, 64k.

    Args:
        depth: d = 6N + 4 (16, 22, 28, 40, ...).
        widen_factor: k.
        dropout: dropout probability between the two convolutions of every block (0.3 in the paper's dropout runs).
        survival_prob: p_L of stochastic depth over all 3N blocks (not in the paper); 1.0 turns it off.
    """

    def __init__(self, depth: int, widen_factor: int, *, dropout: float = 0.0, num_classes: int = 10,
                 in_chans: int = 3, survival_prob: float = 1.0):
        for arg, value in (("depth", depth), ("widen_factor", widen_factor)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{arg} must be an int, got {type(value).__name__} {value!r}")
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6N + 4 with N >= 1 blocks per group (10, 16, 22, 28, 40, ...), "
                             f"got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be at least 1, got {widen_factor}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        blocks = (depth - 4) // 6
        super().__init__(partial(PreActBasicBlock, shortcut="B", dropout=float(dropout)), (blocks,) * 3,
                         tuple(widen_factor * w for w in CIFAR_WIDTHS), num_classes=num_classes, in_chans=in_chans,
                         survival_prob=survival_prob)
        self.depth, self.widen_factor = depth, widen_factor


def wide_resnet(depth: int, widen_factor: int, **kwargs) -> WideResNet:
    """WRN-depth-widen_factor for CIFAR-sized inputs, e.g. wide_resnet(28, 10, dropout=0.3, num_classes=100)."""
    return WideResNet(depth, widen_factor, **kwargs)


_TABLE_5 = "Table 5, CIFAR-10 test set, flip/translation augmentation, mean/std normalisation, no dropout, median of 5 runs"

for name, (depth, k, params, err, zca_err) in CIFAR_WRNS.items():
    note = f" (Table 4, ZCA whitening: {zca_err}"
    note += "; Table 6, dropout 0.3: 3.89)" if name == "wrn28_10" else ")"
    card = ModelCard(
        family="wide_resnet", paper=ZAGORUYKO_2016, dataset="cifar10", input_size=(3, 32, 32),
        params=params, params_source="Table 5", params_rounding=0.1e6,
        top1_err=err, err_source=_TABLE_5 + note,
    )
    register_model(name, card)(partial(WideResNet, depth, k))

_IMAGENET = dict(family="wide_resnet", paper=ZAGORUYKO_2016, dataset="imagenet", input_size=(3, 224, 224))
_WIDE_BOTTLENECK = dict(stride_on_3x3=True, groups=1, width_per_group=128, shortcuts=True)

register_model("wide_resnet50_2", ModelCard(
    **_IMAGENET, params=68.9e6, params_source="Table 8", params_rounding=0.1e6,
    top1_err=21.9, top5_err=6.03,
    err_source="Table 8, WRN-50-2-bottleneck, single crop, ILSVRC-2012 val (Table 9 gives 5.79 top-5 for it)",
    torchvision="wide_resnet50_2",
))(partial(ResNet, Bottleneck, (3, 4, 6, 3), **_WIDE_BOTTLENECK))

register_model("wide_resnet101_2", ModelCard(
    **_IMAGENET, torchvision="wide_resnet101_2",
    deviations=("not in the paper: torchvision's ResNet-101 with WRN-50-2-bottleneck's doubled inner width",),
))(partial(ResNet, Bottleneck, (3, 4, 23, 3), **_WIDE_BOTTLENECK))
