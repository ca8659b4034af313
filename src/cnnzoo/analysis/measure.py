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

A pass that clearly cannot fit is refused before anything is allocated: `refuse_beyond_memory(profile, device)`
raises a `SizeError` when the estimate, a lower bound of the real peak, is more than the device has available
(`available_memory`: MemAvailable, within the cgroup's limit, on the CPU; free memory and the caching allocator's
unused blocks on CUDA), and names the largest batch whose estimate plus slack fits.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys

import torch
from torch import nn

from cnnzoo.analysis.profile import SizeError

__all__ = ["measured_inference_peak", "measurement_slack", "available_memory", "refuse_beyond_memory"]


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


def refuse_beyond_memory(profile, device: torch.device) -> None:
    """Raise a SizeError if the estimated peak of a real inference pass (a lower bound) is more than `device` has
    available; it names the largest batch whose estimate plus `measurement_slack` fits."""
    from cnnzoo.analysis.formats import _bytes

    room = available_memory(device)
    need = profile.inference_peak_bytes
    if room is None or need <= room[0]:
        return
    available, source = room
    state = profile.param_bytes + profile.buffer_bytes  # the same at any batch; the rest grows with it
    per_sample = -(-(profile.peak_activation_bytes + measurement_slack(profile)) // profile.batch_size)
    fits = min((available - state) // per_sample, profile.batch_size - 1) if available > state else 0
    c, h, w = profile.input_size
    where = "this machine" if device.type == "cpu" else str(device)
    head = (f"{profile.model}: measuring runs one real inference pass at ", ("batch", profile.batch_size),
            f" and input {c}x{h}x{w}, which needs at least {_bytes(need)} (the estimated peak), more than the "
            f"{_bytes(available)} {where} has available ({source})")
    if fits >= 1:
        raise SizeError(*head, "; use ", ("batch", fits), " or less")
    raise SizeError(*head, "; even a batch of 1 does not fit: use a smaller ", ("input", None))


def available_memory(device: torch.device) -> tuple[int, str] | None:
    """(bytes a real pass on `device` can still allocate, where that figure comes from), or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached, reusable
        return free + unused, "torch.cuda.mem_get_info"
    if device.type != "cpu":
        return None
    found = None
    try:
        with open("/proc/meminfo") as f:
            kib = next((int(line.split()[1]) for line in f if line.startswith("MemAvailable:")), None)
        found = None if kib is None else (kib * 1024, "MemAvailable in /proc/meminfo")
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages by os.sysconf"
        except (AttributeError, ValueError, OSError):
            return None
    room = _cgroup_room()
    return (room, "the memory limit of this process's cgroup") if room is not None and room < found[0] else found


def _cgroup_room() -> int | None:
    """A container's memory limit less its usage (page cache that can be dropped counts as free); None if none."""
    for limit, usage, cache in (("memory.max", "memory.current", "inactive_file"),  # cgroup v2
                                ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                 "total_inactive_file")):  # v1
        try:
            with open(f"/sys/fs/cgroup/{limit}") as f:
                text = f.read().strip()
            if text == "max" or int(text) >= 2**62:  # no limit
                return None
            with open(f"/sys/fs/cgroup/{usage}") as f:
                used = int(f.read())
            stat = os.path.join(os.path.dirname(f"/sys/fs/cgroup/{usage}"), "memory.stat")
            with open(stat) as f:
                dropped = next((int(line.split()[1]) for line in f if line.split()[0] == cache), 0)
            return max(int(text) - used + dropped, 0)
        except (OSError, ValueError, IndexError):
            continue
    return None
