"""Memory of a real inference pass, measured at the allocator, to set beside the profiler's estimate.

`measured_inference_peak(model, input_size, batch_size)` runs one forward pass for real (eval mode, no
gradients) on the model's device and returns the peak of bytes held: parameters, buffers and the input, plus
the highest point the allocator reaches during the pass.

- CUDA: `torch.cuda.max_memory_allocated` after resetting the peak statistics.
- CPU: the CPU allocator has no statistics of its own; the PyTorch profiler with `profile_memory=True` records
  every allocation and free with a timestamp, and the running sum's maximum is the peak.

The measured figure includes what the estimate leaves out on purpose: convolution workspaces. On this CPU,
oneDNN reorders a convolution's weights and may hold its output twice while converting it from a blocked
layout, and the fallback kernel builds an im2col matrix (C_in/groups * kh * kw * H_out * W_out per image).
And the estimate frees a tensor right after its last use, where Python frees it when its last reference goes: a
block that keeps its pre-activation in a local variable holds it one layer longer. `measurement_slack(profile)`
is the sum of those two allowances: the largest workspace of one convolution and the largest single activation
of the network; estimate <= measured <= estimate + slack is what a correct estimate satisfies, and
tests/test_profile.py checks it over the zoo's families.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import torch
from torch import nn

__all__ = ["measured_inference_peak", "measurement_slack"]


def measured_inference_peak(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1) -> int:
    """Bytes held at the peak of one real inference pass: state, input, and the allocator's highest point."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    if device.type == "meta":
        raise ValueError("measuring memory needs a real model; this one is on the meta device")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
    state = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
             for t in [*model.parameters(), *model.buffers()]}
    x = torch.randn(batch_size, *input_size, device=device, dtype=dtype)
    held = sum(state.values()) + x.numel() * x.element_size()
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                model(x)
                torch.cuda.synchronize(device)
                return held + torch.cuda.max_memory_allocated(device) - base
            return held + _cpu_forward_peak(model, x)
    finally:
        for m, training in modes:
            m.training = training


def _cpu_forward_peak(model: nn.Module, x: torch.Tensor) -> int:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with _quiet_stderr(), torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ library logs its start and stop on file descriptor 2; keep the CLI's stderr clean."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture or an embedded interpreter: nothing to do
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def measurement_slack(profile) -> int:
    """How far a real pass may rise above the estimate, in bytes of the parameters' dtype: the largest scratch
    memory of one convolution (its weights once more, as a reordered copy, plus the larger of its output in a
    second layout and its im2col matrix) plus the largest single activation (held one layer longer)."""
    itemsize = profile.param_bytes // max(profile.params, 1) or 4
    workspace = largest = 0
    for r in profile.layers:
        if r.output_shape is None:
            continue
        largest = max(largest, itemsize * math.prod(r.output_shape))
        if r.type not in ("Conv2d", "convolution") or r.params == 0:
            continue
        n, c_out, h, w = r.output_shape
        per_out_channel = -(-r.params // c_out)  # C_in/groups * kh * kw, plus one for a bias
        columns = n * per_out_channel * h * w
        workspace = max(workspace, itemsize * (r.params + max(columns, n * c_out * h * w)))
    return workspace + largest
