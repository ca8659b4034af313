"""The fast inference path: `optimize(model)` returns a copy of a net made for inference on this machine.

What it does, each step optional:
- folds every batch normalisation that reads only a convolution's output into that convolution's weights and
  bias (W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta) and removes it: a real
  fold of the tensors, so the net runs one layer where it ran two. The pairs come from the model's FX graph in
  eval mode, the only place where "this convolution's output goes to this batch norm and nowhere else" is
  written down; a net that FX cannot trace is left unfolded and the notes say why. Batch norms after an
  activation or a sum (pre-activation ResNets, DenseNet) have no convolution to fold into and stay.
- stores weights and activations channels-last (NHWC), the layout oneDNN and cuDNN convolutions prefer;
- converts to bfloat16 (or float16 on CUDA) where the device computes in it natively: on a CPU that means
  AVX-512-BF16 or AMX; elsewhere bfloat16 would be emulated and slower, so float32 is kept and the notes say so;
- on a CPU, runs each convolution as a oneDNN primitive on weights packed once, with the ReLU, or the residual
  sum and the ReLU, that alone read its output computed in the same pass (`cnnzoo.deploy.fusion`), applies a
  batch norm (and ReLU) that alone reads a fresh concatenation in place on it (DenseNet's layers), and keeps
  freed memory in the process for the next pass instead of faulting in fresh pages every time
  (`cnnzoo.deploy.memory`; process-wide, as ONNX Runtime's arena is for its sessions);
- compiles with `torch.compile` on request, with inductor's freezing (weights become constants: packed once for
  oneDNN, each convolution fused with the activation or sum after it). The first call, and the first at each new
  input shape, then takes seconds to minutes; later changes to the original model's weights are not seen.

The returned `OptimizedModel` takes an ordinary float32 NCHW batch, converts it itself, runs under
`torch.inference_mode` and returns float32 logits, so it drops in where the eager model was used for
inference. The input check of a cnnzoo model still runs on every call, before the conversion.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import Tensor, nn

from cnnzoo.checks import InputCheck, input_check
from cnnzoo.deploy.fusion import (PackedConv2d, fuse_concat_norms, fuse_convolutions, module_calls, replace_module,
                                  share_concat_buffers)
from cnnzoo.deploy.memory import keep_freed_memory

__all__ = ["OptimizedModel", "bf16_support", "fold_batchnorm", "optimize"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)


class OptimizedModel(nn.Module):
    """An inference-only copy of a net: folded, in its memory format and dtype, possibly compiled."""

    def __init__(self, model: nn.Module, *, dtype: torch.dtype, channels_last: bool, compiled: bool,
                 notes: tuple[str, ...], check: InputCheck | None = None):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        self.compiled = compiled
        self.notes = notes
        self._check = check if check is not None else _take_input_check(model)
        # freezing: the weights become constants of the compiled graph, so oneDNN packs them once and fuses each
        # convolution with the activation or sum after it (what ONNX Runtime does too); the net is inference-only
        self._run = torch.compile(model, options={"freezing": True}) if compiled else model

    def forward(self, x: Tensor) -> Tensor:
        if self._check is not None:
            self._check(self.model, (x,))
        device = next(self.model.parameters(), x).device
        x = x.to(device=device, dtype=self.dtype,
                 memory_format=torch.channels_last if self.channels_last and x.dim() == 4 else torch.preserve_format)
        with torch.inference_mode():
            return self._run(x).float()

    def train(self, mode: bool = True):
        if mode:
            raise ValueError("an OptimizedModel is for inference only (its batch norms are folded into the "
                             "convolutions); train the original model and call optimize() again")
        return super().train(False)

    def extra_repr(self) -> str:
        return "; ".join(self.notes)


def optimize(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True, dtype: torch.dtype | None = None,
             compile: bool = False, fuse: bool = True, keep_memory: bool = True) -> OptimizedModel:
    """A copy of `model` for fast inference (the original is left as it is). See the module docstring.

    Args:
        fold_bn: fold batch norms into the convolutions that feed them.
        channels_last: weights and activations in NHWC.
        dtype: None or torch.float32 keeps float32; torch.bfloat16 (or torch.float16 on CUDA) where the device
            computes in it natively, float32 with a warning and a note where it does not.
        compile: wrap the net in torch.compile (which then does its own fusion: `fuse` is not applied).
        fuse: on a CPU, convolutions on packed weights with their ReLU or residual sum fused in.
        keep_memory: on a CPU, keep freed memory in the process for reuse (process-wide; see cnnzoo.deploy.memory).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, OptimizedModel):
        raise ValueError("this model is optimized already; optimize the original model instead")
    if dtype is not None and dtype not in (torch.float32, *_LOW_PRECISION):
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    for flag, value in (("fold_bn", fold_bn), ("channels_last", channels_last), ("compile", compile),
                        ("fuse", fuse), ("keep_memory", keep_memory)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")

    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    device = next(net.parameters(), torch.empty(0)).device
    notes = []
    graph, untraceable = _trace(net) if fold_bn or fuse else (None, "")
    if fold_bn:
        folded = _fold(net, graph)
        notes.append(f"batch norm folded into {folded} convolution{'s' if folded != 1 else ''}"
                     + (f" ({untraceable})" if untraceable else ""))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        notes.append("channels-last")
    chosen = torch.float32
    if dtype in _LOW_PRECISION:
        ok, why = _low_precision_support(dtype, device)
        if ok:
            net, chosen = net.to(dtype), dtype
            notes.append(f"{_name(dtype)} ({why})")
        else:
            warnings.warn(f"{_name(dtype)} not applied, float32 kept: {why}", stacklevel=2)
            notes.append(f"float32: {_name(dtype)} not applied ({why})")
    else:
        notes.append("float32")
    check = _take_input_check(net)
    if fuse:
        why_not = ("torch.compile fuses instead" if compile else "on a CPU only" if device.type != "cpu"
                   else "this build of torch has no oneDNN" if not torch.backends.mkldnn.is_available()
                   else "oneDNN has no bfloat16 kernels for this CPU" if chosen == torch.bfloat16
                   and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
                   else untraceable)
        if why_not:
            notes.append(f"convolutions not packed ({why_not})")
        else:
            net, fused = fuse_convolutions(net, graph)
            packed = sum(isinstance(m, PackedConv2d) for m in net.modules())
            notes.append(f"{packed} convolution{'s' if packed != 1 else ''} on packed oneDNN weights, "
                         f"{fused} with the ReLU or sum after {'it' if fused == 1 else 'them'} fused in")
            normed = fuse_concat_norms(net)
            if normed:
                notes.append(f"{normed} concatenation{'s' if normed != 1 else ''} with the batch norm after "
                             f"{'it' if normed == 1 else 'them'} applied in place")
            shared = share_concat_buffers(net) if normed else 0
            if shared:
                notes.append(f"{shared} dense block{'s' if shared != 1 else ''} concatenating into one buffer "
                             f"{'each' if shared != 1 else ''}".rstrip())
    if keep_memory and device.type == "cpu":
        notes.append(keep_freed_memory()[1])
    if compile:
        notes.append("torch.compile")
        if graph is not None:
            # torch.compile keeps its graphs per Python function and recompiles for a new instance only up to a
            # limit (8), after which it runs the function uncompiled with no more than a logged warning: every
            # ResNet shares one forward. A GraphModule's forward is generated for it alone.
            from torch.fx import GraphModule

            net = GraphModule(net, graph)
    return OptimizedModel(net, dtype=chosen, channels_last=channels_last, compiled=compile, notes=tuple(notes),
                          check=check)


def bf16_support(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether `device` computes in bfloat16 natively, and in words why (or why not)."""
    return _low_precision_support(torch.bfloat16, torch.device(device))


def _low_precision_support(dtype: torch.dtype, device: torch.device) -> tuple[bool, str]:
    if device.type == "cuda":
        if dtype == torch.float16:
            return True, "CUDA computes in float16"
        if torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(device)} computes in bfloat16"
        return False, f"{torch.cuda.get_device_name(device)} has no native bfloat16"
    if device.type != "cpu":
        return False, f"no low-precision path is known for device {device.type!r}"
    if dtype == torch.float16:
        return False, "float16 is for CUDA devices; on a CPU use bfloat16"
    flags = cpu_flags()
    native = [label for flag, label in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512-BF16")) if flag in flags]
    if not native:
        return False, "this CPU has neither AVX-512-BF16 nor AMX, so bfloat16 would be emulated and slower"
    if not torch.backends.mkldnn.is_available():
        return False, "this build of torch has no oneDNN, which runs bfloat16 convolutions on a CPU"
    return True, f"the CPU has {' and '.join(native)}"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every eval-mode batch norm that reads only a convolution's output into that convolution;
    each folded batch norm becomes an nn.Identity. Returns how many were folded. The model must be in eval mode
    (folding uses the running statistics); raises ValueError when FX cannot trace it."""
    if model.training:
        raise ValueError("fold_batchnorm needs the model in eval mode (call model.eval() first): folding uses the "
                         "running statistics, which only eval mode uses")
    graph, reason = _trace(model)
    if graph is None:
        raise ValueError(f"cannot fold batch norms: {reason}")
    return _fold(model, graph)


def _fold(model: nn.Module, graph) -> int:
    """Fold what can be folded (nothing when the net could not be traced); returns the count."""
    pairs = _conv_bn_pairs(model, graph) if graph is not None else []
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        _fold_into(conv, bn)
        replace_module(model, bn_path, nn.Identity())
    return len(pairs)


def _trace(model: nn.Module):
    """The net's FX graph in eval mode, or None and why it could not be traced."""
    import torch.fx

    check = input_check(model)
    try:  # the graph alone: a GraphModule (symbolic_trace) would also generate and compile its code
        with check.suspended() if check is not None else contextlib.nullcontext():
            return torch.fx.Tracer().trace(model), ""
    except Exception as err:  # FX raises many kinds on dynamic control flow; any of them means "not traceable"
        return None, f"not traceable by torch.fx: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _conv_bn_pairs(model: nn.Module, graph) -> list[tuple[str, str]]:
    """(convolution, batch norm) module paths where the batch norm's only input is the convolution's output (or
    passes through eval-mode dropout on its way), that output goes nowhere else, and each module is called once."""
    import torch.fx

    calls = module_calls(graph)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        while _passes_through(model, source):  # eval-mode dropout between them (FractalNet's conv-dropout-BN)
            source = source.args[0]
        if (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(model.get_submodule(source.target), nn.Conv2d)
                and calls[source.target] == 1 and calls[node.target] == 1
                and _foldable(model.get_submodule(node.target))):
            pairs.append((source.target, node.target))
    return pairs


def _passes_through(model: nn.Module, node) -> bool:
    """A module call that is the identity in eval mode, fed by one node and read by one."""
    import torch.fx

    return (isinstance(node, torch.fx.Node) and node.op == "call_module" and len(node.users) == 1
            and len(node.args) == 1 and isinstance(node.args[0], torch.fx.Node)
            and isinstance(model.get_submodule(node.target), (nn.Identity, nn.Dropout, nn.Dropout2d)))


def _foldable(bn: nn.BatchNorm2d) -> bool:
    return bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        shift = shift + bn.bias.double()
    bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
    weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def _take_input_check(model: nn.Module) -> InputCheck | None:
    """Remove a cnnzoo input check from the net's hooks and return it: the OptimizedModel runs it on the caller's
    float32 NCHW batch, before the conversion and outside any compiled region."""
    for key, hook in list(model._forward_pre_hooks.items()):
        if isinstance(hook, InputCheck):
            del model._forward_pre_hooks[key]
            return hook
    return None


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
