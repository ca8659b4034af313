"""Blocks that several papers share."""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing


class PaperLRN(nn.LocalResponseNorm):
    """Local response normalisation with `alpha` as Krizhevsky et al. 2012 (Sec. 3.3) write it.

    b = a / (k + alpha * sum of a^2 over `size` neighbouring maps) ** beta. PyTorch's (and Caffe's)
    layer divides alpha by `size`; this one does not, so the paper's constants can be typed as printed.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__(size, alpha=alpha * size, beta=beta, k=k)
        self.paper_alpha = alpha

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.paper_alpha} (per term), beta={self.beta}, k={self.k}"


class StochasticDepth(nn.Module):
    """Huang et al. 2016 (arXiv:1603.09382): a residual branch kept whole for the mini-batch with probability p.

    In training, `keep()` draws once per forward: when it says no, the block skips computing its branch and
    becomes the identity (that skip is where the training-time saving comes from). In eval mode the branch
    always runs and is scaled by p, its expected contribution during training (Sec. 3, "test-time").
    Usage inside a residual block:

        if not self.stochastic_depth.keep():
            return shortcut
        return shortcut + self.stochastic_depth(branch(x))

    A graph has no `if`, so under torch.fx symbolic tracing (`symbolic_tracing()`) a block asks for `factor(x)`
    instead, before its branch, and returns shortcut + factor * branch(x): the draw stays a node of the graph and
    runs on every call (see `keep_factor`).
    """

    def __init__(self, survival_prob: float):
        super().__init__()
        if not 0.0 < survival_prob <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival_prob}")
        self.survival_prob = survival_prob

    def keep(self) -> bool:
        return not self.training or _draw_keep(self.survival_prob)

    def factor(self, anchor: Tensor) -> Tensor:
        """The branch's multiplier as one graph node: 1 or 0 drawn as `keep()` draws in training, p in eval.
        `anchor` is a tensor of the block (its input), which makes torch.fx record the call; see `keep_factor`."""
        return keep_factor(anchor, self)

    def forward(self, branch: Tensor) -> Tensor:
        if self.training:
            return branch
        if torch.is_grad_enabled():  # a plain bool, so torch.fx traces this (a tensor's requires_grad it cannot)
            return branch * self.survival_prob
        return branch.mul_(self.survival_prob)  # inference: in place, as the residual add after it (no new tensor)

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}"


def _draw_keep(survival_prob: float) -> bool:
    """Stochastic depth's one draw per block and mini-batch (none when the block is always kept)."""
    return survival_prob == 1.0 or bool(torch.rand(()) < survival_prob)


def symbolic_tracing() -> bool:
    """True while torch.fx symbolically traces (symbolic_trace, torchvision's create_feature_extractor).

    Not torch.fx's `is_fx_tracing()`: that is also true inside torch.export, whose graphs are left as they were.
    """
    return is_fx_symbolic_tracing()


def keep_factor(anchor: Tensor, drop: StochasticDepth) -> Tensor:
    """Stochastic depth's decision as a tensor, for traced graphs: in training 1.0 (kept) or 0.0 (dropped), drawn
    as `drop.keep()` draws (the same random numbers in the same order as an eager forward); in eval p.

    A 0-dim float64 CPU tensor: it multiplies a branch on any device and in any dtype as the Python float p does
    in eager mode. `anchor` is not read; it makes torch.fx, which sees a proxy there, record this call as a node
    (torch.fx.wrap below) instead of running it once while tracing and freezing that draw into the graph. `drop`
    becomes a reference to the module in the graph, so its mode is read when the graph runs: a traced graph's
    .train() and .eval() switch the draw as they switch batch norm.

    A traced block multiplies its branch by this factor, so a dropped branch is still computed (no saving under
    FX): its parameters get zero gradients as with eager's `skip_branch`, but its batch norms update their
    running statistics, which eager's skip leaves alone, and dropout inside it draws random numbers that eager
    does not (then later draws are no longer eager's).
    """
    value = float(drop.keep()) if drop.training else drop.survival_prob
    return torch.tensor(value, dtype=torch.float64, device="cpu")


torch.fx.wrap("keep_factor")


def linear_decay(num_blocks: int, final_survival: float = 0.5) -> list[float]:
    """Survival probabilities p_l = 1 - l / L * (1 - p_L) for blocks l = 1..L (Huang et al. 2016, linear decay)."""
    if not 0.0 < final_survival <= 1.0:
        raise ValueError(f"final survival probability p_L must be in (0, 1], got {final_survival}")
    return [1.0 - (l / num_blocks) * (1.0 - final_survival) for l in range(1, num_blocks + 1)]


class _ZeroGradBypass(torch.autograd.Function):
    """The shortcut passed through unchanged; the skipped branch's parameters get zero gradients, not None.

    The authors' Torch code steps one flat parameter vector, so a dropped block's weights still see weight decay
    and momentum; zeros keep that true with PyTorch's optimizers (which skip a None gradient) and keep
    DistributedDataParallel from finding unused parameters.
    """

    @staticmethod
    def forward(ctx, shortcut: Tensor, *params: Tensor) -> Tensor:
        ctx.save_for_backward(*params)
        return shortcut.view_as(shortcut)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (grad, *(torch.zeros_like(p) for p in ctx.saved_tensors))


def skip_branch(shortcut: Tensor, branch_params: list[Tensor]) -> Tensor:
    """The output of a block whose branch stochastic depth dropped: the shortcut, with zero gradients for the
    branch's parameters (so optimizers and DistributedDataParallel treat them as used)."""
    return _ZeroGradBypass.apply(shortcut, *branch_params)
