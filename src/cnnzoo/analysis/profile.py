"""Per-layer profile of a network, computed on the meta device: shapes only, no memory, no arithmetic.

`profile(model_or_name, input_size, batch_size, mode)` runs one forward pass on meta tensors and returns a
`Profile`: one `LayerRecord` per leaf module (all its calls aggregated) and one per functional operation that
a non-leaf module runs itself (the residual addition of a block, the concatenation of an inception module),
named after that module. A real model runs with meta copies swapped in for its parameters and buffers; its own
tensors and its train/eval flags are put back afterwards, also when the forward fails.

The pass itself is `cnnzoo.analysis.trace`: a graph of nodes, one per call of a leaf module and one per
functional op of a non-leaf module; each record here sums a module's calls (or a module's calls of one op).
The costs, shapes and receptive fields of each op are the rules of `cnnzoo.analysis.rules`.

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
import math
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from cnnzoo.analysis.counting import meta_model
from cnnzoo.analysis.rules import MAX_TENSOR_BYTES, OP_CLASSES, TooLarge, report_field, suspended
from cnnzoo.analysis.trace import Node, Trace, run_trace
from cnnzoo.checks import input_check

__all__ = ["profile", "Profile", "LayerRecord", "ProfileError", "SizeError", "OP_CLASSES", "MAX_TENSOR_BYTES"]

MODES = ("train", "eval")


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
    trace: Trace | None = field(default=None, repr=False, compare=False)  # the pass's graph, read by diagrams

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
                rf, jump, start = report_field(info)
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
        check = input_check(model)
        name = check.model_name if check is not None else type(model).__name__
    else:
        raise TypeError(f"profile expects a model name or an nn.Module, got {type(model_or_name).__name__}")
    if measure and mode != "eval":
        raise ValueError("measure compares the peak of an inference pass; profile with mode='eval'")
    input_size = _input_size(model, input_size)
    try:
        result = _records(run_trace(model, name, real, input_size, batch_size, mode))
    except TooLarge as err:
        raise _size_error(err, model, name, real, input_size, batch_size, mode) from None
    if measure:
        from cnnzoo.analysis.measure import measured_inference_peak, refuse_beyond_memory
        from cnnzoo.registry import create_model

        first = next(model.parameters(), None) if real else None
        refuse_beyond_memory(result, first.device if first is not None else torch.device("cpu"))
        with torch.random.fork_rng(devices=[]):  # building and the random input leave the caller's RNG alone
            target = model if real else create_model(name)
            check = input_check(target)
            with suspended([check] if check is not None else []):
                peak = measured_inference_peak(target, input_size, batch_size)
        result = dataclasses.replace(result, measured_peak_bytes=peak)
    return result


def _size_error(err: TooLarge, model, name, real, input_size, batch_size, mode) -> SizeError:
    """Say which tensor passes the limit, and the largest batch that keeps every tensor of the pass under it
    (found from a pass at batch 1: activations grow with the batch)."""
    limit = "more than a tensor can hold (2**63 - 1 bytes: PyTorch's sizes are int64)"
    largest = None
    if batch_size > 1:
        try:
            one = run_trace(model, name, real, input_size, 1, mode)
            if one.failure is None:  # else the pass fails at batch 1 for another reason (batch norm in training):
                largest = one.largest_tensor_bytes  # no advice
        except TooLarge as at_one:
            err, batch_size = at_one, 1
    c, h, w = input_size
    if batch_size == 1:
        return SizeError(f"{name}: ", ("input", input_size), f" is too large at any batch: {_overflow(err)}, "
                         f"{limit}; use a smaller ", ("input", None))
    if largest is None:
        return SizeError(f"{name}: ", ("batch", batch_size), f" is too large for input {c}x{h}x{w}: "
                         f"{_overflow(err)}, {limit}; use a smaller ", ("batch", None), " or ", ("input", None))
    return SizeError(f"{name}: ", ("batch", batch_size), f" is too large for input {c}x{h}x{w}: {_overflow(err)}, "
                     f"{limit}; use ", ("batch", MAX_TENSOR_BYTES // largest), " or less")


def _overflow(err: TooLarge) -> str:
    if err.shape is None:
        return f"{err.where} would make a tensor that does not fit ({err.detail})"
    nbytes = math.prod(err.shape) * err.dtype.itemsize
    return (f"{err.where} would make a {'x'.join(map(str, err.shape))} {str(err.dtype).replace('torch.', '')} "
            f"tensor ({nbytes:.3g} bytes)")


def _input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    if input_size is None:
        check = input_check(model)
        if check is None:
            raise ValueError("input_size is required for a model that cnnzoo.create_model did not build, "
                             "e.g. input_size=(3, 224, 224)")
        return (check.in_chans, *check.native_hw)
    if (not isinstance(input_size, (tuple, list)) or len(input_size) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in input_size)):
        raise ValueError(f"input_size must be (C, H, W), three positive ints, got {input_size!r}")
    return tuple(input_size)



def _records(trace: Trace) -> Profile:
    """The profile of a trace: one record per leaf module (its calls summed), per module and op it runs itself,
    and per module that owns parameters (also one that did not run in this mode: aux heads in eval). Raises
    ProfileError, holding the records so far, when the trace's forward failed."""
    groups: dict[tuple[str, str | None], list[Node]] = {}
    for node in trace.nodes:
        if node.kind != "input":
            groups.setdefault((node.path, node.type if node.kind == "op" else None), []).append(node)
    for path, (count, _) in trace.owned.items():
        if count and (path, None) not in groups:
            groups[(path, None)] = []
    layers = tuple(_record(path, op, nodes, trace) for (path, op), nodes in groups.items())
    result = Profile(
        model=trace.model, input_size=trace.input_size, batch_size=trace.batch_size, mode=trace.mode,
        layers=layers, uncounted_ops=trace.uncounted_ops, param_bytes=trace.param_bytes,
        trainable_param_bytes=trace.trainable_param_bytes, buffer_bytes=trace.buffer_bytes,
        input_bytes=trace.input_bytes, peak_activation_bytes=trace.peak_activation_bytes,
        saved_activation_bytes=trace.saved_activation_bytes, complete=trace.failure is None,
        modules=trace.modules, trace=trace,
    )
    if trace.failure is not None:
        path, shapes = trace.failed_at
        types = trace.module_types
        where = f"layer '{path}' ({types.get(path, '?')})" if path else f"the model ({types.get('', '?')})"
        shown = ", ".join(str(s) for s in shapes) or "none"
        failure = trace.failure
        raise ProfileError(f"{trace.model}: the forward failed in {where} on input shape(s) {shown}: "
                           f"{type(failure).__name__}: {failure}", result, path, shapes) from failure
    return result


def _record(path: str, op: str | None, nodes: list[Node], trace: Trace) -> LayerRecord:
    parts = len(path.split(".")) if path else 0
    params, trainable = trace.owned[path] if op is None else (0, 0)
    last = nodes[-1] if nodes else None
    flops = dict.fromkeys(OP_CLASSES, 0)
    macs = elements = nbytes = 0
    uncounted: set[str] = set()
    for n in nodes:
        macs += n.macs
        elements += n.elements
        nbytes += n.bytes
        for c, v in n.flops.items():
            flops[c] += v
        uncounted |= n.uncounted
    rf, jump, start = report_field(last.info if last is not None else None)
    record = object.__new__(LayerRecord)  # a frozen dataclass's __init__ sets each of 19 fields through
    # object.__setattr__; filling __dict__ at once is 5x faster, which counts on nets with 1,000s of layers
    record.__dict__.update(
        name=path, type=op if op is not None else trace.module_types.get(path, ""), depth=parts + (op is not None),
        input_shape=last.input_shape if last is not None else None,
        output_shape=last.output_shape if last is not None else None, params=params, trainable_params=trainable,
        macs=macs, flops=sum(flops.values()), flops_by_class=flops, activation_elements=elements,
        activation_bytes=nbytes, receptive_field=rf, jump=jump, start=start, calls=len(nodes),
        uncounted_ops=tuple(sorted(uncounted)) if uncounted else (),
    )
    return record
