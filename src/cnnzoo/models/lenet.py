"""LeNet-5: LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document Recognition",
Proceedings of the IEEE 86(11), 1998.

`lenet5` is the network of Sec. II.B, layer by layer:

    input 1@32x32 -> C1 6@28x28 -> S2 6@14x14 -> C3 16@10x10 -> S4 16@5x5 -> C5 120@1x1 -> F6 84 -> 10 RBF units

- C1, C3, C5 are 5x5 convolutions. C3 connects each of its maps to a subset of the S2 maps only (Table I), and
  holds parameters for those connections only (1,516, not the 2,416 of a full connection).
- S2 and S4 are trainable subsampling layers: each unit adds its four inputs (a non-overlapping 2x2 window),
  multiplies the sum by a coefficient and adds a bias, one coefficient and one bias per feature map.
- Every unit up to F6 passes its weighted sum through the squashing function f(a) = A tanh(S a), A = 1.7159,
  S = 2/3 (Sec. II.B and Appendix A): A and S make f(1) = 1 and f(-1) = -1.
- The output layer has one Euclidean RBF unit per class, y_i = sum_j (x_j - w_ij)^2, whose parameter vectors are
  fixed +1/-1 codes: 7x12 bitmaps of the digits (the paper's are stylised images of the characters; ours are
  drawn for cnnzoo). They are buffers, not parameters, so the trainable count is the paper's 60,000.
- Weights and biases start uniform in +/-2.4/F_i, F_i the fan-in of the unit (Appendix A).

y_i is a penalty (lower = more likely), so `forward` returns -y: the largest logit is the nearest code, and the
output plugs into argmax and softmax code. `map_loss` is the paper's training criterion, eq. (9), written on
these logits. The paper's inputs are scaled so that the background is -0.1 and the ink 1.175 (Sec. II.B); that
belongs to the data pipeline, not to the model.

`lenet5_modern` is the network as most courses and libraries now write it (ReLU, max-pooling, a fully connected
C3, a linear output layer for softmax cross-entropy), for comparison; its card lists each change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.models.papers import LECUN_1998
from cnnzoo.registry import ModelCard, register_model

__all__ = ["LeNet5", "ModernLeNet5", "ScaledTanh", "Subsampling", "PartiallyConnectedConv2d", "EuclideanRBF",
           "rbf_codes", "map_loss", "C3_INPUTS"]

# Table I. Row i is S2 feature map i, column j is C3 feature map j; "X" marks a connection ("." is the paper's blank).
TABLE_I = (
    # C3: 0123456789012345
    "X...XXX..XXXX.XX",  # S2 map 0
    "XX...XXX..XXXX.X",  # S2 map 1
    "XXX...XXX..X.XXX",  # S2 map 2
    ".XXX..XXXX..X.XX",  # S2 map 3
    "..XXX..XXXX.XX.X",  # S2 map 4
    "...XXX..XXXX.XXX",  # S2 map 5
)
# The S2 maps each C3 map reads: six contiguous triples, six contiguous quadruples, three discontinuous
# quadruples, and one map that reads all six.
C3_INPUTS: tuple[tuple[int, ...], ...] = tuple(
    tuple(i for i, row in enumerate(TABLE_I) if row[j] == "X") for j in range(len(TABLE_I[0]))
)

# The output layer's codes (Sec. II.B, Fig. 3 shows the paper's): 12 rows of 7, "#" is +1 and "." is -1.
DIGIT_BITMAPS = (
    (".......", "..###..", ".#...#.", "#.....#", "#.....#", "#.....#",
     "#.....#", "#.....#", "#.....#", ".#...#.", "..###..", "......."),  # 0
    (".......", "...#...", "..##...", ".#.#...", "...#...", "...#...",
     "...#...", "...#...", "...#...", "...#...", ".#####.", "......."),  # 1
    (".......", "..###..", ".#...#.", "#.....#", "......#", ".....#.",
     "....#..", "...#...", "..#....", ".#.....", "#######", "......."),  # 2
    (".......", ".#####.", "#.....#", "......#", "......#", "..####.",
     "......#", "......#", "......#", "#.....#", ".#####.", "......."),  # 3
    (".......", "....##.", "...#.#.", "..#..#.", ".#...#.", "#....#.",
     "#######", ".....#.", ".....#.", ".....#.", ".....#.", "......."),  # 4
    (".......", "#######", "#......", "#......", "#......", "######.",
     "......#", "......#", "......#", "#.....#", ".#####.", "......."),  # 5
    (".......", "..####.", ".#.....", "#......", "#......", "######.",
     "#.....#", "#.....#", "#.....#", "#.....#", ".#####.", "......."),  # 6
    (".......", "#######", "......#", ".....#.", ".....#.", "....#..",
     "....#..", "...#...", "...#...", "..#....", "..#....", "......."),  # 7
    (".......", ".#####.", "#.....#", "#.....#", "#.....#", ".#####.",
     "#.....#", "#.....#", "#.....#", "#.....#", ".#####.", "......."),  # 8
    (".......", ".#####.", "#.....#", "#.....#", "#.....#", "#.....#",
     ".######", "......#", "......#", ".....#.", ".####..", "......."),  # 9
)
RANDOM_CODE_SEED = 1998  # codes for classes beyond the ten digits: fixed, so every build agrees


def rbf_codes(num_classes: int = 10) -> Tensor:
    """The fixed +1/-1 parameter vectors of the output RBF units, shape (num_classes, 84).

    Classes 0-9 get the digit bitmaps (the first `num_classes` of them when there are fewer). Further classes get
    random +1/-1 codes from a fixed seed; the paper notes that random codes can serve large character sets.
    """
    digits = torch.tensor(
        [[1.0 if pixel == "#" else -1.0 for row in bitmap for pixel in row] for bitmap in DIGIT_BITMAPS],
        device="cpu",
    )
    if num_classes <= len(digits):
        return digits[:num_classes].clone()
    generator = torch.Generator().manual_seed(RANDOM_CODE_SEED)
    extra = torch.randint(0, 2, (num_classes - len(digits), digits.shape[1]), generator=generator, device="cpu")
    extra = extra * 2.0 - 1.0
    return torch.cat([digits, extra])


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = A tanh(S a), A = 1.7159 and S = 2/3, so that f(+-1) = +-1."""

    amplitude = 1.7159
    slope = 2.0 / 3.0

    def forward(self, a: Tensor) -> Tensor:
        return self.amplitude * torch.tanh(self.slope * a)

    def extra_repr(self) -> str:
        return f"A={self.amplitude}, S=2/3"


class Subsampling(nn.Module):
    """Sum of each non-overlapping 2x2 window, times a trainable coefficient, plus a trainable bias, per map."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))
        self.fan_in = 4  # the four inputs of a unit share its one coefficient

    def forward(self, x: Tensor) -> Tensor:
        # the window sum as 4 x the window mean: ONNX's AveragePool has no divisor_override, so avg_pool2d(...,
        # divisor_override=1) would export as a mean; the 4 goes into the per-map coefficient (C multiplies)
        window_means = F.avg_pool2d(x, kernel_size=2, stride=2)
        return window_means * (self.fan_in * self.weight).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, window=2x2 sum"


class PartiallyConnectedConv2d(nn.Module):
    """A convolution whose output map j sees only the input maps in `inputs[j]`: one small conv per output map.

    Args:
        inputs: for each output map, the indices of the input maps it is connected to (C3_INPUTS for LeNet-5's C3).
    """

    def __init__(self, inputs: tuple[tuple[int, ...], ...], kernel_size: int):
        super().__init__()
        self.inputs = tuple(tuple(subset) for subset in inputs)
        self.out_channels = len(self.inputs)
        self.maps = nn.ModuleList(nn.Conv2d(len(subset), 1, kernel_size) for subset in self.inputs)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([conv(x[:, list(subset)]) for conv, subset in zip(self.maps, self.inputs)], dim=1)


class EuclideanRBF(nn.Module):
    """Output units y_i = sum_j (x_j - w_ij)^2 with fixed parameter vectors w_i (a buffer, not trained).

    Computed as |x|^2 - 2 x.w_i + |w_i|^2 (as torch.cdist does for large inputs): one matrix product of the F6
    state with the codes, 84 multiply-adds per unit, plus two squared norms. So every counter sees the layer as
    the weight layer it is, the paper's seventh layer and fifth with weights (depth 5, and its multiply-adds in
    the MACs), not as element-wise arithmetic.
    """

    def __init__(self, codes: Tensor):
        super().__init__()
        self.register_buffer("codes", codes)

    def forward(self, x: Tensor) -> Tensor:
        cross = F.linear(x, self.codes)  # (N, classes): x . w_i
        # (N, classes): penalties, lower = closer
        return x.pow(2).sum(dim=1, keepdim=True) - 2 * cross + self.codes.pow(2).sum(dim=1)

    def extra_repr(self) -> str:
        classes, width = self.codes.shape
        return f"{width} -> {classes}, fixed codes"


class LeNet5(nn.Module):
    """LeNet-5 as in Sec. II.B: C1-S2-C3-S4-C5-F6 with scaled-tanh units, then fixed Euclidean RBF outputs.

    `forward` returns the negated RBF penalties, -y_i, as logits.
    """

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(in_chans, 6, kernel_size=5), ScaledTanh())
        self.s2 = nn.Sequential(Subsampling(6), ScaledTanh())
        self.c3 = nn.Sequential(PartiallyConnectedConv2d(C3_INPUTS, kernel_size=5), ScaledTanh())
        self.s4 = nn.Sequential(Subsampling(16), ScaledTanh())
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, kernel_size=5), ScaledTanh())
        self.f6 = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), ScaledTanh())
        # torch.empty(0) lands where parameters do, so the codes follow a `with torch.device(...)` block too.
        self.output = EuclideanRBF(rbf_codes(num_classes).to(torch.empty(0).device))
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self):
        # Appendix A: uniform in +-2.4/F_i, F_i the fan-in of the unit the connection belongs to. The paper counts
        # a bias as one more connection of its unit (C1 has (25 + 1) x 6 x 28 x 28 connections), so biases get the
        # same draw.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                bound = 2.4 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1])
            elif isinstance(m, nn.Linear):
                bound = 2.4 / m.in_features
            elif isinstance(m, Subsampling):
                bound = 2.4 / m.fan_in
            else:
                continue
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.uniform_(m.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        x = self.c1(x)  # (N, 6, 28, 28)
        x = self.s2(x)  # (N, 6, 14, 14)
        x = self.c3(x)  # (N, 16, 10, 10)
        x = self.s4(x)  # (N, 16, 5, 5)
        x = self.c5(x)  # (N, 120, 1, 1)
        x = self.f6(x)  # (N, 84)
        return -self.output(x)  # (N, classes): minus the distance of F6's state to each class code


def map_loss(logits: Tensor, target: Tensor, *, j: float) -> Tensor:
    """The paper's eq. (9) for `LeNet5` outputs: mean of y_D + log(exp(-j) + sum_i exp(-y_i)), with y = -logits.

    The first term pulls the correct class's penalty y_D down; the second pushes the other classes' penalties up,
    and the positive constant `j` (a "rubbish" class that no penalty can beat) stops it pushing penalties that are
    already large. The paper leaves the value of `j` open, so it must be given. It is cross-entropy over the
    logits with one extra class of constant logit -j.
    """
    if j <= 0:
        raise ValueError(f"j must be a positive constant (eq. 9), got {j}")
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, classes) and target (N,), got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    rubbish = logits.new_full((logits.shape[0], 1), -float(j))
    correct = logits.gather(1, target.view(-1, 1)).squeeze(1)
    return (torch.logsumexp(torch.cat([rubbish, logits], dim=1), dim=1) - correct).mean()


class ModernLeNet5(nn.Module):
    """LeNet-5 as it is usually written today: ReLU, 2x2 max-pooling, full C3, linear output."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(in_chans, 6, kernel_size=5), nn.ReLU(inplace=True))
        self.s2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.c3 = nn.Sequential(nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True))
        self.s4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, kernel_size=5), nn.ReLU(inplace=True))
        self.f6 = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), nn.ReLU(inplace=True))
        self.output = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.s2(self.c1(x))  # (N, 6, 14, 14)
        x = self.s4(self.c3(x))  # (N, 16, 5, 5)
        x = self.f6(self.c5(x))  # (N, 84)
        return self.output(x)


_LOGITS = "forward returns the negated RBF penalties -y_i as logits (the paper's output is y_i, lower = more likely)"
_CODES = ("the 7x12 +1/-1 output codes are digit bitmaps drawn for cnnzoo, not the paper's Fig. 3 bitmaps; classes "
          "beyond ten get fixed random +1/-1 codes (seed 1998)")

register_model("lenet5", ModelCard(
    family="lenet", paper=LECUN_1998, dataset="mnist", input_size=(1, 32, 32),
    params=60_000, params_source="Sec. II.B", params_rounding=1,
    top1_err=0.95, err_source="Sec. III.B, Fig. 5 (also Fig. 9, Sec. III.C): MNIST test set, no distortions (0.8% with them)",
    deviations=(_LOGITS, _CODES),
))(LeNet5)

register_model("lenet5_modern", ModelCard(
    family="lenet", paper=LECUN_1998, dataset="mnist", input_size=(1, 32, 32),
    deviations=(
        "ReLU after C1, C3, C5 and F6 instead of the squashing function 1.7159 tanh(2a/3), and none after S2/S4",
        "S2 and S4 are 2x2 max-pooling without parameters instead of a trainable coefficient and bias per map",
        "C3 connects every S2 map to every C3 map (2,416 parameters) instead of Table I's 1,516",
        "the output is a trainable linear layer (84 x classes + classes), for softmax cross-entropy, instead of "
        "Euclidean RBF units with fixed codes and the eq. (9) criterion",
        "PyTorch's default initialisation instead of uniform +-2.4/F_i (Appendix A)",
    ),
))(ModernLeNet5)
