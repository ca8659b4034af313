"""A fixed set of real images for checking what a faster path changes in a net's answers.

Random tensors make poor judges of a lower precision: their logits sit close together and a net's errors on them
say nothing about photographs. scikit-learn ships two photographs (a temple in China and a flower, 427x640) and
1,797 handwritten digits (8x8); `real_images` cuts and resizes them into a batch, the same every time: crops of
the photographs at several scales and places, and the first digits scaled up and repeated over three channels.
scikit-learn is the `digits` extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["precision_drift", "real_images", "Drift"]

# ImageNet statistics, the normalisation the torchvision-compatible nets expect.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def real_images(count: int = 128, size: int = 224, channels: int = 3) -> Tensor:
    """`count` normalised images (count, channels, size, size) in float32: three quarters photograph crops, one
    quarter digits."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int of at least 8, got {size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    try:
        from sklearn.datasets import load_digits, load_sample_images
    except ImportError as err:
        raise ImportError("real_images needs scikit-learn's bundled images: pip install 'cnnzoo[digits]'") from err
    photos = [torch.tensor(p).permute(2, 0, 1).float() / 255 for p in load_sample_images().images]
    digits = torch.tensor(load_digits().images).float() / 16  # (1797, 8, 8), values 0..16

    n_photos = count - count // 4
    crops = [_crop(photos[i % len(photos)], i // len(photos), size) for i in range(n_photos)]
    digit = F.interpolate(digits[: count - n_photos, None], size=(size, size), mode="bilinear", align_corners=False)
    batch = torch.cat([torch.stack(crops), digit.expand(-1, 3, -1, -1)]) if count > n_photos else torch.stack(crops)
    mean, std = torch.tensor(_MEAN).view(1, 3, 1, 1), torch.tensor(_STD).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    return batch.mean(1, keepdim=True) if channels == 1 else batch.contiguous()


def _crop(photo: Tensor, k: int, size: int) -> Tensor:
    """The k-th crop of a photograph: the side cycles through four scales, the place through a 5x5 grid (25 places
    for each scale, none repeated), every other crop mirrored."""
    _, h, w = photo.shape
    side = int(min(h, w) * (0.9, 0.7, 0.5, 0.35)[k % 4])
    place = k // 4
    gy, gx = place % 5, (place // 5 + 2 * place) % 5
    top, left = (h - side) * gy // 4, (w - side) * gx // 4
    patch = photo[:, top:top + side, left:left + side]
    if k % 2:
        patch = patch.flip(-1)
    return F.interpolate(patch[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


@dataclass(frozen=True)
class Drift:
    """What a path changes in a net's answers on a batch of images, against a reference (float32 eager)."""

    max_abs: float  # largest |difference| of a logit
    max_rel: float  # max_abs over the largest |reference logit|
    top1_agreement: float  # fraction of images given the same top-1 class
    images: int


@torch.no_grad()
def precision_drift(reference, candidate, images: Tensor, batch: int = 32) -> Drift:
    """Run both callables (a net and its faster form) on `images` in batches and compare their logits."""
    ref = torch.cat([reference(images[i:i + batch]).float() for i in range(0, len(images), batch)])
    out = torch.cat([candidate(images[i:i + batch]).float() for i in range(0, len(images), batch)])
    diff = float((out - ref).abs().max())
    scale = float(ref.abs().max()) or 1.0
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    return Drift(diff, diff / scale, agree, len(images))
