"""Convolutions run as oneDNN primitives with packed weights and the ReLU or residual sum after them fused in.

Eager PyTorch on a CPU runs each `nn.Conv2d` through oneDNN but reorders its weights into oneDNN's blocked layout
on every call, then runs the ReLU and the residual sum as passes of their own over the whole activation. ONNX
Runtime and inductor's freezing do neither: weights are reordered once, and a convolution's epilogue (the ReLU,
or the sum with the shortcut and the ReLU after it) is applied to each output tile while it is still in cache.
`fuse_convolutions` does the same for an eager net: it rewrites the net's FX graph so that each convolution,
with the ReLU and sum that read only its output, becomes one `PackedConv2d` call, which runs oneDNN's fused
convolution (`torch.ops.mkldnn._convolution_pointwise`) on weights packed once for the input shape it sees.

The rewrite keeps the arithmetic of the original: a ReLU of a convolution, or of a convolution's output plus
another tensor of the same shape, computed in one pass instead of two or three, with float32 rounding
differences only (oneDNN adds the shortcut to the accumulated sum before storing it). CPU only.

`fuse_concat_norms` handles the other costly pattern, DenseNet's: a channel concatenation read only by a batch
norm (and a ReLU). The batch norm cannot fold into a convolution (none precedes it), and eval-mode batch norm
writes a new tensor the size of the whole concatenation, for every layer of a dense block. `ConcatBatchNorm`
scales and shifts the fresh concatenation in place while it is still in cache, and applies the ReLU in place.
`share_concat_buffers` then removes the concatenations themselves from a dense block: each feature map is copied
once into its channels of one buffer per block, and each layer reads the buffer's first channels.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PackedConv2d", "ConcatBatchNorm", "BlockBuffer", "BlockWrite", "fuse_convolutions", "fuse_concat_norms",
           "share_concat_buffers", "module_calls", "replace_module"]

_RELU_FUNCTIONS = {torch.relu, torch.relu_, torch.nn.functional.relu}
_ADD_FUNCTIONS = {operator.add, torch.add}  # FX records `a += b` on its proxies as operator.add too
SMALL_1X1_MACS = 8_000_000  # below it a 1x1 convolution runs unpacked (PackedConv2d._small; measured crossover 4-16M)


class PackedConv2d(nn.Module):
    """`conv`, then optionally `+ other` and a ReLU, in one oneDNN call on weights packed for the input shape.

    `forward(x)` or, when the sum is fused, `forward(x, other)`. The packed weights are made at the first call for
    each new input shape (the layout oneDNN picks depends on it) and kept; the original weights stay in `.conv`,
    which is what the state dict, parameter counts and a later repacking read. A 1x1 convolution too small for
    oneDNN's cost per call (under SMALL_1X1_MACS multiply-adds at that shape) runs as eager runs it, with the
    sum and ReLU applied in place on its output.
    """

    def __init__(self, conv: nn.Conv2d, *, add: bool = False, relu: bool = False):
        super().__init__()
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"PackedConv2d takes a plain nn.Conv2d with numeric zero padding, got {conv!r}")
        self.conv = conv
        self.add = add
        self.relu = relu
        self._packed: tuple | None = None  # see _plan

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:
        plan = self._packed
        if plan is None or plan[0] != x.shape or plan[1] != x.dtype:
            plan = self._plan(x)
        return plan[3](x, other)

    def __getstate__(self):  # copy.deepcopy and pickle: oneDNN's packed weights have no storage to copy or save
        state = self.__dict__.copy()
        state["_packed"] = None  # packed again at the next call
        return state

    def _plan(self, x: Tensor) -> tuple:
        """What calls on `x`'s shape and dtype run, made once and kept: (shape, dtype, the packed weights or None,
        run(x, other)). Everything a call needs is bound here, so a call costs one comparison and one function call
        besides the convolution (the deep CIFAR nets at batch 1 make thousands of calls of tens of microseconds)."""
        c = self.conv
        weight, bias, add, relu = c.weight, c.bias, self.add, self.relu
        if self._small(x):
            stride, padding, dilation, groups = c.stride, c.padding, c.dilation, c.groups
            packed = None

            def run(x: Tensor, other: Tensor | None) -> Tensor:  # as eager runs it, the epilogue in place
                out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
                if add:
                    out = out.add_(other) if other.shape == out.shape and other.dtype == out.dtype else out + other
                return out.relu_() if relu else out
        else:
            args = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
            packed = torch.ops.mkldnn._reorder_convolution_weight(weight.detach(), *args, list(x.shape))
            pointwise = torch.ops.mkldnn._convolution_pointwise
            unary, binary = pointwise.default, pointwise.binary
            out_shape, activation = self._output_shape(x), "relu" if relu and not add else "none"

            def run(x: Tensor, other: Tensor | None) -> Tensor:
                if add and other is not None and other.shape == out_shape and other.dtype == x.dtype:
                    return binary(x, other, packed, bias, *args, "add", 1.0, "relu" if relu else None, [], None)
                out = unary(x, packed, bias, *args, activation, [], "")
                if add:  # a sum that broadcasts, or one of another dtype: as the original graph computed it
                    out = out + other
                    if relu:
                        out = torch.relu(out)
                return out
        self._packed = (tuple(x.shape), x.dtype, packed, run)
        return self._packed

    def _small(self, x: Tensor) -> bool:
        """A 1x1 convolution of fewer than SMALL_1X1_MACS multiply-adds: oneDNN's fused call costs some 45 us more
        than eager's convolution there (a 16->16 one over 8x8: 50 against 15-20 us, one thread), which the deep
        CIFAR nets at batch 1 pay hundreds of times a pass. Larger ones, and every 3x3, gain from packing."""
        c = self.conv
        if tuple(c.kernel_size) != (1, 1) or x.dim() != 4:
            return False
        return math.prod(self._output_shape(x)) * (c.in_channels // c.groups) < SMALL_1X1_MACS

    def _output_shape(self, x: Tensor) -> tuple[int, ...]:
        c = self.conv
        sides = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, p, d, k, s in zip(x.shape[2:], c.padding, c.dilation, c.kernel_size, c.stride)]
        return (x.shape[0], c.out_channels, *sides)

    def extra_repr(self) -> str:
        epilogue = " + other" if self.add else ""
        return f"oneDNN, packed weights{epilogue}{', ReLU' if self.relu else ''}"


class ConcatBatchNorm(nn.Module):
    """`torch.cat(parts, 1)`, then `norm` in eval mode (and a ReLU), the last two in place on the concatenation.

    The batch norm is its affine form, x * scale + shift per channel (scale = weight / sqrt(running_var + eps),
    shift = bias - running_mean * scale), computed from `norm` when the module is made and kept as buffers that
    follow `.to()`; `norm` itself stays, for the state dict and parameter counts.
    """

    def __init__(self, norm: nn.BatchNorm2d, *, relu: bool = False):
        super().__init__()
        if type(norm) is not nn.BatchNorm2d or norm.running_mean is None or norm.running_var is None:
            raise ValueError(f"ConcatBatchNorm takes an nn.BatchNorm2d with running statistics, got {norm!r}")
        self.norm = norm
        self.relu = relu
        with torch.no_grad():
            mean, var = norm.running_mean.float(), norm.running_var.float()
            scale = torch.rsqrt(var + norm.eps)
            if norm.weight is not None:
                scale = scale * norm.weight.float()
            shift = -mean * scale
            if norm.bias is not None:
                shift = shift + norm.bias.float()
        dtype = norm.running_mean.dtype
        self.register_buffer("scale", scale.to(dtype).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.to(dtype).view(1, -1, 1, 1), persistent=False)

    def forward(self, parts: list[Tensor] | tuple[Tensor, ...] | Tensor) -> Tensor:
        """`parts` to concatenate, or the concatenation already made: a view of a dense block's shared buffer
        (`share_concat_buffers`), which is read, not written."""
        shared = isinstance(parts, Tensor)
        z = parts if shared else torch.cat(parts, 1)
        if z.dim() != 4 or z.shape[1] != self.scale.shape[1] or z.dtype != self.scale.dtype:
            z = self.norm(z)  # not the shapes or dtype the affine form was made for: as the original computed it
            return torch.relu_(z) if self.relu else z
        if shared:
            z = torch.addcmul(self.shift, z, self.scale)
        else:
            torch.addcmul(self.shift, z, self.scale, out=z)  # z is this call's own tensor: nothing else reads it
        return z.relu_() if self.relu else z

    def extra_repr(self) -> str:
        return f"concatenation, batch norm in place{', ReLU' if self.relu else ''}"


def fuse_convolutions(model: nn.Module, graph: torch.fx.Graph) -> tuple[torch.fx.GraphModule, int]:
    """`model` rewritten from its FX `graph` (traced from it in eval mode): identities dropped and every plain
    convolution made a `PackedConv2d`, with the ReLU, or the sum and ReLU, that alone read its output fused in.
    Returns the new module (sharing `model`'s parameters) and how many convolutions took an epilogue with them."""
    import torch.fx

    gm = torch.fx.GraphModule(model, graph)
    graph = gm.graph
    for node in list(graph.nodes):  # folded batch norms, and dropout (the net is inference-only): the identity
        if _is_module(gm, node, (nn.Identity, nn.Dropout, nn.Dropout2d)) and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    calls = module_calls(graph)
    fused = 0
    for node in list(graph.nodes):
        if not _is_module(gm, node, (nn.Conv2d,)) or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs:
            continue
        conv = gm.get_submodule(node.target)
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        chain, other = _epilogue(gm, node)
        add = other is not None
        relu = _is_relu(gm, chain[-1])
        replace_module(gm, node.target, PackedConv2d(conv, add=add, relu=relu))
        if len(chain) > 1:
            with graph.inserting_after(chain[-1]):
                call = graph.call_module(node.target, (node.args[0], other) if add else (node.args[0],))
            chain[-1].replace_all_uses_with(call)
            for dead in reversed(chain):
                graph.erase_node(dead)
            fused += 1
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, fused


def fuse_concat_norms(gm: torch.fx.GraphModule) -> int:
    """Rewrite, in place, every `torch.cat(parts, 1)` read only by an eval-mode `nn.BatchNorm2d` into one
    `ConcatBatchNorm` call, which takes the ReLU after the batch norm too when that ReLU is its only reader.
    Returns how many were rewritten."""
    graph = gm.graph
    calls = module_calls(graph)
    done = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target is torch.cat and _cat_dim(node) == 1
                and isinstance(node.args[0], (list, tuple)) and len(node.users) == 1):
            continue
        norm_node = _only_user(node)
        if not (_is_module(gm, norm_node, (nn.BatchNorm2d,)) and calls[norm_node.target] == 1
                and norm_node.args == (node,) and not norm_node.kwargs):
            continue
        norm = gm.get_submodule(norm_node.target)
        if type(norm) is not nn.BatchNorm2d or norm.training or norm.running_mean is None:
            continue
        relu_node = _only_user(norm_node)
        relu = relu_node is not None and _is_relu(gm, relu_node)
        last = relu_node if relu else norm_node
        replace_module(gm, norm_node.target, ConcatBatchNorm(norm, relu=relu))
        with graph.inserting_after(last):
            call = graph.call_module(norm_node.target, (node.args[0],))
        last.replace_all_uses_with(call)
        for dead in ([relu_node] if relu else []) + [norm_node, node]:
            graph.erase_node(dead)
        done += 1
    if done:
        graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return done


def share_concat_buffers(gm: torch.fx.GraphModule) -> int:
    """Give each dense block one buffer for all its concatenations, in place. Returns how many blocks took one.

    A dense block concatenates a growing list of feature maps before every layer: [f0], [f0, f1], [f0, f1, f2],
    ... each `torch.cat` copying every map again. After `fuse_concat_norms` these are `ConcatBatchNorm` calls on
    lists that extend one another. Here each feature map is instead copied once, when it is computed, into its
    channels of a buffer as wide as the longest list (allocated when f0 is ready, in f0's memory format), and each
    `ConcatBatchNorm` reads the buffer's first channels, the concatenation it would have made. Taken only where
    every list of the group is a prefix of the longest, each list is one map longer than the last (so each map's
    channels are known from the batch norm that reads up to it), and the maps have no reader but these calls
    (nothing else can see or change them, and each can be freed as soon as it is in the buffer)."""
    import torch.fx

    graph = gm.graph
    groups: dict[object, list] = {}
    for node in graph.nodes:
        if (node.op == "call_module" and type(gm.get_submodule(node.target)) is ConcatBatchNorm
                and isinstance(node.args[0], (list, tuple)) and node.args[0]
                and all(isinstance(a, torch.fx.Node) for a in node.args[0])):
            groups.setdefault(node.args[0][0], []).append(node)
    done = 0
    for first, calls in groups.items():
        calls.sort(key=lambda n: len(n.args[0]))
        maps = list(calls[-1].args[0])
        ends = {}  # map index -> its last channel + 1, from the batch norm that reads up to it
        for call in calls:
            parts = list(call.args[0])
            if parts != maps[:len(parts)] or len(parts) - 1 in ends:
                ends = {}
                break
            ends[len(parts) - 1] = gm.get_submodule(call.target).scale.shape[1]
        ours = set(calls)
        if (len(calls) < 2 or sorted(ends) != list(range(len(maps)))
                or any(ends[i] <= (ends[i - 1] if i else 0) for i in ends)
                or any(set(m.users) - ours for m in maps)):
            continue
        block = f"dense_block_{done}"
        gm.add_submodule(f"{block}_buffer", BlockBuffer(ends[len(maps) - 1], ends[0]))
        with graph.inserting_after(first):
            written = [graph.call_module(f"{block}_buffer", (first,))]
        for i in range(1, len(maps)):
            order = {n: j for j, n in enumerate(graph.nodes)}
            after = max(maps[i], written[-1], key=order.__getitem__)
            gm.add_submodule(f"{block}_write{i}", BlockWrite(ends[i - 1], ends[i]))
            with graph.inserting_after(after):
                written.append(graph.call_module(f"{block}_write{i}", (written[-1], maps[i])))
        for call in calls:
            last = len(call.args[0]) - 1
            with graph.inserting_before(call):
                view = graph.call_function(operator.getitem, (written[last], (slice(None), slice(None, ends[last]))))
            call.args = (view,)
        done += 1
    if done:
        graph.lint()
        gm.recompile()
    return done


class BlockBuffer(nn.Module):
    """A dense block's buffer of `channels` channels, in the first feature map's memory format, with that map in
    its first `filled` channels (a module, not a function, so that the graph survives a pickle's re-trace)."""

    def __init__(self, channels: int, filled: int):
        super().__init__()
        self.channels, self.filled = channels, filled

    def forward(self, first: Tensor) -> Tensor:
        if first.dim() != 4 or first.shape[1] != self.filled:
            raise ValueError(f"a dense block's first feature map should have shape (N, {self.filled}, H, W), "
                             f"got {tuple(first.shape)}")
        n, _, h, w = first.shape
        nhwc = first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
        buffer = torch.empty((n, self.channels, h, w), dtype=first.dtype, device=first.device,
                             memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        buffer[:, :self.filled].copy_(first)
        return buffer

    def extra_repr(self) -> str:
        return f"{self.channels} channels, the first {self.filled} from the block's input"


class BlockWrite(nn.Module):
    """A dense layer's output copied into channels start..end of its block's buffer, which it returns."""

    def __init__(self, start: int, end: int):
        super().__init__()
        self.start, self.end = start, end

    def forward(self, buffer: Tensor, features: Tensor) -> Tensor:
        expected = (buffer.shape[0], self.end - self.start, *buffer.shape[2:])
        if tuple(features.shape) != expected:
            raise ValueError(f"a dense layer's output should have shape {expected}, got {tuple(features.shape)}")
        buffer[:, self.start:self.end].copy_(features)
        return buffer

    def extra_repr(self) -> str:
        return f"channels {self.start}..{self.end}"


def _cat_dim(node) -> int | None:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    extra = set(node.kwargs) - {"dim"}
    return dim if isinstance(dim, int) and not extra and len(node.args) <= 2 else None


def _epilogue(gm, conv_node) -> tuple[list, object]:
    """The nodes from the convolution to the end of what can be fused after it, and the sum's other operand."""
    chain, other = [conv_node], None
    user = _only_user(conv_node)
    if user is not None and _is_add(user, conv_node):
        other = user.args[1] if user.args[0] is conv_node else user.args[0]
        chain.append(user)
        user = _only_user(user)
    if user is not None and _is_relu(gm, user):
        chain.append(user)
    return chain, other


def _only_user(node):
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_add(node, operand) -> bool:
    """A sum of `operand` and another tensor node; an in-place `add_` only when it writes into `operand` (writing
    into the other tensor would change what later reads of it see)."""
    import torch.fx

    if node.kwargs or len(node.args) != 2:
        return False
    a, b = node.args
    other = b if a is operand else a
    if not isinstance(other, torch.fx.Node) or other is operand:
        return False
    if node.op == "call_function":
        return node.target in _ADD_FUNCTIONS
    if node.op == "call_method":
        return node.target == "add" or (node.target == "add_" and a is operand)
    return False


def _is_relu(gm, node) -> bool:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.ReLU and len(node.args) == 1
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    if node.op == "call_method":
        return node.target in ("relu", "relu_") and len(node.args) == 1 and not node.kwargs
    return False


def _is_module(gm, node, kinds) -> bool:
    return node.op == "call_module" and isinstance(gm.get_submodule(node.target), kinds)


def module_calls(graph) -> dict[str, int]:
    """How many times the FX graph calls each submodule, by path."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return calls


def replace_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at `path` (dotted) inside `root`."""
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)
