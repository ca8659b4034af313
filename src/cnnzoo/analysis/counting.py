"""Counting that needs no forward pass."""

from __future__ import annotations

from torch import nn


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def count_params(model: nn.Module, *, trainable_only: bool = False, exclude_norm: bool = False) -> int:
    """Parameter elements, each tensor counted once even when shared between modules.

    Args:
        trainable_only: skip parameters with requires_grad=False.
        exclude_norm: skip the scales and shifts of normalisation layers (some papers count without them).
    """
    skip = set()
    if exclude_norm:
        skip = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once; the set guards tying by id
        if id(p) in seen or id(p) in skip or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
