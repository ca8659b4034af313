"""The trace of one forward pass on the meta device: the graph of layers and operations a network runs, with
each one's shapes, cost and receptive field. `cnnzoo.analysis.profile` sums it into per-layer records;
`cnnzoo.report.diagram` draws it.

`trace(model_or_name, input_size, batch_size, mode)` returns a `Trace`: its `nodes` in the order they ran, one
per call of a leaf module (a convolution, a ReLU, a pooling layer) and one per functional operation a non-leaf
module runs itself (the residual addition of a block, the concatenation of an inception module), after the
input node; each node lists the nodes whose outputs it reads (`inputs`), so `edges` is the data flow. Views
(reshape, flatten, slicing without a copy) make no node: their result still comes from the node that made the
viewed tensor. A module that owns parameters but is no leaf is a `holder` node outside the graph (it carries its
parameters for the records); a module that did not run in this mode (auxiliary heads in eval) has no node.

How it sees the network: every module gets an instance `forward` that keeps the stack of modules being
executed, and a `TorchDispatchMode` sees every aten operation and charges it to the innermost one. Common layers
(Conv2d, BatchNorm2d, ReLU, pooling, Linear, Dropout in eval, Identity) skip the meta kernels: during the run
their forward is replaced by the formula for their output shape and cost (the meta convolution kernel runs
through Python and is the slow part of a meta forward); `tests/test_profile.py` checks that both routes agree.
A real model runs with meta copies swapped in for its parameters and buffers; its own tensors and its train/eval
flags are put back afterwards, also when the forward fails.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnzoo.analysis.rules import (FAST, INPUT_INFO, OP_CLASSES, SHORTCUTS, TooLarge, arg_shapes, check_fits,
                                   first_tensor, generic_rf, leaf_class, op_spec, report_field, suspended, tensors)
from cnnzoo.checks import InputCheck, input_check

__all__ = ["trace", "Trace", "Node", "NODE_KINDS"]

NODE_KINDS = ("input", "module", "op", "holder")
_MISSING = object()


class Node:
    """One call of a leaf module, one functional op of a non-leaf module, the input, or a parameter holder.

    `path` is the module path ("layer1.0.conv1"; a functional op carries the path of the module running it),
    `type` the module class ("Conv2d") or the op ("add", "cat"), `layer_class` the class every op of a leaf
    layer counts under (OP_CLASSES, or None to class each op by itself), `inputs` the indices of the nodes
    whose outputs this one reads (in argument order, each once), `attributes` the layer's hyper-parameters
    (kernel_size, stride, padding, groups, out_channels, out_features, p, ...). Costs are for this call and the
    whole batch: `macs`, `flops` per class, `elements` and `bytes` of the activations it creates; `params` and
    `trainable` are set on a module's records, not per call. `info` is the receptive field of its output per
    axis as (size, jump, start); `receptive_field` gives the larger axis's size.
    """

    __slots__ = ("index", "path", "type", "kind", "layer_class", "inputs", "attributes", "input_shape",
                 "output_shape", "info", "params", "trainable", "macs", "flops", "elements", "bytes", "uncounted")

    def __init__(self, index: int, path: str, type_name: str, kind: str, layer_class: str | None = None,
                 inputs: tuple[int, ...] = (), attributes: dict | None = None):
        self.index, self.path, self.type, self.kind = index, path, type_name, kind
        self.layer_class, self.inputs = layer_class, inputs
        self.attributes = attributes if attributes is not None else {}
        self.input_shape = self.output_shape = self.info = None
        self.params = self.trainable = self.macs = self.elements = self.bytes = 0
        self.flops = dict.fromkeys(OP_CLASSES, 0)
        self.uncounted: set[str] = set()

    @property
    def receptive_field(self) -> int | None:
        return report_field(self.info)[0]

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    def __repr__(self) -> str:
        return (f"Node({self.index}, {self.path or '<model>'!r}, {self.type}, {self.kind}, inputs={self.inputs}, "
                f"out={self.output_shape})")


@dataclass(frozen=True)
class Trace:
    """The nodes of one forward pass in the order they ran, with the run-wide figures a profile needs."""

    model: str
    input_size: tuple[int, int, int]
    batch_size: int
    mode: str
    nodes: tuple[Node, ...]  # nodes[0] is the input
    outputs: tuple[int, ...]  # the nodes whose outputs the model returns
    module_types: dict[str, str]  # path -> class name of every module ("" is the model)
    modules: dict[str, tuple]  # path -> (type, input shape, output shape, receptive field info, calls) of each
    # module that ran
    owned: dict[str, tuple[int, int]]  # path -> (parameters, trainable) that module owns itself
    uncounted_ops: tuple[str, ...]
    param_bytes: int
    trainable_param_bytes: int
    buffer_bytes: int
    input_bytes: int
    peak_activation_bytes: int
    saved_activation_bytes: int
    failure: BaseException | None = field(default=None, compare=False)  # the forward's error; nodes stop there
    largest_tensor_bytes: int = 0
    failed_at: tuple[str, list] | None = None  # (module path, input shapes) where it failed

    @property
    def edges(self) -> list[tuple[int, int]]:
        """(producer, consumer) node indices of the data flow, in the order the consumers ran."""
        return [(i, n.index) for n in self.nodes for i in n.inputs]

    def graph_nodes(self) -> list[Node]:
        """The nodes of the data flow: the input, module calls and functional ops (holders left out)."""
        return [n for n in self.nodes if n.kind != "holder"]


def trace(model_or_name: nn.Module | str, input_size: tuple[int, int, int] | None = None, batch_size: int = 1,
          mode: str = "eval") -> Trace:
    """The trace of one forward pass of a registered model (by name, built on the meta device) or any module.

    Arguments and errors as `cnnzoo.profile` (whose records are sums over this trace's nodes); a forward that
    fails raises the profile's `ProfileError`, whose `profile.trace` holds the nodes up to the failing layer.
    """
    from cnnzoo.analysis.profile import profile

    return profile(model_or_name, input_size, batch_size, mode).trace


def run_trace(model: nn.Module, name: str, real: bool, input_size, batch_size: int, mode: str) -> Trace:
    """One pass over `model` (meta tensors in place of its own when `real`); raises TooLarge where a tensor
    would not fit. A forward that fails otherwise gives a trace with `failure` set."""
    return _Run(model, name, real, input_size, batch_size, mode).run()


def _attributes(m: nn.Module) -> dict:
    """The hyper-parameters a figure labels a layer with."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return {"kernel_size": tuple(m.kernel_size), "stride": tuple(m.stride), "padding": m.padding,
                "dilation": tuple(m.dilation), "groups": m.groups, "in_channels": m.in_channels,
                "out_channels": m.out_channels}
    if isinstance(m, nn.Linear):
        return {"in_features": m.in_features, "out_features": m.out_features}
    if isinstance(m, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        return {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                "ceil_mode": m.ceil_mode}
    if isinstance(m, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return {"output_size": m.output_size}
    if isinstance(m, nn.modules.batchnorm._NormBase):
        return {"num_features": m.num_features}
    if isinstance(m, nn.LocalResponseNorm):
        return {"size": m.size}
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return {"p": m.p}
    return {}


class _Run(TorchDispatchMode):
    """One profiling pass: module hooks keep the stack of running modules, the dispatch mode sees every op."""

    fast = True  # compute common layers from formulas; False runs every op on meta (the tests compare both)

    def __init__(self, model: nn.Module, name: str, real: bool, input_size, batch_size: int, mode: str):
        super().__init__()
        self.model, self.name, self.real = model, name, real
        self.input_size, self.batch_size, self.mode = input_size, batch_size, mode
        self.training = mode == "train"
        self.stack: list[tuple] = []  # (path, is_leaf, node or None, args) of the modules running
        self.nodes: list[Node] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> index of the node that made it (tensors kept alive)
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
    def run(self) -> Trace:
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
            self.paths[id(m)] = (path, leaf, type(m).__name__, count > 0, leaf_class(m) if leaf else None)
            self.owned[path] = (count, trainable)
            self.types[path] = type(m).__name__
        buffers = {id(b): b for _, m in named for b in m._buffers.values() if b is not None}
        buffer_bytes = sum(b.numel() * b.element_size() for b in buffers.values())

        dtype = next((p.dtype for _, m in named for p in m._parameters.values()
                      if p is not None and p.is_floating_point()), torch.get_default_dtype())
        check_fits((self.batch_size, *self.input_size), dtype)  # before torch sees sizes that may not fit int64
        x = torch.empty(self.batch_size, *self.input_size, device="meta", dtype=dtype)
        input_bytes = x.numel() * x.element_size()
        start = Node(0, "", "input", "input")
        start.output_shape, start.info = tuple(x.shape), INPUT_INFO
        self.nodes.append(start)
        self.producer[id(x)] = 0

        saved_modes = [(m, m.training) for _, m in named]
        for _, m in named:  # the flags model.train() sets, set directly (one pass, no recursion)
            m.__dict__["training"] = self.training
        checks = [h for _, m in named for h in m._forward_pre_hooks.values() if isinstance(h, InputCheck)]
        top = input_check(model)
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
                self.info[id(x)] = INPUT_INFO
                wrapped = self._wrap(named)
                with suspended(checks), torch.random.fork_rng(devices=[]), \
                        torch.set_grad_enabled(self.training):
                    torch.manual_seed(0)  # stochastic depth and drop-path draw the same way on every profile
                    with self:
                        out = model(x)
                for t in [x, *tensors(out)]:  # the caller holds the input and the outputs throughout
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
            if top is not None and not isinstance(failure, TooLarge) and (
                    failure is not None or any(t.numel() == 0 for t in tensors(out))):
                self._model_check(top, model, x)
        finally:
            for m, training in saved_modes:
                m.__dict__["training"] = training
        if isinstance(failure, TooLarge):
            path = self.stack[-1][0] if self.stack else ""
            failure.where = f"layer '{path}' ({self.types.get(path, '?')})" if path else "the model"
            raise failure

        failed_at = None
        if failure is not None:
            path, _, _, args = self.stack[-1] if self.stack else ("", False, None, (x,))
            failed_at = (path, arg_shapes(args))
        outputs = tuple(dict.fromkeys(self.producer[id(t)] for t in tensors(out) if id(t) in self.producer))
        return Trace(
            model=self.name, input_size=self.input_size, batch_size=self.batch_size, mode=self.mode,
            nodes=tuple(self.nodes), outputs=outputs, module_types=self.types,
            modules={p: (self.types.get(p, ""), *self.module_out.get(p, (None, None, None, 0))) for p in self.types},
            owned=self.owned, uncounted_ops=tuple(sorted(self.uncounted)), param_bytes=param_bytes,
            trainable_param_bytes=trainable_bytes, buffer_bytes=buffer_bytes, input_bytes=input_bytes,
            peak_activation_bytes=self._peak(),
            saved_activation_bytes=sum(self.live[k][0] for k in self.saved) + self.saved_extra,
            largest_tensor_bytes=max((entry[0] for entry in self.live.values()), default=0),
            failure=failure, failed_at=failed_at,
        )

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
    def _pre(self, entry, args, module: nn.Module):
        path, leaf, type_name, owns, layer_class = entry
        node = None
        if leaf or owns:
            if leaf:
                node = self._node(path, type_name, "module", layer_class, tensors(args), _attributes(module))
            else:
                node = self._node(path, type_name, "holder", layer_class, ())
            t = first_tensor(args)
            node.input_shape = tuple(t.shape) if t is not None else None
        self.stack.append((path, leaf, node, args))

    def _post(self, args, output, single_op: bool):
        path, leaf, node, _ = self.stack.pop()
        if not single_op:  # a formula's one op marks its input's last use itself
            for t in tensors(args):  # Python holds a module's arguments until its forward returns
                live = self.live.get(t.untyped_storage()._cdata)
                if live is not None:
                    live[2] = max(live[2], self.step)
        t = first_tensor(output)
        shape = tuple(t.shape) if t is not None else None
        info = self.info.get(id(t)) if t is not None else None
        a = first_tensor(args)
        calls = self.module_out[path][3] + 1 if path in self.module_out else 1
        self.module_out[path] = (tuple(a.shape) if a is not None else None, shape, info, calls)
        if node is not None:
            node.output_shape, node.info = shape, info
            if leaf:
                self._made(node, tensors(output))

    def _node(self, path: str, type_name: str, kind: str, layer_class: str | None, ins: list[Tensor],
              attributes: dict | None = None) -> Node:
        inputs = tuple(dict.fromkeys(self.producer[id(t)] for t in ins if id(t) in self.producer))
        node = Node(len(self.nodes), path, type_name, kind, layer_class, inputs, attributes)
        self.nodes.append(node)
        return node

    def _made(self, node: Node, outs: list[Tensor]) -> None:
        for t in outs:
            self.producer[id(t)] = node.index
            self.keep.append(t)

    def _target(self, op: str, ins: list[Tensor]) -> Node:
        """The node an op is charged to: the running leaf's, or a node of its own run by the running module."""
        if not self.stack:
            path, leaf, node = "", False, None
        else:
            path, leaf, node, _ = self.stack[-1]
        if leaf:
            return node
        return self._node(path, op, "op", None, ins)

    # --- ops ----------------------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        shortcut = SHORTCUTS.get(func) if self.fast else None
        try:
            out = shortcut(args, kwargs) if shortcut is not None else None
            if out is None:
                out = func(*args, **kwargs)
        except RuntimeError as err:  # a meta kernel's "Storage size calculation overflowed"
            if "overflow" in str(err).lower():
                raise TooLarge(None, None, str(err).splitlines()[0]) from err
            raise
        if not self.quiet:
            self._op(func, args, kwargs, out)
        return out

    def _op(self, func, args, kwargs, out):
        outs = tensors(out)
        if not outs or outs[0].device.type != "meta":
            return  # not part of the network's tensors (a CPU draw for stochastic depth, say)
        spec = self.specs.get(func)
        if spec is None:
            spec = self.specs[func] = op_spec(func)
        name, kind, cost, rf, save = spec
        ins = tensors(args) + (tensors(list(kwargs.values())) if kwargs else [])
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
            info = rf(args, kwargs, ins, outs, infos) if rf is not None else generic_rf(ins, outs, infos, self.info)
            for t in outs:
                self.info[id(t)] = info
                self.keep.append(t)
        # Costs.
        if kind is None:  # unknown op
            node = self._target(name, ins)
            node.uncounted.add(name)
            self.uncounted.add(name)
        elif kind == "free":
            if not nbytes:  # a view: its result comes from the node that made the viewed tensor
                if not (self.stack and self.stack[-1][1]) and ins and id(ins[0]) in self.producer:
                    source = self.producer[id(ins[0])]
                    for t in outs:
                        self.producer[id(t)] = source
                        self.keep.append(t)
                return
            node = self._target(name, ins)
        else:
            node = self._target(name, ins)
            macs, flops = cost(args, kwargs, ins, outs)
            node.macs += macs
            node.flops[node.layer_class if node.layer_class and kind not in ("convolution", "linear") else kind] += flops
        node.elements += elements
        node.bytes += nbytes
        if node.kind == "op":  # a functional op's own node
            node.output_shape = tuple(outs[0].shape)
            node.input_shape = tuple(ins[0].shape) if ins else None
            node.info = self.info.get(id(outs[0]))
            self._made(node, outs)

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
            formula = FAST.get(type(m)) if self.fast and own is _MISSING else None
            forward = functools.partial(formula, self, m) if formula is not None else m.forward
            m.__dict__["forward"] = functools.partial(self._call, self.paths[id(m)], m, forward, formula is not None)
            # (what Module.__setattr__ would do for a value that is no parameter, buffer or module, minus its checks)
            undo.append((m, own))
        return undo

    def _call(self, entry: tuple, module: nn.Module, forward, single_op: bool, *args, **kwargs):
        self._pre(entry, args, module)
        out = forward(*args, **kwargs)
        self._post(args, out, single_op)
        return out

    def _empty(self, shape, like: Tensor, grad: bool) -> Tensor:
        check_fits(shape, like.dtype)
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
        node = self.stack[-1][2]
        if out is not x:
            node.bytes += self._track_new(out, step)
            node.elements += out.numel()
        for nbytes, numel in aux:
            self._transient(nbytes, step)
            if self.training:  # kept for backward; in eval they exist only during the op
                node.bytes += nbytes
                node.elements += numel
        if save is not None:
            self._keep_for_backward(save, [x], [out])
        if info is not None:
            self.info[id(out)] = info
            self.keep.append(out)
        node.macs += macs
        node.flops[node.layer_class if node.layer_class and kind not in ("convolution", "linear") else kind] += flops

