"""The authors' released compressed SqueezeNet (songhan/SqueezeNet-Deep-Compression, compressed_SqueezeNet.net),
read from files written here in its layout: what decode.py reads, written by an encoder of the test's own."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnzoo.analysis.counting import meta_model
from cnnzoo.compress.release import is_released_squeezenet, read_released_squeezenet
from cnnzoo.registry import create_model

CONVS = [(n, m) for n, m in meta_model("squeezenet1_0").named_modules() if isinstance(m, nn.Conv2d)]


def _encode(layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> bytes:
    """The release's layout from (codebook[256], bias, dense weights taken from the codebook) per convolution:
    counts, then per layer codebook, bias, one 8-bit code per entry, two 4-bit gaps per byte (low nibble first),
    a gap over 15 bridged by filler entries that point at the codebook's zero (index 0 here)."""
    counts, bodies = [], []
    for codebook, bias, dense in layers:
        codes, gaps, last = [], [], -1
        for place in np.flatnonzero(dense):
            gap = place - last - 1
            while gap > 15:  # a filler 16 places on
                codes.append(0)
                gaps.append(15)
                gap -= 16
            codes.append(int(np.flatnonzero(codebook == dense[place])[0]))
            gaps.append(gap)
            last = place
        n = len(codes)
        padded = gaps + [0] * (n % 2)
        packed = bytes(lo | (hi << 4) for lo, hi in zip(padded[0::2], padded[1::2]))
        counts.append(n)
        bodies.append(codebook.astype("<f4").tobytes() + bias.astype("<f4").tobytes() + bytes(codes) + packed)
    return np.asarray(counts, "<u4").tobytes() + b"".join(bodies)


def _layers(seed=0, density=0.3):
    rng = np.random.default_rng(seed)
    out = []
    for _, conv in CONVS:
        codebook = np.concatenate([[0.0], np.sort(rng.normal(0, 0.1, 255))]).astype(np.float32)
        dense = np.zeros(conv.weight.numel(), np.float32)
        kept = rng.random(dense.size) < density
        kept[rng.integers(dense.size)] = True  # at least one entry per layer
        dense[kept] = codebook[rng.integers(1, 256, kept.sum())]
        out.append((codebook, rng.normal(0, 0.05, conv.out_channels).astype(np.float32), dense))
    return out


def test_the_release_layout_decodes_to_squeezenet1_0s_weights(tmp_path):
    layers = _layers()
    path = tmp_path / "compressed_SqueezeNet.net"
    path.write_bytes(_encode(layers))
    assert is_released_squeezenet(path)
    state, stored = read_released_squeezenet(path)
    for (name, conv), (codebook, bias, dense), layer in zip(CONVS, layers, stored):
        assert torch.equal(state[f"{name}.weight"], torch.from_numpy(dense).view(conv.weight.shape))
        assert torch.equal(state[f"{name}.bias"], torch.from_numpy(bias))
        assert layer.nonzero == np.count_nonzero(dense) and layer.entries >= layer.nonzero
    assert any(layer.entries > layer.nonzero for layer in stored)  # fillers were needed and read as zeros
    model = create_model("squeezenet1_0")
    model.load_state_dict(state, strict=True)  # every weight and bias of the net, nothing else


def test_other_files_are_not_taken_for_the_release(tmp_path):
    good = _encode(_layers(density=0.05))
    for name, data in (("short", good[:-1]), ("long", good + b"\0"), ("empty", b""), ("torch", b"PK\x03\x04" * 40)):
        path = tmp_path / name
        path.write_bytes(data)
        assert not is_released_squeezenet(path)
        with pytest.raises(ValueError, match="not the released compressed SqueezeNet"):
            read_released_squeezenet(path)


def test_positions_past_a_layers_end_are_refused(tmp_path):
    layers = _layers(density=0.05)
    data = bytearray(_encode(layers))
    n0 = int(np.frombuffer(bytes(data[:4]), "<u4")[0])
    gap_start = 4 * len(CONVS) + 4 * 256 + 4 * CONVS[0][1].out_channels + n0
    data[gap_start:gap_start + (n0 - 1) // 2 + 1] = b"\xff" * ((n0 - 1) // 2 + 1)  # every gap 15: 16 places each
    path = tmp_path / "damaged.net"
    path.write_bytes(bytes(data))
    assert n0 * 16 > CONVS[0][1].weight.numel()
    with pytest.raises(ValueError, match="past its 14112 weights; the file is damaged"):
        read_released_squeezenet(path)


def test_pretrained_takes_the_release_with_caffes_preprocessing(tmp_path):
    layers = _layers(seed=1)
    path = tmp_path / "compressed_SqueezeNet.net"
    path.write_bytes(_encode(layers))
    model = create_model("squeezenet1_0", pretrained=str(path))
    (name, _), (_, bias, dense) = CONVS[-1], layers[-1]
    assert torch.equal(model.get_submodule(name).weight.flatten(), torch.from_numpy(dense))
    assert torch.equal(model.get_submodule(name).bias, torch.from_numpy(bias))
    pre = model.pretrained_weights.preprocess
    assert (pre.channel_order, pre.pixel_scale, pre.crop, pre.mean) == ("BGR", 255, 227, (104.0, 117.0, 123.0))
    with pytest.raises(ValueError, match="not a weights file cnnzoo reads"):  # the layout is SqueezeNet 1.0's only
        create_model("squeezenet1_1", pretrained=str(path))
