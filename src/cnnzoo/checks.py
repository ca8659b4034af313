"""Input validation that runs before a model's forward, so users see what is wrong, not a torch shape error.

Whether an input size fits is found by running the model itself on the meta device (shapes only, no
memory, no arithmetic), once per new input size other than the model's native one (which always fits);
on a misfit the accepted range is searched the same way. During a probe the common layers (convolution, batch
norm, ReLU, max and average pooling, identity) compute their output shape by formula instead of through torch's
meta kernels (the convolution's runs in Python: thousands of calls make ResNet-1202's search take most of a
minute); any case the formula does not cover runs the layer itself.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.func import functional_call

_SHAPE_ERRORS = (RuntimeError, ValueError, IndexError)


def out_size(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """Output length of a window of size k (stride s, padding p, dilation d) over n, as torch computes it."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:  # the last window must start inside the input or its left padding
        out -= 1
    return out


def _two(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (tuple(value) * 2)[:2] if len(value) == 1 else tuple(value)


def _probe_conv(m: nn.Conv2d, x: Tensor) -> Tensor | None:
    if x.dim() != 4 or x.shape[1] != m.in_channels or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return None
    size = [out_size(n, k, st, p, d, False) for n, k, st, p, d in
            zip(x.shape[-2:], m.kernel_size, m.stride, m.padding, m.dilation)]
    if min(size) < 1:
        raise RuntimeError("input smaller than the kernel")
    return torch.empty(x.shape[0], m.out_channels, *size, device="meta", dtype=x.dtype)


def _probe_pool(m: nn.Module, x: Tensor) -> Tensor | None:
    if x.dim() != 4 or getattr(m, "return_indices", False):
        return None
    k = _two(m.kernel_size)
    s, p = _two(m.stride if m.stride is not None else m.kernel_size), _two(m.padding)
    d = _two(m.dilation) if isinstance(m, nn.MaxPool2d) else (1, 1)
    if (isinstance(m, nn.AvgPool2d) and (m.divisor_override is not None)) or any(
            pp > kk // 2 for pp, kk in zip(p, k)):
        return None
    size = [out_size(n, *args, m.ceil_mode) for n, *args in zip(x.shape[-2:], k, s, p, d)]
    if min(size) < 1:
        raise RuntimeError("output size is too small")
    return torch.empty(*x.shape[:2], *size, device="meta", dtype=x.dtype)


def _probe_norm(m: nn.BatchNorm2d, x: Tensor) -> Tensor | None:
    if x.dim() != 4 or x.shape[1] != m.num_features:
        return None
    if m.training and x.numel() // x.shape[1] <= 1:
        raise ValueError("expected more than 1 value per channel when training")
    return x


_PROBES = {nn.Conv2d: _probe_conv, nn.MaxPool2d: _probe_pool, nn.AvgPool2d: _probe_pool,
           nn.BatchNorm2d: _probe_norm, nn.ReLU: lambda m, x: x, nn.Identity: lambda m, x: x}


def _probing_forward(module: nn.Module, probe):
    def forward(*args, **kwargs):
        x = args[0] if len(args) == 1 and not kwargs and isinstance(args[0], Tensor) else None
        out = probe(module, x) if x is not None and x.device.type == "meta" else None
        return type(module).forward(module, *args, **kwargs) if out is None else out
    return forward


@contextlib.contextmanager
def _shape_formulas(module: nn.Module):
    """Give the common layers of `module` a shape-only forward for the duration of a probe."""
    swapped = []
    try:
        for m in module.modules():
            probe = _PROBES.get(type(m))
            if probe is not None and "forward" not in m.__dict__:
                m.__dict__["forward"] = _probing_forward(m, probe)
                swapped.append(m)
        yield
    finally:
        for m in swapped:
            m.__dict__.pop("forward", None)


class InputCheck:
    """Forward pre-hook: checks rank, dtype, channels and spatial size of the input batch."""

    def __init__(self, model_name: str, in_chans: int, native_hw: tuple[int, int]):
        self.model_name = model_name
        self.in_chans = in_chans
        self.native_hw = tuple(native_hw)
        self._fits: dict[tuple[int, int, bool], bool] = {}
        self._probing = False

    @contextlib.contextmanager
    def suspended(self):
        """Skip the check inside this block, for a caller that has checked the input already (the profiler)."""
        before, self._probing = self._probing, True
        try:
            yield
        finally:
            self._probing = before

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if self._probing:
            return
        name = self.model_name
        if not args or not isinstance(args[0], Tensor):
            got = type(args[0]).__name__ if args else "nothing"
            raise TypeError(f"{name} expects a tensor of images shaped (N, C, H, W), got {got}")
        x = args[0]
        if x.dim() != 4:
            raise ValueError(
                f"{name} expects a batch of images shaped (N, C, H, W), got a tensor of shape {tuple(x.shape)}"
                + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
            )
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point input, got {x.dtype}; convert with x.float()")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"{name} was built for {self.in_chans} input channel(s), got {x.shape[1]}; "
                f"pass in_chans={x.shape[1]} to create_model to build it for that"
            )
        h, w = x.shape[-2:]
        if not self._fit(module, h, w):
            raise ValueError(self._explain(module, h, w))

    def _fit(self, module: nn.Module, h: int, w: int) -> bool:
        if (h, w) == self.native_hw:
            return True  # every registered model runs at its native size (the generic tests check it, both modes)
        key = (h, w, module.training)
        if key not in self._fits:
            self._fits[key] = self._runs(module, h, w)
        if not self._fits[key] and not self._runs(module, *self.native_hw):
            return True  # the model does not run on meta even at its native size: no basis to judge
        return self._fits[key]

    def _runs(self, module: nn.Module, h: int, w: int) -> bool:
        own = [*module.parameters(), *module.buffers()]
        dtype = next((v.dtype for v in own if v.is_floating_point()), torch.get_default_dtype())
        tensors = None
        if not all(v.is_meta for v in own):  # a model on the meta device already (the profiler's) runs as it is
            tensors = {k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()}
            tensors.update({k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()})
        x = torch.empty(2, self.in_chans, h, w, device="meta", dtype=dtype)  # 2: batch norm needs more than one
        self._probing = True
        try:  # the probe's random draws (dropout, stochastic depth) must not move the caller's RNG: a resumed
            # training run probes at a different moment than the run it continues
            with torch.random.fork_rng(devices=[]), _shape_formulas(module):
                out = module(x) if tensors is None else functional_call(module, tensors, (x,))
        except _SHAPE_ERRORS:
            return False
        finally:
            self._probing = False
        outs = out if isinstance(out, tuple) else (out,)
        return all(o.numel() > 0 for o in outs if isinstance(o, Tensor))

    def accepted_range(self, module: nn.Module, axis: int) -> tuple[int, int | None]:
        """Smallest and largest side along `axis` (0: height, 1: width) that runs, the other side native.

        The largest is None when twice the native side still runs (the model pools adaptively).
        """
        native = self.native_hw[axis]

        def runs(side: int) -> bool:
            hw = list(self.native_hw)
            hw[axis] = side
            return self._fit(module, *hw)

        lo, hi = (1, 1) if runs(1) else (2, native)  # many nets take any size: one probe settles it
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if runs(mid) else (mid + 1, hi)
        smallest = lo
        if runs(2 * native):
            return smallest, None
        lo, hi = native, 2 * native - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if runs(mid) else (lo, mid - 1)
        return smallest, lo

    def _explain(self, module: nn.Module, h: int, w: int) -> str:
        (hmin, hmax), (wmin, wmax) = self.accepted_range(module, 0), self.accepted_range(module, 1)
        if hmax is None or wmax is None:
            accepts = f"the smallest input that works is {hmin}x{wmin}"
        elif (hmin, wmin) == (hmax, wmax):
            accepts = f"it accepts only {hmin}x{wmin}"
        else:
            accepts = f"it accepts {hmin}x{wmin} up to {hmax}x{wmax}"
        got = f"{self.model_name}: input {h}x{w}"
        native = "native size " + "x".join(map(str, self.native_hw))
        if h < hmin or w < wmin:
            return f"{got} is too small; {accepts} ({native})"
        if (hmax is not None and h > hmax) or (wmax is not None and w > wmax):
            return f"{got} is too large for its fixed-size classifier; {accepts} ({native})"
        return f"{got} does not fit the model's strides and pools; {accepts} ({native})"

def input_range(model: nn.Module, axis: int = 0) -> tuple[int, int | None]:
    """(smallest, largest) input side along `axis` (0: height, 1: width) that a model from create_model accepts.

    The largest is None when the model pools adaptively and takes any larger size.
    """
    for hook in model._forward_pre_hooks.values():
        if isinstance(hook, InputCheck):
            return hook.accepted_range(model, axis)
    raise ValueError("this model was not built by cnnzoo.create_model, so its accepted input sizes are unknown")


def input_check(model: nn.Module) -> InputCheck | None:
    """The model's own input check (a forward pre-hook cnnzoo.create_model installs), if it has one."""
    return next((h for h in model._forward_pre_hooks.values() if isinstance(h, InputCheck)), None)
