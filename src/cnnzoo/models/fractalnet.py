"""FractalNet: Larsson, Maire & Shakhnarovich, "FractalNet: Ultra-Deep Neural Networks without Residuals",
ICLR 2017, arXiv:1605.07648.

A block is the fractal f_C of the expansion rule (Sec. 2): f_1(z) = conv(z), f_{C+1}(z) = join(f_C o f_C (z), conv(z)),
where a join is the element-wise mean of its inputs. Unrolled, f_C has C columns; column k (0 = shallowest) is a
chain of 2^k convolutions, so a block holds 2^C - 1 of them and its deepest path 2^(C-1). Joins that meet at the same
point are one join (Fig. 1), so the last join of a block averages all C columns. The CIFAR networks (Sec. 4) stack
B = 5 blocks of 64, 128, 256, 512, 512 filters, each followed by 2x2 max-pooling, then one linear layer: depth
B * 2^(C-1) convolutions, 20 for C = 3 and 40 for C = 4 (Table 1).

Drop-path (Sec. 3) trains the network as a random subnetwork each mini-batch: local drop-path drops each input of
every join independently (rate 0.15), keeping one at random if all were dropped; global drop-path keeps a single
column, the same one in every block. Mini-batches are sampled from a 50/50 mixture of the two. Dropout, when used, has
a rate per block of 0, 10, 20, 30, 40%. At test time every column runs and every join averages all its inputs;
`FractalNet.column` instead runs one column alone (Table 1's "deepest column alone"). Traced by torch.fx
(symbolic_trace, torchvision's create_feature_extractor), the network computes every column, and the drop-path
choice and every join are graph nodes that draw when the graph runs (`FractalNet._traced_forward`).

Details the paper leaves open follow the authors' Caffe generator (gustavla/fractalnet, generation/fractalnet.py and
globals.crox): each convolution is conv3x3 -> dropout -> batch norm -> ReLU; the last join of a block comes after
each column's max-pooling rather than before one shared pooling; the linear layer reads the 512 x 1 x 1 map of the
last pooling; weights start from Caffe's "xavier" filler, U(-sqrt(3 / fan_in), sqrt(3 / fan_in)).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.fx
from torch import Tensor, nn

from cnnzoo.layers import skip_branch, symbolic_tracing
from cnnzoo.models.papers import LARSSON_2016
from cnnzoo.registry import ModelCard, register_model

__all__ = ["FractalNet", "FractalBlock", "ConvBlock", "join", "CIFAR_WIDTHS", "DROPOUT_SCHEDULE"]

# Sec. 4, CIFAR/SVHN: B = 5 blocks, filters per block, and the per-block dropout rates "for experiments using dropout".
CIFAR_WIDTHS = (64, 128, 256, 512, 512)
DROPOUT_SCHEDULE = (0.0, 0.1, 0.2, 0.3, 0.4)
LOCAL_DROP_RATE = 0.15  # "Local drop-path uses 15% drop rate across the entire network"
GLOBAL_SHARE = 0.5  # training samples drop-path from a 50/50 mixture of local and global, a new path per mini-batch

# Table 1. name: (columns C, CIFAR-10+ test error % as reported, where)
VARIANTS = {
    "fractalnet20": (3, 4.60, "Table 1, FractalNet (20 layers) with drop-path and dropout, CIFAR-10 with standard "
                              "augmentation (C10+); 5.22 without them, 4.68 for the deepest column alone"),
    "fractalnet40": (4, None, ""),
}


class ConvBlock(nn.Module):
    """conv3x3 -> dropout -> batch norm -> ReLU: the unit of every fractal (dropout placed as in the authors' Caffe)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.dropout(self.conv(x))))


def join(inputs: list[Tensor], drop_rate: float = 0.0) -> Tensor:
    """Element-wise mean of the inputs; with drop_rate > 0, local drop-path first drops each input independently.

    One draw per call, shared by the whole mini-batch. When every input is dropped, one chosen uniformly at random is
    kept (as the authors' FractalJoin layer does). Dropped inputs are multiplied by zero rather than left out, so the
    convolutions behind them receive zero gradients instead of none.
    """
    n = len(inputs)
    if n == 1:
        return inputs[0]
    if drop_rate <= 0.0:
        return torch.stack(inputs).mean(0)
    keep = _draw_kept(n, drop_rate)
    share = 1.0 / sum(keep)
    return sum(x * (share if kept else 0.0) for kept, x in zip(keep, inputs))


def _draw_kept(n: int, drop_rate: float) -> list[bool]:
    """Local drop-path's draw for one join of n inputs: which are kept (at least one)."""
    keep = (torch.rand(n, device="cpu") >= drop_rate).tolist()  # drawn on the CPU: no device synchronisation
    if not any(keep):
        keep[int(torch.randint(n, (), device="cpu"))] = True
    return keep


class FractalBlock(nn.Module):
    """f_C: C columns, column k a chain of 2^k ConvBlocks; each column is max-pooled before the block's last join."""

    def __init__(self, num_columns: int, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        if num_columns < 1:
            raise ValueError(f"a fractal block needs at least 1 column, got {num_columns}")
        self.num_columns = num_columns
        self.depth = 2 ** (num_columns - 1)  # convolutions on the deepest path
        self.columns = nn.ModuleList(
            nn.ModuleList(ConvBlock(in_channels if i == 0 else out_channels, out_channels, dropout)
                          for i in range(2**k))
            for k in range(num_columns)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels = out_channels

    def span(self, column: int) -> int:
        """Depth steps one convolution of `column` spans (a deeper column's convolution spans fewer)."""
        return 2 ** (self.num_columns - 1 - column)

    def forward(self, x: Tensor, column: int | None = None, drop_rate: float = 0.0,
                path: tuple[int | None, float] | None = None) -> Tensor:
        """Args:
            column: run this column alone; None joins all of them.
            drop_rate: local drop-path rate of every join.
            path: under torch.fx tracing, the proxy of FractalNet's `drop_path_choice` node, the mini-batch's
                (column, local rate) when the graph runs; every join then becomes a `path_join` node applying it.
        """
        if column is not None:  # one column alone: a plain chain of 2^column convolutions
            out = x
            for conv in self.columns[column]:
                out = conv(out)
            return self.pool(out)
        outs = [x] * self.num_columns  # the signal each column is working on
        for step in range(1, self.depth + 1):
            ending = [k for k in range(self.num_columns) if step % self.span(k) == 0]  # columns whose conv ends here
            for k in ending:
                outs[k] = self.columns[k][step // self.span(k) - 1](outs[k])
            if step == self.depth:
                outs = [self.pool(o) for o in outs]  # pool, then the last join (the authors' order)
            inputs = [outs[k] for k in ending]
            joined = join(inputs, drop_rate) if path is None or len(inputs) == 1 else path_join(path, ending, inputs)
            for k in ending:
                outs[k] = joined
        return outs[0]


class FractalNet(nn.Module):
    """FractalNet for CIFAR (Sec. 4): fractal blocks each followed by 2x2 max-pooling, then a linear classifier.

    Args:
        num_columns: C, the columns of every block; the depth is len(widths) * 2^(C-1).
        widths: filters per block (the paper's CIFAR network: 64, 128, 256, 512, 512).
        drop_path: local drop-path rate, the chance that a join drops each of its inputs (0.15 in the paper).
        global_drop_path: share of mini-batches trained with global drop-path (a single column for the whole
            network); the others use local drop-path. 0.5 in the paper.
        dropout: True for the paper's per-block rates (0, 0.1, 0.2, 0.3, 0.4), False for none, or a rate per block.
        column: run this column alone (0 = shallowest, C - 1 = deepest) instead of joining all of them; settable
            later as `model.column`. None, the default, is the full network.
    """

    def __init__(self, num_columns: int, widths: tuple[int, ...] = CIFAR_WIDTHS, *, num_classes: int = 10,
                 in_chans: int = 3, drop_path: float = LOCAL_DROP_RATE, global_drop_path: float = GLOBAL_SHARE,
                 dropout: bool | tuple[float, ...] = True, column: int | None = None):
        super().__init__()
        if not 0.0 <= drop_path <= 1.0:
            raise ValueError(f"drop_path (the local drop-path rate) must be in [0, 1], got {drop_path}")
        if not 0.0 <= global_drop_path <= 1.0:
            raise ValueError(f"global_drop_path (the share of global mini-batches) must be in [0, 1], "
                             f"got {global_drop_path}")
        rates = _dropout_rates(dropout, len(widths))
        self.num_columns = num_columns
        self.drop_path = drop_path
        self.global_drop_path = global_drop_path
        blocks, channels = [], in_chans
        for width, rate in zip(widths, rates):
            blocks.append(FractalBlock(num_columns, channels, width, rate))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, num_classes)
        self.column = column
        _caffe_xavier_init(self)

    @property
    def column(self) -> int | None:
        return self._column

    @column.setter
    def column(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"column must be an int or None, got {type(value).__name__} {value!r}")
        if value is not None and not 0 <= value < self.num_columns:
            raise ValueError(f"column must be in 0..{self.num_columns - 1} (0 = shallowest, "
                             f"{self.num_columns - 1} = deepest) or None for all columns, got {value}")
        self._column = value

    @property
    def depth(self) -> int:
        """Convolutions on the deepest path: B * 2^(C-1)."""
        return sum(block.depth for block in self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        if symbolic_tracing() and self.column is None:
            return self._traced_forward(x)
        column, drop_rate = self._sample_path()
        for block in self.blocks:  # (N, 64, 16, 16) -> (N, 128, 8, 8) -> ... -> (N, 512, 1, 1) at 32x32
            out = block(x, column, drop_rate)
            if column is not None and torch.is_grad_enabled():  # the other columns did not run: zero gradients
                unused = [p for k, col in enumerate(block.columns) if k != column for p in col.parameters()
                          if p.requires_grad]
                out = skip_branch(out, unused) if unused else out
            x = out
        return self.head(x.flatten(1))

    def _traced_forward(self, x: Tensor) -> Tensor:
        """The forward torch.fx records: every column computed, the drop-path choice and every join graph nodes.

        Drawn when the graph runs, in eager's order: the choice first (`drop_path_choice`), then each join's local
        drops. A globally chosen column gets weight 1 at every join and the others 0, so the output is bit for bit
        that column's (finite activations assumed: 0 * inf is not 0). Random numbers equal eager's only with
        dropout off: on a global mini-batch the graph also runs the dropout of the columns eager skips. The columns
        eager skips also update their batch norms' running statistics here. (A fixed `column` is traced by the
        eager forward: a plain chain, a constant of the graph.)
        """
        path = drop_path_choice(x, self.blocks, self.num_columns, self.global_drop_path, self.drop_path)
        for block in self.blocks:  # (N, 64, 16, 16) -> (N, 128, 8, 8) -> ... -> (N, 512, 1, 1) at 32x32
            x = block(x, path=path)
        return self.head(x.flatten(1))

    def _sample_path(self) -> tuple[int | None, float]:
        """(column, local drop rate) for this mini-batch: one column (global drop-path), or all with local drops."""
        if self.column is not None:
            return self.column, 0.0
        return _draw_path(self.num_columns, self.global_drop_path, self.drop_path, self.training)

    def extra_repr(self) -> str:
        return (f"columns={self.num_columns}, depth={self.depth}, drop_path={self.drop_path}, "
                f"global_drop_path={self.global_drop_path}, column={self.column}")


def _draw_path(num_columns: int, global_share: float, local_rate: float, training: bool) -> tuple[int | None, float]:
    """One mini-batch's drop-path: (a column, 0.0) for global drop-path, (None, the local rate) otherwise."""
    if not training:
        return None, 0.0
    if global_share > 0.0 and float(torch.rand((), device="cpu")) < global_share:
        return int(torch.randint(num_columns, (), device="cpu")), 0.0
    return None, local_rate


def drop_path_choice(anchor: Tensor, blocks: nn.ModuleList, num_columns: int, global_share: float,
                     local_rate: float) -> tuple[int | None, float]:
    """`FractalNet._sample_path` as a graph node: drawn each time a traced graph runs, as eager draws it.

    `anchor` (the network's input) is not read; it makes torch.fx, which sees a proxy there, record this call
    (torch.fx.wrap below) instead of running it once while tracing. `blocks` becomes a reference to the network's
    blocks in the graph, whose mode is read when the graph runs: a traced graph's .train() and .eval() switch
    drop-path as they switch batch norm.
    """
    return _draw_path(num_columns, global_share, local_rate, blocks.training)


def path_join(path: tuple[int | None, float], columns: list[int], inputs: list[Tensor]) -> Tensor:
    """A join of a traced graph, `inputs[i]` coming from column `columns[i]`, applying the mini-batch's `path`.

    No global column: `join` with the local rate (its draws, its arithmetic; the plain mean in eval). A global
    column among the inputs: that input times 1 plus the others times 0, which is exactly it and gives the others
    zero gradients. A join the chosen column does not reach feeds only deeper columns, whose outputs the chosen
    column's joins weight 0: the plain mean, without a draw.
    """
    column, drop_rate = path
    if column is None:
        return join(inputs, drop_rate)
    if column not in columns:
        return join(inputs, 0.0)
    return sum(x * (1.0 if k == column else 0.0) for k, x in zip(columns, inputs))


# Traced graphs call these at run time; `anchor` and `path` are proxies while tracing, so FX records the calls.
torch.fx.wrap("drop_path_choice")
torch.fx.wrap("path_join")


def _dropout_rates(dropout: bool | tuple[float, ...], num_blocks: int) -> tuple[float, ...]:
    if dropout is True:
        if num_blocks != len(DROPOUT_SCHEDULE):
            raise ValueError(f"the paper's dropout schedule has {len(DROPOUT_SCHEDULE)} rates, one per block; "
                             f"pass a tuple of {num_blocks} rates for {num_blocks} blocks")
        return DROPOUT_SCHEDULE
    if dropout is False:
        return (0.0,) * num_blocks
    rates = tuple(float(r) for r in dropout)
    if len(rates) != num_blocks or not all(0.0 <= r < 1.0 for r in rates):
        raise ValueError(f"dropout must give {num_blocks} rates in [0, 1), one per block, got {dropout!r}")
    return rates


def _caffe_xavier_init(model: nn.Module) -> None:
    """Caffe's "xavier" filler (the authors' globals.crox): U(-a, a) with a = sqrt(3 / fan_in); biases zero."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")  # bound sqrt(3 / fan_in)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


_BN = ("batch normalisation with a learnable scale and shift, convolutions without bias; the authors' Caffe generator "
       "(gustavla/fractalnet, globals.crox) gives each convolution a bias and uses Caffe's BatchNorm layer with no "
       "Scale layer, so no learnable scale or shift")
_PARAMS_20 = ("parameter count: the paper gives 38.6M for the 20-layer network (DenseNet's Table 2 repeats it as "
              "depth 21); the configuration the paper and the authors' generator state (C = 3, B = 5, 64-128-256-512-512 "
              "filters, 3x3 convolutions, one linear layer) has 33,724,618 here (33.7M), as in independent "
              "reimplementations (khanrc/pt.fractalnet, osmr/imgclsmob); the 4.9M difference is unexplained, so the "
              "card states no count")
_WIDTHS_40 = ("widths: the 20-layer network's 64-128-256-512-512 filters (76.1M parameters with C = 4); that the "
              "paper's 40-layer network used these widths is not verified")
_DEVIATIONS = {"fractalnet20": (_PARAMS_20, _BN), "fractalnet40": (_WIDTHS_40, _BN)}

for name, (columns, err, where) in VARIANTS.items():
    card = ModelCard(family="fractalnet", paper=LARSSON_2016, dataset="cifar10", input_size=(3, 32, 32),
                     top1_err=err, err_source=where, deviations=_DEVIATIONS[name])
    register_model(name, card)(partial(FractalNet, columns, CIFAR_WIDTHS))
