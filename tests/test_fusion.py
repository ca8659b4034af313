"""Convolutions on packed oneDNN weights with their epilogues fused (cnnzoo.deploy.fusion), and the memory kept
for reuse (cnnzoo.deploy.memory): the same answers as the eager net, for the patterns that fuse and those that
must not."""

import copy
import io
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.deploy import optimize
from cnnzoo.deploy.fusion import SMALL_1X1_MACS, BlockBuffer, BlockWrite, ConcatBatchNorm, PackedConv2d
from helpers import randomise_norms

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


class _Nets:
    """Small nets, one per pattern; each returns a tensor built from every path so that nothing is dead code."""

    class ConvRelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.conv(x))

    class Bottleneck(nn.Module):  # torchvision's: `out += identity`, then the shared ReLU module
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(8, 8, 1, bias=False)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.relu(self.conv1(x))
            out = self.conv2(out)
            out += x
            return self.relu(out)

    class SumFirst(nn.Module):  # the shortcut on the left of a plain sum, a functional ReLU
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=2, dilation=2)

        def forward(self, x):
            return torch.relu(x + self.conv(x))

    class IntoShortcut(nn.Module):  # `y.add_(conv(x))` writes into y, which is read again: must not fuse
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = x * 1.0
            y.add_(self.conv(x))
            return torch.relu(y) + y

    class Augmented(nn.Module):  # FX records `y += conv(x)` as a sum into a new tensor, which it then reads: fuses
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = x * 1.0
            y += self.conv(x)
            return y + x

    class Broadcast(nn.Module):  # a sum with a per-channel tensor: fused at trace time, computed as a plain sum
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.shift = nn.Parameter(torch.randn(1, 8, 1, 1))

        def forward(self, x):
            return (self.conv(x) + self.shift).relu()

    class Shared(nn.Module):  # one convolution called twice, and one output read twice
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.other = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.other(x)
            return torch.relu(self.conv(self.conv(x))) + torch.relu(y) + y

    class Same(nn.Module):  # padding="same" and a reflect-padded convolution: left as they are
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding="same")
            self.pad = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")

        def forward(self, x):
            return torch.relu(self.pad(torch.relu(self.conv(x))))


# net, input channels, (convolutions packed, packed with an epilogue)
CASES = {
    "ConvRelu": (3, 1, 1), "Bottleneck": (8, 2, 2), "SumFirst": (8, 1, 1), "IntoShortcut": (8, 1, 0), "Augmented": (8, 1, 1),
    "Broadcast": (8, 1, 1), "Shared": (8, 1, 0), "Same": (8, 0, 0),
}


@pytest.mark.parametrize("name", CASES)
def test_each_pattern_fuses_as_it_may_and_agrees_with_eager(name):
    channels, packed, fused = CASES[name]
    torch.manual_seed(0)
    model = getattr(_Nets, name)().eval()
    x = torch.randn(2, channels, 9, 9)
    with torch.no_grad():
        expected = model(x.clone())
    fast = optimize(model)
    assert sum(isinstance(m, PackedConv2d) for m in fast.modules()) == packed
    assert f"with the ReLU or sum after {'it' if fused == 1 else 'them'} fused in" in fast.notes[3]
    assert fast.notes[3].split(", ")[1].startswith(str(fused))
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # the original still answers as it did


def test_packed_weights_follow_the_input_shape():
    torch.manual_seed(0)
    model = _Nets.Bottleneck().eval()
    fast = optimize(model)
    conv = fast.model.conv2
    for batch, side in ((2, 9), (5, 9), (2, 12), (2, 9)):
        x = torch.randn(batch, 8, side, side)
        with torch.no_grad():
            expected = model(x.clone())
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
        assert conv._packed[0] == (batch, 8, side, side)


@pytest.mark.parametrize("add", [False, True])
def test_a_small_1x1_convolution_runs_unpacked_and_a_large_one_packed(add):
    """Below SMALL_1X1_MACS a 1x1 convolution runs as eager does (oneDNN's call costs more than the work there),
    with the same sum and ReLU; the answers are the same either way."""
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 1).eval()
    fused = PackedConv2d(conv, add=add, relu=True)
    for shape, packed in (((1, 16, 8, 8), False), ((8, 16, 64, 64), True)):
        assert (math.prod(shape) * 16 >= SMALL_1X1_MACS) == packed  # multiply-adds: 16 input channels per output
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        others = [torch.randn(shape), torch.randn(1, 16, 1, 1)] if add else [None]  # the second broadcasts
        for other in others:
            kept = None if other is None else other.clone()
            with torch.no_grad():
                expected = torch.relu(conv(x) + other if add else conv(x))
                got = fused(x, other) if add else fused(x)
            assert (fused._packed[2] is not None) == packed, shape
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            if other is not None:
                assert torch.equal(other, kept)  # the sum went into the convolution's own output


def test_a_used_fast_path_copies_and_pickles():
    """The packed weights (opaque oneDNN tensors) are left out of copies and pickles and packed again when used."""
    torch.manual_seed(0)
    fast = optimize(_Nets.Bottleneck().eval())
    x = torch.randn(2, 8, 9, 9)
    expected = fast(x)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(fast), torch.load(buffer, weights_only=False)):
        assert twin.model.conv2._packed is None
        torch.testing.assert_close(twin(x), expected, rtol=0, atol=0)


def test_a_torchvision_bottleneck_net_fuses_every_sum():
    fast = optimize(create_model("resnet50_v1_5"))
    packed = [m for m in fast.modules() if isinstance(m, PackedConv2d)]
    assert len(packed) == 53
    assert sum(m.add for m in packed) == 16 and sum(m.relu for m in packed) == 49  # each block's last takes the sum; all but the 4 projections a ReLU
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.ReLU)) for m in fast.modules())


def test_where_convolutions_are_not_packed_the_notes_say_why():
    assert "convolutions not packed (torch.compile fuses instead)" in optimize(create_model("lenet5"), compile=True).notes
    fast = optimize(create_model("resnet20"), fuse=False)
    assert not any(isinstance(m, PackedConv2d) for m in fast.modules())
    with pytest.raises(TypeError, match="fuse must be True or False"):
        optimize(create_model("lenet5"), fuse=1)
    with pytest.raises(ValueError, match="plain nn.Conv2d with numeric zero padding"):
        PackedConv2d(nn.Conv2d(3, 3, 3, padding="same"))


class _Concat(nn.Module):
    """A dense layer's input (concatenation, batch norm, ReLU), one without its ReLU, and one whose concatenation
    is read twice (must not be changed in place)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.norm1, self.norm2, self.norm3 = nn.BatchNorm2d(10), nn.BatchNorm2d(16), nn.BatchNorm2d(10)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.conv(x)
        a = self.relu(self.norm1(torch.cat([x, y], 1)))
        b = self.norm2(torch.cat([a, y], dim=1))
        c = torch.cat([x, y], 1)
        return b.sum(1, keepdim=True) + self.norm3(c) + c


def test_a_concatenation_read_only_by_a_batch_norm_takes_it_in_place():
    torch.manual_seed(0)
    model = randomise_norms(_Concat()).eval()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        expected = model(x)
    fast = optimize(model)
    fused = [m for m in fast.modules() if isinstance(m, ConcatBatchNorm)]
    assert [m.relu for m in fused] == [True, False]  # norm3's concatenation is also read by the sum: left alone
    assert "2 concatenations with the batch norm after them applied in place" in fast.notes
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # the original's batch norms are untouched


def test_concat_batch_norm_is_the_batch_norm_in_every_dtype_it_is_moved_to():
    torch.manual_seed(0)
    norm = randomise_norms(nn.Sequential(nn.BatchNorm2d(6))).eval()[0]
    parts = [torch.randn(3, 2, 5, 5), torch.randn(3, 4, 5, 5)]
    fused = ConcatBatchNorm(norm, relu=True)
    with torch.no_grad():
        torch.testing.assert_close(fused(parts), torch.relu(norm(torch.cat(parts, 1))), rtol=1e-5, atol=1e-5)
        low = copy.deepcopy(fused).to(torch.bfloat16)
        expected = torch.relu(norm(torch.cat(parts, 1)))
        got = low([p.bfloat16() for p in parts])
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)
        # parts of another dtype than the module's: what nn.BatchNorm2d does with them (here, it refuses them)
        wide = [p.double() for p in parts]
        with pytest.raises(RuntimeError, match="mixed dtype"):
            norm(torch.cat(wide, 1))
        with pytest.raises(RuntimeError, match="mixed dtype"):
            fused(wide)
        torch.testing.assert_close(fused.double()(wide), torch.relu(norm(torch.cat(wide, 1))))
    assert {k for k in fused.state_dict()} == {f"norm.{k}" for k in norm.state_dict()}
    with pytest.raises(ValueError, match="running statistics"):
        ConcatBatchNorm(nn.BatchNorm2d(3, track_running_stats=False))


def test_densenet_applies_every_batch_norm_after_a_concatenation_in_place():
    """DenseNet-121: 58 dense layers (6 + 12 + 24 + 16), 3 transitions and the final batch norm each read a fresh
    concatenation (Huang et al. 2017, Table 1); their convolutions' own batch norms fold instead."""
    fast = optimize(create_model("densenet121"))
    fused = [m for m in fast.modules() if isinstance(m, ConcatBatchNorm)]
    assert len(fused) == 58 + 3 + 1
    assert not any(isinstance(m, nn.BatchNorm2d) and not any(m is f.norm for f in fused) for m in fast.modules())


class _DenseBlock(nn.Module):
    """A dense block as DenseNet writes it: every layer reads the concatenation of all maps so far through a batch
    norm and a ReLU; `extra` gives the second map another reader, which must keep the concatenations as they are."""

    def __init__(self, first=4, growth=3, layers=3, extra=False):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(first + i * growth) for i in range(layers + 1))
        self.convs = nn.ModuleList(nn.Conv2d(first + i * growth, growth, 3, padding=1) for i in range(layers))
        self.extra = extra

    def forward(self, x):
        maps = [x]
        for norm, conv in zip(self.norms, self.convs):
            maps.append(conv(torch.relu(norm(torch.cat(maps, 1)))))
        out = self.norms[-1](torch.cat(maps, 1))
        return out + maps[1].mean() if self.extra else out


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_dense_block_concatenates_into_one_buffer(channels_last):
    torch.manual_seed(0)
    model = randomise_norms(_DenseBlock()).eval()
    fast = optimize(model, channels_last=channels_last)
    assert "1 dense block concatenating into one buffer" in fast.notes
    reads = [n.args[0] for n in fast.model.graph.nodes
             if n.op == "call_module" and isinstance(fast.model.get_submodule(n.target), ConcatBatchNorm)]
    assert len(reads) == 4 and not any(isinstance(r, (list, tuple)) for r in reads)  # views of the buffer, no lists
    assert sum(isinstance(m, BlockWrite) for m in fast.modules()) == 3  # each layer's output, copied in once
    for shape in ((2, 4, 7, 7), (1, 4, 5, 9)):
        x = torch.randn(shape)
        with torch.no_grad():
            expected = model(x)
        # a batch norm that wrote into its view of the buffer would change the next layer's input
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
    buffer = io.BytesIO()
    torch.save(fast, buffer)  # a GraphModule is traced again when loaded: the block's steps must survive that
    buffer.seek(0)
    for twin in (copy.deepcopy(fast), torch.load(buffer, weights_only=False)):
        assert "1 dense block concatenating into one buffer" in twin.notes
        torch.testing.assert_close(twin(x), expected, rtol=1e-5, atol=1e-5)


def test_a_dense_block_whose_map_has_another_reader_keeps_its_concatenations():
    torch.manual_seed(0)
    model = randomise_norms(_DenseBlock(extra=True)).eval()
    fast = optimize(model)
    assert not any("buffer" in n for n in fast.notes)
    assert all(isinstance(n.args[0], (list, tuple)) for n in fast.model.graph.nodes  # lists of maps, as before
               if n.op == "call_module" and isinstance(fast.model.get_submodule(n.target), ConcatBatchNorm))
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_densenet121_has_one_buffer_per_dense_block():
    """DenseNet-121's four dense blocks (Huang et al. 2017, Table 1)."""
    fast = optimize(create_model("densenet121"))
    assert "4 dense blocks concatenating into one buffer each" in fast.notes
    assert sum(isinstance(m, BlockBuffer) for m in fast.modules()) == 4
    assert sum(isinstance(m, BlockWrite) for m in fast.modules()) == 58  # one per dense layer, for its output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_for_the_next_pass():
    """In a fresh process: a second pass over 64 MiB tensors faults in fresh pages with the C library's defaults
    and none once optimize() has raised the thresholds."""
    code = """if True:
        import resource, torch
        from cnnzoo.deploy.memory import keep_freed_memory
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(3):
                torch.ones(16 * 2**20).add_(1)
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        faults()
        default = faults()
        ok, note = keep_freed_memory()
        faults()
        print(default, min(faults() for _ in range(3)), ok, keep_freed_memory() == (ok, note), note)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    default, kept, ok, same = int(out[0]), int(out[1]), out[2] == "True", out[3] == "True"
    assert ok and same, out
    assert default > 3 * 16 * 2**20 * 4 // 4096 // 2  # most of 3 x 16,384 pages faulted each time
    # the best of three passes: alone every pass faults none, but while another process churns through memory a
    # pass now and then faults one or two of the tensors in again (seen in a CI run beside another xdist worker,
    # and reproduced beside a process allocating and freeing 1.3 GB in a loop: 16,384 faults in one pass of 18)
    assert kept < default // 8, (default, kept)
    assert "freed memory kept for reuse" in " ".join(out[4:])
