"""Blocks that several papers share."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
    """

    def __init__(self, survival_prob: float):
        super().__init__()
        if not 0.0 < survival_prob <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival_prob}")
        self.survival_prob = survival_prob

    def keep(self) -> bool:
        if not self.training or self.survival_prob == 1.0:
            return True
        return bool(torch.rand(()) < self.survival_prob)

    def forward(self, branch: Tensor) -> Tensor:
        if self.training:
            return branch
        if torch.is_grad_enabled():  # a plain bool, so torch.fx traces this (a tensor's requires_grad it cannot)
            return branch * self.survival_prob
        return branch.mul_(self.survival_prob)  # inference: in place, as the residual add after it (no new tensor)

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}"


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
