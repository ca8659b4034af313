"""The compressed SqueezeNet the authors released: `compressed_SqueezeNet.net` (675,763 bytes, "the 660KB compressed
SqueezeNet, which is 363x smaller as AlexNet") from github.com/songhan/SqueezeNet-Deep-Compression.

It is the file behind the SqueezeNet paper's "0.66 MB, 363x" row, so reading it tells what that figure is made of.
The layout, as the repository's decode.py reads it (all little-endian, no header, no checksum):

    uint32 count[26]                       entries stored per convolution, in the network's order
    then for each of the 26 convolutions:
      float32 codebook[256]                8-bit weight sharing (a 4-bit codebook of 16 for fully connected layers;
                                           SqueezeNet has none)
      float32 bias[out_channels]           dense
      uint8   code[count]                  one codebook index per stored entry
      uint8   gaps[(count - 1) // 2 + 1]   relative positions, two 4-bit gaps per byte (low nibble first): entry i
                                           sits gap_i + 1 places after entry i - 1 (the first at gap_0), in the
                                           flattened (out, in, kh, kw) weight; a gap longer than 15 is bridged by a
                                           filler entry whose code points at the codebook's zero

So each stored weight costs 12 bits (8-bit code, 4-bit gap) and nothing is Huffman coded; the fillers count as
entries. The convolutions are SqueezeNet 1.0's (DeepScale's deploy.prototxt, here `squeezenet1_0`): conv1, then
squeeze, expand 1x1, expand 3x3 of fire2..fire9, then the final 1x1 convolution.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["RELEASE_NAME", "ReleasedLayer", "is_released_squeezenet", "read_released_squeezenet"]

RELEASE_NAME = "compressed_SqueezeNet.net"
CODE_BITS, GAP_BITS = 8, 4


@dataclass(frozen=True)
class ReleasedLayer:
    """One convolution as the release stores it."""

    name: str  # cnnzoo's module name
    weights: int  # dense size of the weight tensor
    entries: int  # stored entries, fillers included
    nonzero: int  # entries whose weight is not zero

    @property
    def bits(self) -> int:
        return self.entries * (CODE_BITS + GAP_BITS)


def _convolutions() -> list[tuple[str, nn.Conv2d]]:
    from cnnzoo.analysis.counting import meta_model

    model = meta_model("squeezenet1_0")
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _layout_size(counts: np.ndarray, convs: list[tuple[str, nn.Conv2d]]) -> int:
    size = 4 * len(convs)
    for n, (_, conv) in zip(counts.tolist(), convs):
        size += 4 * (2**CODE_BITS) + 4 * conv.out_channels + n + (n - 1) // 2 + 1
    return size


def is_released_squeezenet(path: str | os.PathLike) -> bool:
    """Whether the file has exactly the release's layout for SqueezeNet 1.0 (its size follows from its counts)."""
    path = Path(path)
    convs = _convolutions()
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4 * len(convs))
    except OSError:
        return False
    if len(head) < 4 * len(convs):
        return False
    counts = np.frombuffer(head, "<u4")
    if any(not 0 < int(n) <= conv.weight.numel() for n, (_, conv) in zip(counts, convs)):
        return False
    return _layout_size(counts, convs) == size


def read_released_squeezenet(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[ReleasedLayer]]:
    """The release decoded into `squeezenet1_0`'s weights and biases (dense float32, pruned weights zero), and what
    each layer stored. A file of another layout, or one whose positions run past a layer's end, is refused."""
    path = Path(path)
    if not is_released_squeezenet(path):
        raise ValueError(f"{path} is not the released compressed SqueezeNet ({RELEASE_NAME}, songhan/SqueezeNet-Deep-"
                         f"Compression): its size does not follow the release's layout for SqueezeNet 1.0")
    convs = _convolutions()
    data = path.read_bytes()
    counts = np.frombuffer(data, "<u4", len(convs)).tolist()
    pos = 4 * len(convs)
    state, layers = {}, []
    for n, (name, conv) in zip(counts, convs):
        codebook = np.frombuffer(data, "<f4", 2**CODE_BITS, pos)
        pos += 4 * 2**CODE_BITS
        bias = np.frombuffer(data, "<f4", conv.out_channels, pos)
        pos += 4 * conv.out_channels
        codes = np.frombuffer(data, np.uint8, n, pos)
        pos += n
        packed = np.frombuffer(data, np.uint8, (n - 1) // 2 + 1, pos)
        pos += (n - 1) // 2 + 1
        gaps = np.empty(n, np.int64)
        gaps[0::2] = packed[:(n + 1) // 2] & 0x0F
        gaps[1::2] = packed[:n // 2] >> 4
        places = np.cumsum(gaps + 1) - 1
        if places[-1] >= conv.weight.numel():
            raise ValueError(f"{path}: layer {name}'s {n} entries run to position {places[-1]}, past its "
                             f"{conv.weight.numel()} weights; the file is damaged")
        if not np.isfinite(codebook).all() or not np.isfinite(bias).all():
            raise ValueError(f"{path}: layer {name} has a codebook or bias that is not finite; the file is damaged")
        dense = np.zeros(conv.weight.numel(), np.float32)
        dense[places] = codebook[codes]
        state[f"{name}.weight"] = torch.from_numpy(dense).view(conv.weight.shape)
        state[f"{name}.bias"] = torch.from_numpy(bias.copy())
        layers.append(ReleasedLayer(name, conv.weight.numel(), n, int(np.count_nonzero(dense))))
    return state, layers
