"""Per-layer profile of a network, computed on the meta device: shapes only, no memory, no arithmetic.

`profile(model_or_name, input_size, batch_size, mode)` runs one forward pass on meta tensors and returns a
`Profile`: one `LayerRecord` per leaf module (all its calls aggregated) and one per functional operation that
a non-leaf module runs itself (the residual addition of a block, the concatenation of an inception module),
named after that module. A real model runs with meta copies swapped in for its parameters and buffers; its own
tensors and its train/eval flags are put back afterwards, also when the forward fails.

How it sees the network: forward pre/post hooks keep the stack of modules being executed, and a
`TorchDispatchMode` sees every aten operation and charges it to the innermost one. Common layers (Conv2d,
BatchNorm2d, ReLU, pooling, Linear, Dropout in eval, Identity) skip the meta kernels: during the run their
forward is replaced by the formula for their output shape and cost (the meta convolution kernel runs through
Python and is the slow part of a meta forward). `tests/test_profile.py` checks that both routes agree.

Conventions (all figures are for the whole batch, in the mode profiled):
- MACs count the multiply-accumulates of convolutions (N * C_out * H_out * W_out * C_in/groups * kh * kw) and
  of matrix products (linear layers); their FLOPs are 2 * MACs. Bias additions are not counted (as the papers
  and `torch.utils.flop_counter.FlopCounterMode` do).
- Other operations count element operations as FLOPs: normalisation 2 per output element (scale and shift);
  pooling the window size per output element, adaptive pooling one per input element; activations one per
  output element; element-wise arithmetic one per output element and reductions one per input element.
  Every op inside a normalisation, pooling or activation layer is classed with that layer (local response
  norm runs as several ops; an adaptive pool to 1x1 may run as a mean).
- Views, allocation, random fills and pure data movement (cat, stack, pad, index, clone) cost no FLOPs; the
  tensors they create are still activations. Any other op is listed in `uncounted_ops`, never counted as zero.
- Activations (per record) are the tensors the forward creates (in-place ops and views create none). In
  training mode the auxiliary outputs kept for backward (batch-norm statistics, max-pool indices, dropout
  masks) are included.
- A training step costs `train_flops`: forward plus backward, the backward taken as twice the forward for
  convolutions and linear layers (gradient for the input and for the weights) and once the forward for the
  rest (gradient for the input only).
- Memory: parameters, buffers, gradients (trainable parameters), SGD momentum (one buffer per trainable
  parameter). `saved_activation_bytes` is what backward keeps, found with autograd's rules per op (a
  convolution keeps its input, ReLU its output, an addition nothing, ...; each storage once); it equals the
  tensors autograd saves in a real forward (tests). `train_memory_bytes` is all of those together.
  `inference_peak_bytes` is parameters and buffers plus the largest set of tensors alive at once during the
  forward: the input and outputs throughout, a module's arguments until it returns, other tensors until their
  last use; max-pool indices during the op (CUDA computes them even in inference). Convolution workspaces
  (cuDNN's can be as large as the activations) are not included.
- Receptive fields are tracked per tensor and per spatial axis as (size, jump, start): the input pixel grid
  is (1, 1, 0.5); a convolution or pooling window k (dilation d, stride s, padding p) gives size + (k-1)*d*jump,
  jump * s, start + ((k-1)/2*d - p) * jump. Where tensors meet (add, cat, stack) the field is the largest of
  the inputs, None when their jumps differ; a global pool or a flatten covers the whole input map; strided
  slicing multiplies the jump and padding shifts the start. A record reports the larger axis.
- Sizes: no tensor of the pass may hold more than 2**63 - 1 bytes (PyTorch keeps sizes as int64). The input is
  checked before torch sees its sizes, every other tensor as the pass makes it; beyond the limit `profile` raises
  a `SizeError` naming the tensor and the largest batch that fits. The model's own input check runs after a
  failed pass (for its message), not before it: it probes the size with a forward of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import functools
import math
from collections import defaultdict
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnzoo.analysis.counting import NORM_LAYERS, meta_model
from cnnzoo.checks import InputCheck

__all__ = ["profile", "Profile", "LayerRecord", "ProfileError", "SizeError", "OP_CLASSES", "MAX_TENSOR_BYTES"]

OP_CLASSES = ("convolution", "linear", "normalisation", "pooling", "activation", "elementwise")
MODES = ("train", "eval")

MAX_TENSOR_BYTES = 2**63 - 1  # PyTorch keeps a tensor's size in bytes as an int64: no tensor holds more
_MISSING = object()
_UNKNOWN_AXIS = (None, None, None)
_INPUT_INFO = ((1, 1, 0.5), (1, 1, 0.5))  # (receptive field, jump, start) per spatial axis (height, width)


@dataclass(frozen=True)
class LayerRecord:
    """One row of a profile: a leaf module (all its calls), a functional op of a module, or a roll-up."""

    name: str  # module path, "layer1.0.conv1"; a functional op carries the path of the module running it
    type: str  # module class ("Conv2d") or op ("add", "cat")
    depth: int  # nesting level: "layer1.0.conv1" and an op run by "layer1.0" are both 3
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None  # None: the module did not run in this mode (e.g. aux heads in eval)
    params: int  # each tensor counted once, with the module that owns it
    trainable_params: int
    macs: int  # convolution and matrix-product multiply-accumulates, whole batch
    flops: int  # 2 * macs plus the element ops of every other class
    flops_by_class: dict[str, int]  # every class of OP_CLASSES
    activation_elements: int
    activation_bytes: int
    receptive_field: int | None  # pixels of the input seen by one output unit (larger axis); None if unknown
    jump: int | None  # distance in input pixels between neighbouring output units (effective stride)
    start: float | None  # centre of the first output unit's field, in input pixels
    calls: int = 1
    uncounted_ops: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["flops_by_class"] = dict(self.flops_by_class)
        for key in ("input_shape", "output_shape", "uncounted_ops"):
            d[key] = None if d[key] is None else list(d[key])
        return d


@dataclass(frozen=True)
class Profile:
    """Per-layer records and totals of one forward pass at a given input size, batch size and mode."""

    model: str
    input_size: tuple[int, int, int]
    batch_size: int
    mode: str
    layers: tuple[LayerRecord, ...]
    uncounted_ops: tuple[str, ...]  # ops seen but not counted, by name
    param_bytes: int
    trainable_param_bytes: int
    buffer_bytes: int
    input_bytes: int
    peak_activation_bytes: int  # largest set of tensors alive at once in the forward (input included)
    saved_activation_bytes: int  # what backward keeps: activations (input included), statistics, indices
    complete: bool = True  # False: the forward failed; the records stop at the failing layer
    measured_peak_bytes: int | None = None  # a real inference pass's peak, when profiled with measure=True
    modules: dict[str, tuple] = field(default_factory=dict, repr=False, compare=False)  # path -> (type, in, out,
    # receptive field, calls) of every module, for roll-ups

    # Totals: sums over the records, so any roll-up of them sums to the same.
    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.layers)

    @property
    def flops_by_class(self) -> dict[str, int]:
        return {c: sum(r.flops_by_class[c] for r in self.layers) for c in OP_CLASSES}

    @property
    def train_flops(self) -> int:
        """Forward and backward: 3x the forward for convolutions and linear layers, 2x for every other op."""
        weighted = self.flops_by_class["convolution"] + self.flops_by_class["linear"]
        return 3 * weighted + 2 * (self.flops - weighted)

    @property
    def activation_elements(self) -> int:
        return sum(r.activation_elements for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.layers)

    @property
    def grad_bytes(self) -> int:
        return self.trainable_param_bytes

    @property
    def optimizer_bytes(self) -> int:
        """SGD with momentum: one momentum buffer per trainable parameter."""
        return self.trainable_param_bytes

    @property
    def train_memory_bytes(self) -> int:
        """Parameters, buffers, gradients, momentum, and what the forward keeps for backward."""
        return (self.param_bytes + self.buffer_bytes + self.grad_bytes + self.optimizer_bytes
                + self.saved_activation_bytes)

    @property
    def inference_peak_bytes(self) -> int:
        """Parameters and buffers plus the largest live set of the forward (each tensor freed after last use)."""
        return self.param_bytes + self.buffer_bytes + self.peak_activation_bytes

    def totals(self) -> dict:
        return {
            "params": self.params, "trainable_params": self.trainable_params, "macs": self.macs,
            "flops": self.flops, "flops_by_class": self.flops_by_class, "train_flops": self.train_flops,
            "activation_elements": self.activation_elements, "activation_bytes": self.activation_bytes,
            "input_bytes": self.input_bytes, "saved_activation_bytes": self.saved_activation_bytes,
            "param_bytes": self.param_bytes, "buffer_bytes": self.buffer_bytes,
            "grad_bytes": self.grad_bytes, "optimizer_bytes": self.optimizer_bytes,
            "train_memory_bytes": self.train_memory_bytes, "inference_peak_bytes": self.inference_peak_bytes,
            "measured_peak_bytes": self.measured_peak_bytes,
        }

    def rollup(self, depth: int) -> tuple[LayerRecord, ...]:
        """Records grouped by the first `depth` parts of their module path; sums equal the totals.

        A group is named after its module and shows that module's output and receptive field; records that
        are shallower than `depth` stay as they are. depth 0 gives one row for the whole model.
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be a non-negative int, got {depth!r}")
        groups: dict[object, list[LayerRecord]] = {}
        for r in self.layers:
            parts = r.name.split(".") if r.name else []
            key = ".".join(parts[:depth]) if len(parts) >= depth else (r.name, r.type, id(r))
            groups.setdefault(key, []).append(r)
        out = []
        for key, records in groups.items():
            own = len(records) == 1 and records[0].name == key and records[0].depth == len(key.split(".")) \
                if isinstance(key, str) and key else False
            if not isinstance(key, str) or own:  # shallower than depth, or a module's own record at that depth
                out.extend(records)
                continue
            type_name, in_shape, out_shape, info, calls = self.modules.get(key, ("", None, None, None, 0))
            if out_shape is None:  # a container that never runs as a module (ModuleList): its last record
                ran = [r for r in records if r.output_shape is not None]
                in_shape = ran[0].input_shape if ran else None
                out_shape = ran[-1].output_shape if ran else None
                rf, jump, start = (ran[-1].receptive_field, ran[-1].jump, ran[-1].start) if ran else (None,) * 3
            else:
                rf, jump, start = _report(info)
            out.append(LayerRecord(
                name=key, type=type_name, depth=depth, input_shape=in_shape, output_shape=out_shape,
                params=sum(r.params for r in records), trainable_params=sum(r.trainable_params for r in records),
                macs=sum(r.macs for r in records), flops=sum(r.flops for r in records),
                flops_by_class={c: sum(r.flops_by_class[c] for r in records) for c in OP_CLASSES},
                activation_elements=sum(r.activation_elements for r in records),
                activation_bytes=sum(r.activation_bytes for r in records),
                receptive_field=rf, jump=jump, start=start, calls=calls or max(r.calls for r in records),
                uncounted_ops=tuple(sorted({op for r in records for op in r.uncounted_ops})),
            ))
        return tuple(out)


class ProfileError(RuntimeError):
    """The forward failed partway; `profile` holds the records up to the failing layer."""

    def __init__(self, message: str, profile: Profile, layer: str, input_shapes: list):
        super().__init__(message)
        self.profile = profile
        self.layer = layer
        self.input_shapes = input_shapes


class SizeError(ValueError):
    """A batch or input size too large to profile or to run: says what is too large, the limit, and which
    arguments to change. The message names Python's arguments (`batch_size=`); `worded(spell)` gives it in
    another interface's terms (the CLI's `--batch`)."""

    def __init__(self, *parts):
        self.parts = parts  # text, and (argument, value or None) pairs; argument is "batch" or "input"
        super().__init__(self.worded(python_argument))

    def worded(self, spell) -> str:
        """The message with each argument written by `spell(argument, value)`."""
        return "".join(p if isinstance(p, str) else spell(*p) for p in self.parts)


def python_argument(argument: str, value=None) -> str:
    """How the Python API spells an argument of a SizeError: batch_size=8, input_size=(3, 64, 64)."""
    name = {"batch": "batch_size", "input": "input_size"}[argument]
    return f"{name}=" if value is None else f"{name}={value!r}"


class _TooLarge(Exception):
    """Raised inside a run where a tensor would pass MAX_TENSOR_BYTES; `profile` turns it into a SizeError."""

    def __init__(self, shape: tuple[int, ...] | None, dtype: torch.dtype | None, detail: str = ""):
        super().__init__(detail or f"{shape}")
        self.shape, self.dtype, self.detail = shape, dtype, detail
        self.where = "the input"


def _check_fits(shape, dtype: torch.dtype) -> None:
    if math.prod(shape) * dtype.itemsize > MAX_TENSOR_BYTES:
        raise _TooLarge(tuple(shape), dtype)


def profile(model_or_name: nn.Module | str, input_size: tuple[int, int, int] | None = None, batch_size: int = 1,
            mode: str = "eval", measure: bool = False) -> Profile:
    """Profile a registered model (by name, built on the meta device) or any `nn.Module`, on the meta device.

    Args:
        input_size: (C, H, W); default the model card's native input (required for a model that
            `cnnzoo.create_model` did not build).
        batch_size: the batch the figures are computed for.
        mode: "eval" (an inference pass) or "train" (a training step's forward: dropout, batch statistics,
            what backward keeps).
        measure: also run one inference pass for real (a model given by name is built on the CPU) and set
            `measured_peak_bytes` beside the estimate `inference_peak_bytes` (see `cnnzoo.analysis.measure`).

    Raises:
        SizeError (a ValueError): a tensor of the pass would hold more than `MAX_TENSOR_BYTES` (PyTorch's sizes
            are int64), or, with `measure`, the estimated peak is more than the device has available; it names
            the largest `batch_size=` that fits, or asks for a smaller `input_size=`.
    """
    with _gc_paused():
        return _profile(model_or_name, input_size, batch_size, mode, measure)


@contextlib.contextmanager
def _gc_paused():
    """A profile allocates thousands of small objects that all live until it returns; the cyclic collector would
    rescan them again and again (a third of the time on deep nets). Nothing here makes cycles worth collecting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _profile(model_or_name, input_size, batch_size, mode, measure) -> Profile:
    if mode not in MODES:
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(model_or_name, str):
        from cnnzoo.registry import model_card

        name = model_card(model_or_name).name
        model = meta_model(name)  # no memory, no arithmetic
        real = False
    elif isinstance(model_or_name, nn.Module):
        model, real = model_or_name, True
        check = _input_check(model)
        name = check.model_name if check is not None else type(model).__name__
    else:
        raise TypeError(f"profile expects a model name or an nn.Module, got {type(model_or_name).__name__}")
    if measure and mode != "eval":
        raise ValueError("measure compares the peak of an inference pass; profile with mode='eval'")
    input_size = _input_size(model, input_size)
    try:
        result = _Run(model, name, real, input_size, batch_size, mode).run()
    except _TooLarge as err:
        raise _size_error(err, model, name, real, input_size, batch_size, mode) from None
    if measure:
        from cnnzoo.analysis.measure import measured_inference_peak, refuse_beyond_memory
        from cnnzoo.registry import create_model

        first = next(model.parameters(), None) if real else None
        refuse_beyond_memory(result, first.device if first is not None else torch.device("cpu"))
        with torch.random.fork_rng(devices=[]):  # building and the random input leave the caller's RNG alone
            target = model if real else create_model(name)
            check = _input_check(target)
            with _suspended([check] if check is not None else []):
                peak = measured_inference_peak(target, input_size, batch_size)
        result = dataclasses.replace(result, measured_peak_bytes=peak)
    return result


def _size_error(err: _TooLarge, model, name, real, input_size, batch_size, mode) -> SizeError:
    """Say which tensor passes the limit, and the largest batch that keeps every tensor of the pass under it
    (found from a pass at batch 1: activations grow with the batch)."""
    limit = "more than a tensor can hold (2**63 - 1 bytes: PyTorch's sizes are int64)"
    largest = None
    if batch_size > 1:
        one = _Run(model, name, real, input_size, 1, mode)
        try:
            one.run()
            largest = max(entry[0] for entry in one.live.values())
        except _TooLarge as at_one:
            err, batch_size = at_one, 1
        except ProfileError:  # the pass fails at batch 1 for another reason (batch norm in training): no advice
            pass
    c, h, w = input_size
    if batch_size == 1:
        return SizeError(f"{name}: ", ("input", input_size), f" is too large at any batch: {_overflow(err)}, "
                         f"{limit}; use a smaller ", ("input", None))
    if largest is None:
        return SizeError(f"{name}: ", ("batch", batch_size), f" is too large for input {c}x{h}x{w}: "
                         f"{_overflow(err)}, {limit}; use a smaller ", ("batch", None), " or ", ("input", None))
    return SizeError(f"{name}: ", ("batch", batch_size), f" is too large for input {c}x{h}x{w}: {_overflow(err)}, "
                     f"{limit}; use ", ("batch", MAX_TENSOR_BYTES // largest), " or less")


def _overflow(err: _TooLarge) -> str:
    if err.shape is None:
        return f"{err.where} would make a tensor that does not fit ({err.detail})"
    nbytes = math.prod(err.shape) * err.dtype.itemsize
    return (f"{err.where} would make a {'x'.join(map(str, err.shape))} {str(err.dtype).replace('torch.', '')} "
            f"tensor ({nbytes:.3g} bytes)")


def _input_check(model: nn.Module) -> InputCheck | None:
    return next((h for h in model._forward_pre_hooks.values() if isinstance(h, InputCheck)), None)


def _input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    if input_size is None:
        check = _input_check(model)
        if check is None:
            raise ValueError("input_size is required for a model that cnnzoo.create_model did not build, "
                             "e.g. input_size=(3, 224, 224)")
        return (check.in_chans, *check.native_hw)
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in input_size)):
        raise ValueError(f"input_size must be (C, H, W), three positive ints, got {input_size!r}")
    return tuple(input_size)


class _Record:
    """A record being accumulated during the run."""

    __slots__ = ("name", "type", "depth", "input_shape", "output_shape", "info", "params", "trainable", "macs",
                 "flops", "elements", "bytes", "calls", "uncounted", "layer_class", "functional")

    def __init__(self, name: str, type_name: str, depth: int, layer_class: str | None = None, functional: bool = False):
        self.name, self.type, self.depth, self.functional = name, type_name, depth, functional
        self.layer_class = layer_class
        self.input_shape = self.output_shape = self.info = None
        self.params = self.trainable = self.macs = self.elements = self.bytes = self.calls = 0
        self.flops = dict.fromkeys(OP_CLASSES, 0)
        self.uncounted: set[str] = set()

    def freeze(self) -> LayerRecord:
        rf, jump, start = _report(self.info)
        record = object.__new__(LayerRecord)  # a frozen dataclass's __init__ sets each of 19 fields through
        # object.__setattr__; filling __dict__ at once is 5x faster, which counts on nets with 1,000s of layers
        record.__dict__.update(
            name=self.name, type=self.type, depth=self.depth, input_shape=self.input_shape,
            output_shape=self.output_shape, params=self.params, trainable_params=self.trainable, macs=self.macs,
            flops=sum(self.flops.values()), flops_by_class=dict(self.flops), activation_elements=self.elements,
            activation_bytes=self.bytes, receptive_field=rf, jump=jump, start=start, calls=self.calls,
            uncounted_ops=tuple(sorted(self.uncounted)) if self.uncounted else (),
        )
        return record


class _Run(TorchDispatchMode):
    """One profiling pass: module hooks keep the stack of running modules, the dispatch mode sees every op."""

    fast = True  # compute common layers from formulas; False runs every op on meta (the tests compare both)

    def __init__(self, model: nn.Module, name: str, real: bool, input_size, batch_size: int, mode: str):
        super().__init__()
        self.model, self.name, self.real = model, name, real
        self.input_size, self.batch_size, self.mode = input_size, batch_size, mode
        self.training = mode == "train"
        self.stack: list[tuple] = []  # (path, is_leaf, record or None, args) of the modules running
        self.records: dict[tuple[str, str | None], _Record] = {}
        self.info: dict[int, tuple] = {}  # id(tensor) -> receptive field per axis
        self.keep: list[Tensor] = []  # every tensor seen stays alive, so ids and storage keys stay unique
        self.live: dict[int, list[int]] = {}  # storage key -> [bytes, first step, last step]
        self.state: set[int] = set()  # storage keys of parameters and buffers
        self.step = 0
        self.quiet = False  # the fast path's own allocations are not ops of the network
        self.uncounted: set[str] = set()
        self.module_out: dict[str, tuple] = {}
        self.specs: dict = {}
        self.aux_key = -1
        self.saved: set[int] = set()  # storage keys of the activations backward keeps
        self.saved_extra = 0  # bytes backward keeps besides those (batch-norm statistics, max-pool indices)

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Profiling runs eagerly. By default torch wraps __torch_dispatch__ to keep Dynamo out of it, which
        # imports torch._dynamo (about a second) on the first op.
        return False

    # --- setup ------------------------------------------------------------------------------------------------
    def run(self) -> Profile:
        model = self.model
        self.paths: dict[int, tuple] = {}
        self.owned: dict[str, tuple[int, int]] = {}  # path -> (params, trainable) it owns
        self.types: dict[str, str] = {}
        seen: set[int] = set()
        param_bytes = trainable_bytes = 0
        named = list(model.named_modules())
        for path, m in named:
            leaf = next(iter(m.children()), None) is None
            count = trainable = 0
            for p in m._parameters.values():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                count += p.numel()
                param_bytes += p.numel() * p.element_size()
                if p.requires_grad:
                    trainable += p.numel()
                    trainable_bytes += p.numel() * p.element_size()
            self.paths[id(m)] = (path, leaf, type(m).__name__, count > 0, _leaf_class(m) if leaf else None)
            self.owned[path] = (count, trainable)
            self.types[path] = type(m).__name__
        buffers = {id(b): b for _, m in named for b in m._buffers.values() if b is not None}
        buffer_bytes = sum(b.numel() * b.element_size() for b in buffers.values())

        dtype = next((p.dtype for _, m in named for p in m._parameters.values()
                      if p is not None and p.is_floating_point()), torch.get_default_dtype())
        _check_fits((self.batch_size, *self.input_size), dtype)  # before torch sees sizes that may not fit int64
        x = torch.empty(self.batch_size, *self.input_size, device="meta", dtype=dtype)
        input_bytes = x.numel() * x.element_size()

        saved_modes = [(m, m.training) for _, m in named]
        for _, m in named:  # the flags model.train() sets, set directly (one pass, no recursion)
            m.__dict__["training"] = self.training
        checks = [h for _, m in named for h in m._forward_pre_hooks.values() if isinstance(h, InputCheck)]
        top = _input_check(model)
        wrapped: list[tuple[nn.Module, object]] = []
        failure = out = None
        undo = []
        try:
            try:
                if self.real:
                    undo = self._swap_in_meta_state(named)
                for _, m in named:
                    for t in [*m._parameters.values(), *m._buffers.values()]:
                        if t is not None:
                            self.state.add(t.untyped_storage()._cdata)
                self._track_new(x, 0)
                self.info[id(x)] = _INPUT_INFO
                wrapped = self._wrap(named)
                with _suspended(checks), torch.random.fork_rng(devices=[]), \
                        torch.set_grad_enabled(self.training):
                    torch.manual_seed(0)  # stochastic depth and drop-path draw the same way on every profile
                    with self:
                        out = model(x)
                for t in [x, *_tensors(out)]:  # the caller holds the input and the outputs throughout
                    entry = self.live.get(t.untyped_storage()._cdata)
                    if entry is not None:
                        entry[2] = self.step + 1
            except Exception as err:  # noqa: BLE001  (re-raised below with the failing layer named)
                failure = err
            finally:
                for m, own in wrapped:
                    if own is _MISSING:
                        m.__dict__.pop("forward", None)
                    else:
                        m.__dict__["forward"] = own
                for store, key, t in reversed(undo):
                    store[key] = t
            # The model's own check, for its message on an input it cannot take; after the pass, not before:
            # it probes the size with a forward of its own, which would take a tensor too large to exist for
            # an input that does not fit.
            if top is not None and not isinstance(failure, _TooLarge) and (
                    failure is not None or any(t.numel() == 0 for t in _tensors(out))):
                self._model_check(top, model, x)
        finally:
            for m, training in saved_modes:
                m.__dict__["training"] = training
        if isinstance(failure, _TooLarge):
            path = self.stack[-1][0] if self.stack else ""
            failure.where = f"layer '{path}' ({self.types.get(path, '?')})" if path else "the model"
            raise failure

        # Modules that own parameters but did not run in this mode still carry them (aux heads in eval).
        for _, m in named:
            path, leaf, type_name, owns, layer_class = self.paths[id(m)]
            if owns and (path, None) not in self.records:
                self._record(path, None, type_name, layer_class)
        for (path, op), rec in self.records.items():
            if op is None:
                rec.params, rec.trainable = self.owned[path]
        result = Profile(
            model=self.name, input_size=self.input_size, batch_size=self.batch_size, mode=self.mode,
            layers=tuple(r.freeze() for r in self.records.values()), uncounted_ops=tuple(sorted(self.uncounted)),
            param_bytes=param_bytes, trainable_param_bytes=trainable_bytes, buffer_bytes=buffer_bytes,
            input_bytes=input_bytes, peak_activation_bytes=self._peak(), complete=failure is None,
            saved_activation_bytes=sum(self.live[k][0] for k in self.saved) + self.saved_extra,
            modules={p: (self.types.get(p, ""), *self.module_out.get(p, (None, None, None, 0))) for p in self.types},
        )
        if failure is not None:
            path, _, _, args = self.stack[-1] if self.stack else ("", False, None, (x,))
            shapes = _shapes(args)
            where = f"layer '{path}' ({self.types.get(path, '?')})" if path else f"the model ({type(model).__name__})"
            shown = ", ".join(str(s) for s in shapes) or "none"
            raise ProfileError(f"{self.name}: the forward failed in {where} on input shape(s) {shown}: "
                               f"{type(failure).__name__}: {failure}", result, path, shapes) from failure
        return result

    @staticmethod
    def _model_check(check: InputCheck, model: nn.Module, x: Tensor) -> None:
        try:
            check(model, (x,))
        except (ValueError, TypeError):
            raise
        except RuntimeError:  # its probe (a batch of 2) could not be built: report the pass's own failure
            pass

    @staticmethod
    def _swap_in_meta_state(named: list[tuple[str, nn.Module]]) -> list[tuple[dict, str, Tensor]]:
        """Put meta tensors in place of every parameter and buffer; returns what to put back. Direct dictionary swaps: `torch.func.functional_call` does the same by name, several times
        slower on deep nets."""
        copies: dict[tuple, Tensor] = {}  # meta tensors hold no data: one per (shape, dtype, requires_grad)
        undo = []
        for _, m in named:
            for store in (m._parameters, m._buffers):
                for key, t in store.items():
                    if t is None:
                        continue
                    kind = (t.shape, t.dtype, t.requires_grad)
                    copy = copies.get(kind)
                    if copy is None:  # a plain tensor, as functional_call would pass
                        copy = copies[kind] = torch.empty(t.shape, dtype=t.dtype, device="meta",
                                                          requires_grad=t.requires_grad)
                    undo.append((store, key, t))
                    store[key] = copy
        return undo

    # --- module hooks -----------------------------------------------------------------------------------------
    def _pre(self, entry, args):
        path, leaf, type_name, owns, layer_class = entry
        rec = None
        if leaf or owns:
            rec = self.records.get((path, None)) or self._record(path, None, type_name, layer_class)
            rec.calls += 1
            t = _first(args)
            rec.input_shape = tuple(t.shape) if t is not None else None
        self.stack.append((path, leaf, rec, args))

    def _post(self, args, output, single_op: bool):
        path, leaf, rec, _ = self.stack.pop()
        if not single_op:  # a formula's one op marks its input's last use itself
            for t in _tensors(args):  # Python holds a module's arguments until its forward returns
                live = self.live.get(t.untyped_storage()._cdata)
                if live is not None:
                    live[2] = max(live[2], self.step)
        t = _first(output)
        shape = tuple(t.shape) if t is not None else None
        info = self.info.get(id(t)) if t is not None else None
        a = _first(args)
        calls = self.module_out[path][3] + 1 if path in self.module_out else 1
        self.module_out[path] = (tuple(a.shape) if a is not None else None, shape, info, calls)
        if rec is not None:
            rec.output_shape, rec.info = shape, info

    def _record(self, path: str, op: str | None, type_name: str, layer_class: str | None = None) -> _Record:
        parts = len(path.split(".")) if path else 0
        rec = self.records[(path, op)] = _Record(path, type_name, parts + (op is not None), layer_class, op is not None)
        return rec

    def _target(self, op: str) -> _Record:
        """The record an op is charged to: the running leaf's, or the running module's record for that op."""
        if not self.stack:
            path, leaf, rec = "", False, None
        else:
            path, leaf, rec, _ = self.stack[-1]
        if leaf:
            return rec
        return self.records.get((path, op)) or self._record(path, op, op)

    # --- ops ----------------------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shortcut = _SHORTCUTS.get(func) if self.fast else None
        try:
            out = shortcut(args, kwargs) if shortcut is not None else None
            if out is None:
                out = func(*args, **kwargs)
        except RuntimeError as err:  # a meta kernel's "Storage size calculation overflowed"
            if "overflow" in str(err).lower():
                raise _TooLarge(None, None, str(err).splitlines()[0]) from err
            raise
        if not self.quiet:
            self._op(func, args, kwargs, out)
        return out

    def _op(self, func, args, kwargs, out):
        outs = _tensors(out)
        if not outs or outs[0].device.type != "meta":
            return  # not part of the network's tensors (a CPU draw for stochastic depth, say)
        spec = self.specs.get(func)
        if spec is None:
            spec = self.specs[func] = _spec(func)
        name, kind, cost, rf, save = spec
        ins = _tensors(args) + (_tensors(list(kwargs.values())) if kwargs else [])
        self.step += 1
        step = self.step
        for t in ins:
            entry = self.live.get(t.untyped_storage()._cdata)
            if entry is not None:
                entry[2] = step
        counted = outs if (len(outs) == 1 or self.training) else outs[:1]
        elements = nbytes = 0
        for t in counted:
            key = t.untyped_storage()._cdata
            entry = self.live.get(key)
            if entry is not None:
                entry[2] = step
            elif key not in self.state:
                n = self._track_new(t, step)
                elements += t.numel()
                nbytes += n
        if len(counted) < len(outs):  # in eval, auxiliary outputs (max-pool indices) exist only during the op
            for t in outs[len(counted):]:
                self._transient(t.numel() * t.element_size(), step)
        if save is not None:
            self._keep_for_backward(save, ins, outs)
        # Receptive fields.
        infos = [self.info[id(t)] for t in ins if id(t) in self.info]
        if infos:
            info = rf(args, kwargs, ins, outs, infos) if rf is not None else _generic_rf(ins, outs, infos, self.info)
            for t in outs:
                self.info[id(t)] = info
                self.keep.append(t)
        # Costs.
        if kind is None:  # unknown op
            rec = self._target(name)
            rec.uncounted.add(name)
            self.uncounted.add(name)
        elif kind == "free":
            if not nbytes:
                return
            rec = self._target(name)
        else:
            rec = self._target(name)
            macs, flops = cost(args, kwargs, ins, outs)
            rec.macs += macs
            rec.flops[rec.layer_class if rec.layer_class and kind not in ("convolution", "linear") else kind] += flops
        rec.elements += elements
        rec.bytes += nbytes
        if rec.functional:  # a functional op's own record: its latest output
            rec.calls += 1
            rec.output_shape = tuple(outs[0].shape)
            rec.input_shape = tuple(ins[0].shape) if ins else None
            rec.info = self.info.get(id(outs[0]))

    def _keep_for_backward(self, rule: str, ins: list[Tensor], outs: list[Tensor]) -> None:
        if rule == "output":
            chosen = outs[:1]
        elif rule == "mask":
            chosen = outs[1:]
        elif rule == "pair":  # a product with a number keeps nothing; else each operand whose partner needs a
            # gradient (in training, where requires_grad tells; dropout keeps its mask, not its input)
            if len(ins) != 2:
                chosen = ins if len(ins) > 2 else ()
            elif ins[0].requires_grad or ins[1].requires_grad:
                chosen = [t for t, other in ((ins[0], ins[1]), (ins[1], ins[0])) if other.requires_grad]
            else:
                chosen = ins
        else:
            chosen = ins[:1] if rule in ("norm", "maxpool") else ins
        for t in chosen:
            key = t.untyped_storage()._cdata
            if key in self.live:  # an activation (parameters and buffers are counted as such)
                self.saved.add(key)
        if rule == "norm" and ins and ins[0].dim() > 1:
            self.saved_extra += 2 * ins[0].shape[1] * 4  # batch mean and inverse std, float32
        elif rule == "maxpool":
            self.saved_extra += outs[0].numel() * 8  # int64 indices of the maxima

    def _transient(self, nbytes: int, step: int) -> None:
        self.live[self.aux_key] = [nbytes, step, step]
        self.aux_key -= 1

    def _track_new(self, t: Tensor, step: int) -> int:
        n = t.numel() * t.element_size()
        self.live[t.untyped_storage()._cdata] = [n, step, step]
        self.keep.append(t)
        return n

    def _peak(self) -> int:
        delta: dict[int, int] = defaultdict(int)
        for nbytes, first, last in self.live.values():
            delta[first] += nbytes
            delta[last + 1] -= nbytes
        running = peak = 0
        for step in sorted(delta):
            running += delta[step]
            peak = max(peak, running)
        return peak

    # --- fast path ----------------------------------------------------------------------------------------------
    def _wrap(self, named: list[tuple[str, nn.Module]]) -> list[tuple[nn.Module, object]]:
        """Give every module an instance `forward` that keeps the module stack around the real one (or around the
        formula of a common layer). Cheaper than global module hooks, which send every call of every module
        through nn.Module's slow path. Returns what to put back."""
        undo = []
        for _, m in named:
            own = m.__dict__.get("forward", _MISSING)
            formula = _FAST.get(type(m)) if self.fast and own is _MISSING else None
            forward = functools.partial(formula, self, m) if formula is not None else m.forward
            m.__dict__["forward"] = functools.partial(self._call, self.paths[id(m)], forward, formula is not None)
            # (what Module.__setattr__ would do for a value that is no parameter, buffer or module, minus its checks)
            undo.append((m, own))
        return undo

    def _call(self, entry: tuple, forward, single_op: bool, *args, **kwargs):
        self._pre(entry, args)
        out = forward(*args, **kwargs)
        self._post(args, out, single_op)
        return out

    def _empty(self, shape, like: Tensor, grad: bool) -> Tensor:
        _check_fits(shape, like.dtype)
        self.quiet = True
        try:
            with torch._C._DisableTorchDispatch():  # not an op of the network; and 40x faster outside the mode
                out = torch.empty(shape, device="meta", dtype=like.dtype)
                if grad:  # a non-leaf that requires grad, as the real op's output would be
                    out = out.requires_grad_().clone()
        finally:
            self.quiet = False
        return out

    def _charge(self, kind: str, macs: int, flops: int, x: Tensor, out: Tensor, info, aux: tuple[int, ...] = (),
                save: str | None = "inputs"):
        """Account one fast-path op: input x, output out (x itself for an in-place op), auxiliary outputs as
        (bytes, elements), and what backward keeps (a rule of _save_rule)."""
        self.step += 1
        step = self.step
        entry = self.live.get(x.untyped_storage()._cdata)
        if entry is not None:
            entry[2] = step
        rec = self.stack[-1][2]
        if out is not x:
            rec.bytes += self._track_new(out, step)
            rec.elements += out.numel()
        for nbytes, numel in aux:
            self._transient(nbytes, step)
            if self.training:  # kept for backward; in eval they exist only during the op
                rec.bytes += nbytes
                rec.elements += numel
        if save is not None:
            self._keep_for_backward(save, [x], [out])
        if info is not None:
            self.info[id(out)] = info
            self.keep.append(out)
        rec.macs += macs
        rec.flops[rec.layer_class if rec.layer_class and kind not in ("convolution", "linear") else kind] += flops


_POOL_LAYERS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd)


def _leaf_class(m: nn.Module) -> str | None:
    """The class every op of a leaf layer counts under (local response norm is several ops; an adaptive pool
    to 1x1 runs as a mean), or None to class each op by itself."""
    if isinstance(m, NORM_LAYERS):
        return "normalisation"
    if isinstance(m, _POOL_LAYERS):
        return "pooling"
    if type(m).__module__ == "torch.nn.modules.activation" and not isinstance(m, nn.MultiheadAttention):
        return "activation"
    return None


class _suspended:
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
def _tensors(value) -> list[Tensor]:
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
        return _tensors(list(value.values()))
    return []


def _first(value) -> Tensor | None:
    ts = _tensors(value)
    return ts[0] if ts else None


def _shapes(args) -> list:
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
def _report(info) -> tuple[int | None, int | None, float | None]:
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
        return _UNKNOWN_AXIS
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
            axes.append(_UNKNOWN_AXIS)
        else:
            axes.append(max(column, key=lambda c: c[0]))
    return tuple(axes)


def _spatial(t: Tensor):
    return tuple(t.shape[-2:]) if t.dim() >= 4 else None


def _generic_rf(ins, outs, infos, known):
    """Ops without a rule of their own: pass the field through where the map size is kept, cover the whole
    map where the spatial axes are reduced away (global pooling, flatten), unknown otherwise."""
    merged = _merge(infos)
    ref = next(t for t in ins if id(t) in known)
    before, after = _spatial(ref), _spatial(outs[0])
    if before is None or after == before:
        return merged
    if after is None or after == (1, 1):
        return _global(merged, before)
    return (_UNKNOWN_AXIS, _UNKNOWN_AXIS)


def _conv_rf(args, kwargs, ins, outs, infos):
    x, w = args[0], args[1]
    if _arg(args, kwargs, 6, "transposed", False) or x.dim() != 4:
        return (_UNKNOWN_AXIS, _UNKNOWN_AXIS)  # transposed, or not a 2-d convolution
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
    return _UNKNOWN_AXIS  # windows of different sizes: no single field


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
    axes[dim - (x.dim() - 2)] = _UNKNOWN_AXIS if rf is None else (rf, jump * step, first + start * jump)
    return tuple(axes)


def _pad_rf(args, kwargs, ins, outs, infos):
    x = args[0]
    pad = list(_arg(args, kwargs, 1, "pad", []))
    if x.dim() < 4:
        return infos[0]
    left = {1: pad[0] if len(pad) > 0 else 0, 0: pad[2] if len(pad) > 2 else 0}  # axis -> padding before
    axes = []
    for a, (rf, jump, start) in enumerate(infos[0]):
        axes.append(_UNKNOWN_AXIS if rf is None else (rf, jump, start - left[a] * jump))
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


def _spec(func):
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
_SHORTCUTS = {
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


def _out_size(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:  # the last window must start inside the input or its left padding
        out -= 1
    return out


def _needs_grad(run: _Run, m: nn.Module, x: Tensor) -> bool:
    return run.training and torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in m._parameters.values() if p is not None))


def _fast_conv(run: _Run, m: nn.Conv2d, *args, **kwargs):
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


def _fast_linear(run: _Run, m: nn.Linear, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if x is None or not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] != m.in_features:
        return type(m).forward(m, *args, **kwargs)
    out = run._empty((*x.shape[:-1], m.out_features), x, _needs_grad(run, m, x))
    macs = out.numel() * m.in_features
    info = run.info.get(id(x))
    if info is not None and x.dim() >= 4:
        info = _generic_rf([x], [out], [info], run.info)
    run._charge("linear", macs, 2 * macs, x, out, info)
    return out


def _fast_batch_norm(run: _Run, m: nn.BatchNorm2d, *args, **kwargs):
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


def _fast_relu(run: _Run, m: nn.ReLU, *args, **kwargs):
    x = args[0] if len(args) == 1 and not kwargs else None
    if x is None or not isinstance(x, Tensor) or x.device.type != "meta":
        return type(m).forward(m, *args, **kwargs)
    out = x if m.inplace else run._empty(x.shape, x, run.training and x.requires_grad)
    run._charge("activation", 0, x.numel(), x, out, run.info.get(id(x)), save="output")
    return out


def _fast_pool(run: _Run, m: nn.MaxPool2d | nn.AvgPool2d, *args, **kwargs):
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


def _fast_adaptive_avg(run: _Run, m: nn.AdaptiveAvgPool2d, *args, **kwargs):
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


def _fast_identity(run: _Run, m: nn.Module, *args, **kwargs):
    """Identity, and Dropout in eval mode: the input itself, no op."""
    if isinstance(m, nn.Dropout) and m.training and m.p > 0:
        return type(m).forward(m, *args, **kwargs)
    if len(args) == 1 and not kwargs:
        return args[0]
    return type(m).forward(m, *args, **kwargs)


_FAST = {
    nn.Conv2d: _fast_conv, nn.Linear: _fast_linear, nn.BatchNorm2d: _fast_batch_norm, nn.ReLU: _fast_relu,
    nn.MaxPool2d: _fast_pool, nn.AvgPool2d: _fast_pool, nn.AdaptiveAvgPool2d: _fast_adaptive_avg,
    nn.Identity: _fast_identity, nn.Dropout: _fast_identity,
}
