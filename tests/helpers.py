"""Small helpers shared by the family test files."""

import torch
from torch import nn


def stage_sides(model, side, in_chans=3):
    """Side of the maps after every convolution and max-pool of `model.features`, run one layer at a time."""
    x, sides = torch.zeros(1, in_chans, side, side), []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                sides.append(x.shape[-1])
    return sides
