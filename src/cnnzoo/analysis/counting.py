"""Counting that needs no forward pass."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameter elements, each tensor counted once even when shared between modules."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once; the set guards tying by id
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
