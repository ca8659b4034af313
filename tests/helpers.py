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


def cheapest_per_family(names, params: dict) -> set:
    """Each family's model with the fewest parameters (then the first name)."""
    from cnnzoo import model_card

    best: dict = {}
    for name in names:
        key = (params[name], name)
        family = model_card(name).family
        best[family] = min(best.get(family, key), key)
    return {name for _, name in best.values()}


def small_side(name: str) -> int:
    """A small square side the net accepts: its native side up to 64, else 96 where that fits (a fixed-size
    classifier, AlexNet's, ZFNet's or VGG's, keeps its native side)."""
    from cnnzoo import create_model, model_card

    c, h, _ = model_card(name).input_size
    if h <= 64:
        return h
    with torch.device("meta"):
        meta = create_model(name).eval()
    try:
        meta(torch.empty(1, c, 96, 96, device="meta"))
    except ValueError:
        return h
    return 96


def with_running_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Batch norms as after training (a fresh one is the identity, which would hide a wrong export or trace),
    scaled down until the logits of `x` are finite: as built, a very deep net's residual branches add up past
    float32's range in eval mode (ResNet-1202's logits are NaN). Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
        for _ in range(10):
            if not norms or torch.isfinite(model.eval()(x)).all():
                break
            for m in norms:
                m.running_var.mul_(4)
    return model.eval()


def randomise_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with non-trivial affine weights (negative ones too) and running statistics, so that eval mode
    tests more than the identity. In place; returns the module."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module
