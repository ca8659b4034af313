"""The rules the profiler applies to every operation: its cost, the receptive field it gives, its output shape
without running it (the fast path of common layers), and what backward keeps of it.

`cnnzoo.analysis.trace` runs a model under these rules; `cnnzoo.analysis.profile` states the conventions they
implement (MACs, FLOPs per op class, activations, receptive fields as (size, jump, start) per axis).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cnnzoo.analysis.counting import NORM_LAYERS
from cnnzoo.checks import InputCheck
from cnnzoo.checks import out_size as _out_size

OP_CLASSES = ("convolution", "linear", "normalisation", "pooling", "activation", "elementwise")
MAX_TENSOR_BYTES = 2**63 - 1  # PyTorch keeps a tensor's size in bytes as an int64: no tensor holds more
UNKNOWN_AXIS = (None, None, None)
INPUT_INFO = ((1, 1, 0.5), (1, 1, 0.5))  # (receptive field, jump, start) per spatial axis (height, width)


class TooLarge(Exception):
    """Raised inside a run where a tensor would pass MAX_TENSOR_BYTES; `profile` turns it into a SizeError."""

    def __init__(self, shape: tuple[int, ...] | None, dtype: torch.dtype | None, detail: str = ""):
        super().__init__(detail or f"{shape}")
        self.shape, self.dtype, self.detail = shape, dtype, detail
        self.where = "the input"


def check_fits(shape, dtype: torch.dtype) -> None:
    if math.prod(shape) * dtype.itemsize > MAX_TENSOR_BYTES:
        raise TooLarge(tuple(shape), dtype)


_POOL_LAYERS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)


def leaf_class(m: nn.Module) -> str | None:
    """The class every op of a leaf layer counts under (local response norm is several ops; an adaptive pool
    to 1x1 runs as a mean), or None to class each op by itself."""
    if isinstance(m, NORM_LAYERS):
        return "normalisation"
    if isinstance(m, _POOL_LAYERS):
        return "pooling"
    if type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, nn.MultiheadAttention):
        return "activation"
    return None


class suspended:
    """Suspend every InputCheck of the model: the profiler checks the input once, before the run."""

    def __init__(self, checks: list[InputCheck]):
        self.contexts = [c.suspended() for c in checks]

    def __enter__(self):
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.contexts):
            c.__exit__(*exc)


# --- helpers over args ----------------------------------------------------------------------------------------
def tensors(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            if isinstance(v, Tensor):
                out.append(v)
            elif isinstance(v, (list, tuple)):
                out.extend(t for t in v if isinstance(t, Tensor))
        return out
    if isinstance(value, dict):
        return tensors(list(value.values()))
    return []


def first_tensor(value) -> Tensor | None:
    ts = tensors(value)
    return ts[0] if ts else None


def arg_shapes(args) -> list:
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(tuple(a.shape))
        elif isinstance(a, (list, tuple)) and any(isinstance(t, Tensor) for t in a):
            out.append([tuple(t.shape) for t in a if isinstance(t, Tensor)])
    return out


def _arg(args, kwargs, i: int, name: str, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _pair(value, n: int, default) -> list[int]:
    """An int or list argument of a pooling op as n values (empty list: the default)."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        value = default
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    return value * n if len(value) == 1 else value


# --- receptive fields -----------------------------------------------------------------------------------------
def report_field(info) -> tuple[int | None, int | None, float | None]:
    """The larger axis's (receptive field, jump, start), or Nones where unknown."""
    if info is None:
        return None, None, None
    h, w = info
    if h[0] is None or w[0] is None:
        return None, None, None
    rf, jump, start = h if h[0] >= w[0] else w
    return rf, (int(jump) if float(jump).is_integer() else jump), float(start)


def _window(axis, k: int, s: int, p: int, d: int = 1):
    rf, jump, start = axis
    if rf is None:
        return UNKNOWN_AXIS
    return rf + (k - 1) * d * jump, jump * s, start + ((k - 1) / 2 * d - p) * jump


def _global(info, spatial):
    return tuple(_window(axis, n, n, 0) for axis, n in zip(info, spatial))


def _merge(infos):
    """Where tensors meet: the largest field per axis; unknown when their jumps differ."""
    if len(infos) == 1:
        return infos[0]
    axes = []
    for a in range(2):
        column = [i[a] for i in infos]
        if any(c[0] is None for c in column) or len({c[1] for c in column}) > 1:
            axes.append(UNKNOWN_AXIS)
        else:
            axes.append(max(column, key=lambda c: c[0]))
    return tuple(axes)


def _spatial(t: Tensor):
    return tuple(t.shape[-2:]) if t.dim() >= 4 else None


def generic_rf(ins, outs, infos, known):
    """Ops without a rule of their own: pass the field through where the map size is kept, cover the whole
    map where the spatial axes are reduced away (global pooling, flatten), unknown otherwise."""
    merged = _merge(infos)
    ref = next(t for t in ins if id(t) in known)
    before, after = _spatial(ref), _spatial(outs[0])
    if before is None or after == before:
        return merged
    if after is None or after == (1, 1):
        return _global(merged, before)
    return (UNKNOWN_AXIS, UNKNOWN_AXIS)


def _conv_rf(args, kwargs, ins, outs, infos):
    x, w = args[0], args[1]
    if _arg(args, kwargs, 6, "transposed", False) or x.dim() != 4:
        return (UNKNOWN_AXIS, UNKNOWN_AXIS)  # transposed, or not a 2-d convolution
    stride = _pair(_arg(args, kwargs, 3, "stride"), 2, 1)
    padding = _pair(_arg(args, kwargs, 4, "padding"), 2, 0)
    dilation = _pair(_arg(args, kwargs, 5, "dilation"), 2, 1)
    return tuple(_window(axis, k, s, p, d) for axis, k, s, p, d in
                 zip(infos[0], w.shape[-2:], stride, padding, dilation))


def _pool_rf(max_pool: bool):
    def rule(args, kwargs, ins, outs, infos):
        x = args[0]
        n = x.dim() - 2
        kernel = _pair(_arg(args, kwargs, 1, "kernel_size"), n, 1)
        stride = _pair(_arg(args, kwargs, 2, "stride"), n, kernel)
        padding = _pair(_arg(args, kwargs, 3, "padding"), n, 0)
        dilation = _pair(_arg(args, kwargs, 4, "dilation"), n, 1) if max_pool else [1] * n
        if x.dim() < 3:
            return infos[0]
        return tuple(_window(axis, k, s, p, d) for axis, k, s, p, d in
                     zip(infos[0], kernel[-2:], stride[-2:], padding[-2:], dilation[-2:]))
    return rule


def _adaptive_axis(axis, n_in: int, n_out: int):
    if n_out == n_in:
        return axis
    if n_in % n_out == 0:  # equal, non-overlapping windows
        k = n_in // n_out
        return _window(axis, k, k, 0)
    return UNKNOWN_AXIS  # windows of different sizes: no single field


def _adaptive_rf(args, kwargs, ins, outs, infos):
    x, out = args[0], outs[0]
    if x.dim() < 3:
        return infos[0]
    return tuple(_adaptive_axis(axis, a, b) for axis, a, b in zip(infos[0], x.shape[-2:], out.shape[-2:]))


def _slice_rf(args, kwargs, ins, outs, infos):
    x = args[0]
    dim = _arg(args, kwargs, 1, "dim", 0)
    dim = dim + x.dim() if dim < 0 else dim
    if x.dim() < 4 or dim < x.dim() - 2:
        return infos[0]
    start = _arg(args, kwargs, 2, "start", None) or 0
    step = _arg(args, kwargs, 4, "step", 1) or 1
    if start < 0:
        start += x.shape[dim]
    axes = list(infos[0])
    rf, jump, first = axes[dim - (x.dim() - 2)]
    axes[dim - (x.dim() - 2)] = UNKNOWN_AXIS if rf is None else (rf, jump * step, first + start * jump)
    return tuple(axes)


def _pad_rf(args, kwargs, ins, outs, infos):
    x = args[0]
    pad = list(_arg(args, kwargs, 1, "pad", []))
    if x.dim() < 4:
        return infos[0]
    left = {1: pad[0] if len(pad) > 0 else 0, 0: pad[2] if len(pad) > 2 else 0}  # axis -> padding before
    axes = []
    for a, (rf, jump, start) in enumerate(infos[0]):
        axes.append(UNKNOWN_AXIS if rf is None else (rf, jump, start - left[a] * jump))
    return tuple(axes)


# --- costs ------------------------------------------------------------------------------------------------------
def _conv_cost(args, kwargs, ins, outs):
    x, w = args[0], args[1]
    per_output = math.prod(w.shape[1:])  # C_in/groups * kh * kw
    if _arg(args, kwargs, 6, "transposed", False):
        macs = x.numel() * per_output  # every input element meets C_out/groups * kh * kw weights
    else:
        macs = outs[0].numel() * per_output
    return macs, 2 * macs


def _matmul_cost(operand: int):
    def cost(args, kwargs, ins, outs):
        macs = outs[0].numel() * args[operand].shape[-1]
        return macs, 2 * macs
    return cost


def _per_output(factor: int):
    return lambda args, kwargs, ins, outs: (0, factor * outs[0].numel())


def _per_input(args, kwargs, ins, outs):
    return 0, ins[0].numel()


def _pool_cost(args, kwargs, ins, outs):
    x = args[0]
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size"), max(x.dim() - 2, 1), 1)
    return 0, math.prod(kernel) * outs[0].numel()


_FREE = {
    "view", "_unsafe_view", "_reshape_alias", "reshape", "expand", "permute", "transpose", "t", "squeeze",
    "unsqueeze", "slice", "select", "as_strided", "alias", "detach", "split", "split_with_sizes", "unbind",
    "narrow", "unfold", "chunk", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "fill", "zero",
    "scalar_tensor", "lift_fresh", "lift_fresh_copy", "clone", "copy", "_to_copy", "contiguous", "cat", "stack",
    "constant_pad_nd", "index", "index_select", "gather", "flip", "repeat", "roll", "expand_copy", "view_copy",
    "bernoulli", "rand", "randn", "rand_like", "randn_like", "randint", "randint_like", "uniform", "normal",
    "arange", "set", "resize", "_local_scalar_dense", "split_copy", "unsqueeze_copy", "squeeze_copy",
}
_NORM = {
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "_batch_norm_with_update", "_batch_norm_with_update_functional",
    "_batch_norm_no_update", "batch_norm", "native_layer_norm", "native_group_norm", "layer_norm", "group_norm",
}
_ACTIVATIONS = {
    "relu", "relu6", "tanh", "sigmoid", "hardtanh", "leaky_relu", "elu", "gelu", "silu", "softplus", "hardswish",
    "hardsigmoid", "mish", "threshold", "_softmax", "_log_softmax", "softmax", "log_softmax", "clamp", "clamp_min",
    "clamp_max", "prelu", "_prelu_kernel", "rrelu_with_noise", "celu", "selu", "glu", "log_sigmoid_forward",
}
_ELEMENTWISE = {
    "add", "sub", "rsub", "mul", "div", "pow", "neg", "abs", "sqrt", "rsqrt", "exp", "exp2", "log", "log1p",
    "log2", "reciprocal", "square", "maximum", "minimum", "where", "lt", "le", "gt", "ge", "eq", "ne",
    "logical_and", "logical_or", "logical_not", "sign", "floor", "ceil", "round", "trunc", "addcmul", "addcdiv",
    "lerp", "masked_fill", "native_dropout", "sin", "cos", "erf", "bitwise_and", "bitwise_or", "bitwise_not",
}
_REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean",
               "logsumexp", "norm", "linalg_vector_norm", "argmax", "argmin", "cumsum"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
          "avg_pool1d", "avg_pool2d", "avg_pool3d"}
_ADAPTIVE = {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool3d",
             "_adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d"}
_MATMUL = {"mm": 0, "bmm": 0, "mv": 0, "addmm": 1, "baddbmm": 1, "addmv": 1, "addbmm": 1}
_ALIASES = {"convolution": "conv", "_convolution": "conv", "_unsafe_view": "view", "constant_pad_nd": "pad",
            "max_pool2d_with_indices": "max_pool2d", "max_pool3d_with_indices": "max_pool3d",
            "_adaptive_avg_pool2d": "adaptive_avg_pool2d", "_adaptive_avg_pool3d": "adaptive_avg_pool3d",
            "native_dropout": "dropout", "_softmax": "softmax", "_log_softmax": "log_softmax",
            "native_layer_norm": "layer_norm", "native_group_norm": "group_norm"}


# What backward keeps of an op, as autograd's formulas do: "inputs", "output", "pair" (both operands of a
# product, none for a product with a number), "norm" (input and per-channel statistics), "maxpool" (input and
# int64 indices), "mask" (dropout's mask); ops not listed keep nothing (additions, views, concatenation, means).
_SAVES_OUTPUT = {"relu", "tanh", "sigmoid", "elu", "_softmax", "_log_softmax", "exp", "exp2", "sqrt", "rsqrt"}
_SAVES_NOTHING = {"add", "sub", "rsub", "neg", "lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or",
                  "logical_not", "sign", "floor", "ceil", "round", "trunc", "bitwise_and", "bitwise_or",
                  "bitwise_not", "sum", "mean"}


def _save_rule(base: str) -> str | None:
    if base in ("convolution", "_convolution") or base in _MATMUL:
        return "inputs"
    if base in _NORM:
        return "norm"
    if base in _POOLS or base in _ADAPTIVE:
        return "maxpool" if "max" in base else "inputs"
    if base == "native_dropout":
        return "mask"
    if base in ("mul", "div"):
        return "pair"
    if base in _SAVES_OUTPUT:
        return "output"
    if base in _SAVES_NOTHING or base in _FREE:
        return None
    return "inputs"  # other activations, element-wise maths, reductions like max, and unknown ops


def op_spec(func):
    """(display name, class or "free" or None for unknown, cost(args, kwargs, ins, outs), receptive-field rule,
    what backward keeps)."""
    raw = func._overloadpacket.__name__
    base = raw[:-1] if raw.endswith("_") and not raw.startswith("_") else raw
    name = "batch_norm" if base in _NORM and "batch" in base else _ALIASES.get(base, base)
    save = _save_rule(base)
    if base in ("convolution", "_convolution"):
        return name, "convolution", _conv_cost, _conv_rf, save
    if base in _MATMUL:
        return name, "linear", _matmul_cost(_MATMUL[base]), None, save
    if base in _NORM:
        return name, "normalisation", _per_output(2), None, save
    if base in _POOLS:
        return name, "pooling", _pool_cost, _pool_rf(base.startswith("max")), save
    if base in _ADAPTIVE:
        return name, "pooling", _per_input, _adaptive_rf, save
    if base in _ACTIVATIONS:
        return name, "activation", _per_output(1), None, save
    if base in _ELEMENTWISE:
        return name, "elementwise", _per_output(1), None, save
    if base in _REDUCTIONS:
        return name, "elementwise", _per_input, None, save
    if base in _FREE:
        rule = {"slice": _slice_rf, "constant_pad_nd": _pad_rf}.get(base)
        return name, "free", None, rule, save
    return raw, None, None, None, save


# --- fast path: common layers from their formulas ---------------------------------------------------------------
def _broadcast(args) -> tuple | None:
    """Broadcast shape and dtype of the arguments: floating, contiguous meta tensors of one dtype, and numbers;
    None for anything else (the op then runs its own meta kernel)."""
    shapes, dtype = [], None
    for a in args:
        if isinstance(a, Tensor):
            if a.device.type != "meta" or not a.is_floating_point() or not a.is_contiguous():
                return None
            if dtype is None:
                dtype = a.dtype
            elif a.dtype != dtype:
                return None
            shapes.append(a.shape)
        elif not isinstance(a, (int, float)) or isinstance(a, bool):
            return None
    if dtype is None:
        return None
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:  # torch.broadcast_shapes would import sympy (a third of a second) on first use
        for i, n in enumerate(shape, ndim - len(shape)):
            if n != 1:
                if out[i] not in (1, n):
                    return None
                out[i] = n
    return torch.Size(out), dtype


def _elementwise_shortcut(inplace: bool):
    def run(args, kwargs):
        if not isinstance(args[0], Tensor) or kwargs.get("alpha", 1) != 1 or len(kwargs) > ("alpha" in kwargs):
            return None
        result = _broadcast(args)
        if result is None:
            return None
        if inplace:
            return args[0] if result[0] == args[0].shape else None
        return torch.empty(result[0], dtype=result[1], device="meta")
    return run


def _cat_shortcut(args, kwargs):
    tensors, dim = args[0], (args[1] if len(args) > 1 else kwargs.get("dim", 0))
    if not tensors or any(not isinstance(t, Tensor) for t in tensors):
        return None
    first = tensors[0]
    dim = dim + first.dim() if dim < 0 else dim
    rest = [s for i, s in enumerate(first.shape) if i != dim]
    for t in tensors:
        if (t.device.type != "meta" or t.dtype != first.dtype or t.dim() != first.dim() or not t.is_contiguous()
                or [s for i, s in enumerate(t.shape) if i != dim] != rest):
            return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _stack_shortcut(args, kwargs):
    tensors, dim = args[0], (args[1] if len(args) > 1 else kwargs.get("dim", 0))
    if not tensors or any(not isinstance(t, Tensor) for t in tensors):
        return None
    first = tensors[0]
    if any(t.device.type != "meta" or t.dtype != first.dtype or t.shape != first.shape or not t.is_contiguous()
           for t in tensors):
        return None
    dim = dim + first.dim() + 1 if dim < 0 else dim
    shape = list(first.shape)
    shape.insert(dim, len(tensors))
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _pool_shortcut(dims: int, is_max: bool):
    """avg_pool2d/3d and max_pool2d_with_indices called as functions (their meta kernels import sympy)."""
    def run(args, kwargs):
        x = args[0]
        if (kwargs or not isinstance(x, Tensor) or x.dim() != dims + 2 or x.device.type != "meta"
                or not x.is_floating_point() or not x.is_contiguous()):
            return None
        kernel = _pair(args[1], dims, 1)
        stride = _pair(args[2] if len(args) > 2 else [], dims, kernel)
        padding = _pair(args[3] if len(args) > 3 else 0, dims, 0)
        dilation = _pair(args[4] if is_max and len(args) > 4 else 1, dims, 1)
        ceil = bool(args[5] if is_max and len(args) > 5 else (args[4] if not is_max and len(args) > 4 else False))
        if not (len(kernel) == len(stride) == len(padding) == len(dilation) == dims) or any(
                p > k // 2 for p, k in zip(padding, kernel)):
            return None
        size = [_out_size(n, k, s, p, d, ceil) for n, k, s, p, d in
                zip(x.shape[2:], kernel, stride, padding, dilation)]
        if min(size) < 1:
            return None
        out = torch.empty((*x.shape[:2], *size), dtype=x.dtype, device="meta")
        return (out, torch.empty(out.shape, dtype=torch.int64, device="meta")) if is_max else out
    return run


def _mean_shortcut(args, kwargs):
    x = args[0]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if (len(args) > 3 or kwargs.get("dtype") is not None or not dims or x.device.type != "meta"
            or not x.is_floating_point() or not x.is_contiguous()):
        return None
    dims = {d + x.dim() if d < 0 else d for d in dims}
    shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims]
    return torch.empty(shape, dtype=x.dtype, device="meta")


# Ops whose meta kernels run through Python references (~0.1 ms each), computed directly instead.
SHORTCUTS = {
    **{getattr(getattr(torch.ops.aten, op + inplace), overload): _elementwise_shortcut(inplace == "_")
       for op in ("add", "sub", "mul", "div") for overload in ("Tensor", "Scalar") for inplace in ("", "_")},
    **{getattr(torch.ops.aten, op + inplace).default: _elementwise_shortcut(inplace == "_")
       for op in ("relu", "tanh", "sigmoid", "neg") for inplace in ("", "_")},
    torch.ops.aten.pow.Tensor_Scalar: _elementwise_shortcut(False),
    torch.ops.aten.pow_.Scalar: _elementwise_shortcut(True),
    torch.ops.aten.cat.default: _cat_shortcut,
    torch.ops.aten.stack.default: _stack_shortcut,
    torch.ops.aten.avg_pool2d.default: _pool_shortcut(2, False),
    torch.ops.aten.avg_pool3d.default: _pool_shortcut(3, False),
    torch.ops.aten.max_pool2d_with_indices.default: _pool_shortcut(2, True),
    torch.ops.aten.mean.dim: _mean_shortcut,
}


def _plain(x, dims: int) -> bool:
    return isinstance(x, Tensor) and x.dim() == dims and x.device.type == "meta"


def _needs_grad(run, m: nn.Module, x: Tensor) -> bool:
    return run.training and torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in m._parameters.values() if p is not None))


def _fast_conv(run, m: nn.Conv2d, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if (x is None or not _plain(x, 4) or x.shape[1] != m.in_channels or m.padding_mode != "zeros"
            or isinstance(m.padding, str)):
        return type(m).forward(m, *args, **kwargs)
    n, _, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
    ho, wo = _out_size(h, kh, sh, ph, dh, False), _out_size(w, kw, sw, pw, dw, False)
    if ho < 1 or wo < 1:
        return type(m).forward(m, x)  # let torch raise its own error
    out = run._empty((n, m.out_channels, ho, wo), x, _needs_grad(run, m, x))
    macs = out.numel() * (m.in_channels // m.groups) * kh * kw
    info = run.info.get(id(x))
    if info is not None:
        info = (_window(info[0], kh, sh, ph, dh), _window(info[1], kw, sw, pw, dw))
    run._charge("convolution", macs, 2 * macs, x, out, info)
    return out


def _fast_linear(run, m: nn.Linear, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if x is None or not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] != m.in_features:
        return type(m).forward(m, *args, **kwargs)
    out = run._empty((*x.shape[:-1], m.out_features), x, _needs_grad(run, m, x))
    macs = out.numel() * m.in_features
    info = run.info.get(id(x))
    if info is not None and x.dim() >= 4:
        info = generic_rf([x], [out], [info], run.info)
    run._charge("linear", macs, 2 * macs, x, out, info)
    return out


def _fast_batch_norm(run, m: nn.BatchNorm2d, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if x is None or not _plain(x, 4) or x.shape[1] != m.num_features:
        return type(m).forward(m, *args, **kwargs)
    if m.training and x.numel() // x.shape[1] <= 1:
        return type(m).forward(m, x)  # torch's "expected more than 1 value per channel" error
    out = run._empty(x.shape, x, _needs_grad(run, m, x))
    flops = 2 * out.numel()
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        flops += 1  # num_batches_tracked += 1
    # The op also returns two per-channel statistics (in training, the batch mean and inverse std backward keeps).
    aux = ((x.shape[1] * 4, x.shape[1]),) * 2
    run._charge("normalisation", 0, flops, x, out, run.info.get(id(x)), aux, save="norm")
    return out


def _fast_relu(run, m: nn.ReLU, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if x is None or not isinstance(x, Tensor) or x.device.type != "meta":
        return type(m).forward(m, *args, **kwargs)
    out = x if m.inplace else run._empty(x.shape, x, run.training and x.requires_grad)
    run._charge("activation", 0, x.numel(), x, out, run.info.get(id(x)), save="output")
    return out


def _fast_pool(run, m: nn.MaxPool2d | nn.AvgPool2d, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    is_max = isinstance(m, nn.MaxPool2d)
    if x is None or not _plain(x, 4) or (is_max and m.return_indices):
        return type(m).forward(m, *args, **kwargs)
    kernel, stride, padding = _pair(m.kernel_size, 2, 1), _pair(m.stride, 2, m.kernel_size), _pair(m.padding, 2, 0)
    dilation = _pair(m.dilation, 2, 1) if is_max else [1, 1]
    n, c, h, w = x.shape
    size = [_out_size(a, k, s, p, d, m.ceil_mode) for a, k, s, p, d in zip((h, w), kernel, stride, padding, dilation)]
    if min(size) < 1 or any(p > k // 2 for p, k in zip(padding, kernel)):
        return type(m).forward(m, x)  # let torch raise its own error
    out = run._empty((n, c, *size), x, run.training and x.requires_grad)
    aux = ((out.numel() * 8, out.numel()),) if is_max else ()  # int64 indices of the maxima
    info = run.info.get(id(x))
    if info is not None:
        info = tuple(_window(axis, k, s, p, d) for axis, k, s, p, d in zip(info, kernel, stride, padding, dilation))
    run._charge("pooling", 0, kernel[0] * kernel[1] * out.numel(), x, out, info, aux,
                save="maxpool" if is_max else "inputs")
    return out


def _fast_adaptive_avg(run, m: nn.AdaptiveAvgPool2d, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if x is None or not _plain(x, 4):
        return type(m).forward(m, *args, **kwargs)
    size = _pair(m.output_size, 2, None)
    size = [s if s is not None else a for s, a in zip(size, x.shape[-2:])]
    out = run._empty((*x.shape[:2], *size), x, run.training and x.requires_grad)
    info = run.info.get(id(x))
    if info is not None:
        info = tuple(_adaptive_axis(axis, a, b) for axis, a, b in zip(info, x.shape[-2:], size))
    global_pool = all(n == 1 for n in size)  # runs as a mean, whose backward needs only the input's shape
    run._charge("pooling", 0, x.numel(), x, out, info, save=None if global_pool else "inputs")
    return out


def _fast_identity(run, m: nn.Module, *args, **kwargs):
    """Identity, and Dropout in eval mode: the input itself, no op."""
    if isinstance(m, nn.Dropout) and m.training and m.p > 0:
        return type(m).forward(m, *args, **kwargs)
    if len(args) == 1 and not kwargs:
        return args[0]
    return type(m).forward(m, *args, **kwargs)


FAST = {
    nn.Conv2d: _fast_conv, nn.Linear: _fast_linear, nn.BatchNorm2d: _fast_batch_norm, nn.ReLU: _fast_relu,
    nn.MaxPool2d: _fast_pool, nn.AvgPool2d: _fast_pool, nn.AdaptiveAvgPool2d: _fast_adaptive_avg,
    nn.Identity: _fast_identity, nn.Dropout: _fast_identity,
}

