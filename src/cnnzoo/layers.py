"""Blocks that several papers share."""

from __future__ import annotations

from torch import nn


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
