"""Compare registered models at their native inputs, and draw the lecture's "Comparing complexity" chart.

`compare(names, dataset=...)` gives one `CompareRow` per model: parameters, MACs and forward activation memory
(computed by `profile` on the meta device at batch 1, eval mode, the card's native input), weight-layer count,
and the error the paper reports (with its dataset and where it is stated). Rows are sorted by paper year, then
MACs, then name: the lecture's chronological order, cheaper variants of one paper first.

`depth` is the papers' depth: the most convolution and linear layers (matrix products) on any path from the input
to the output of an inference pass, found by tagging every tensor with the weight layers behind it (VGG-16: 16,
ResNet-18: 18 (a projection shortcut is a shorter path), GoogLeNet: 22; auxiliary heads, off in eval, do not count).
Pooling and normalisation layers are not weight layers here, so LeNet-5 is 5: C1, C3, C5, F6 and the RBF output,
whose fixed codes multiply F6's state in a matrix product (S2 and S4, trainable subsampling, are the two of its
seven layers that do not count).

`plot(rows, path)` draws accuracy (100 - reported top-1 error) against G-MACs on a log axis, bubble area
proportional to parameters, each bubble labelled. Only ImageNet models go on the chart (errors on different
datasets are not comparable); models without a reported top-1 error are left off, and `plot` returns their names.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["CompareRow", "compare", "plot", "weight_depth", "PlotUnavailable", "PLOT_DATASET"]

PLOT_DATASET = "imagenet"
PLOT_FORMATS = (".png", ".svg")


class PlotUnavailable(ValueError):
    """matplotlib is not installed (it is the optional `plot` extra)."""


@dataclass(frozen=True)
class CompareRow:
    """One model at its native input: computed costs (batch 1, eval) and the paper's reported error."""

    name: str
    family: str
    year: int
    dataset: str
    input_size: tuple[int, int, int]
    params: int
    macs: int  # per image
    activation_bytes: int  # tensors the forward creates, per image (float32)
    depth: int  # the most convolution and linear layers on one input-to-output path of an inference pass
    top1_err: float | None  # % as reported, on `dataset`
    top5_err: float | None
    err_source: str

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["input_size"] = list(self.input_size)
        return d


def compare(names: list[str] | str | None = None, *, dataset: str | None = None) -> list[CompareRow]:
    """Rows for the registered models matching any of `names` (names or fnmatch patterns; None: all).

    Sorted by year, then MACs, then name. Raises ValueError when a name or pattern matches nothing.
    """
    from cnnzoo.registry import list_models

    if isinstance(names, str):
        names = [names]
    if not names:
        selected = list_models(dataset=dataset)
    else:
        selected = []
        for pattern in names:
            if not isinstance(pattern, str):
                raise TypeError(f"model names must be strings, got {type(pattern).__name__}")
            if any(c in pattern for c in "*?["):
                matched = list_models(pattern, dataset=dataset)
                if not matched and not list_models(pattern):
                    raise ValueError(f"no model matches pattern {pattern!r}")
            else:
                from cnnzoo.registry import model_card

                card = model_card(pattern)  # unknown name: the registry's error with the nearest names
                matched = [card.name] if dataset is None or card.dataset == dataset else []
            selected.extend(n for n in matched if n not in selected)
    if not selected:
        what = ", ".join(repr(n) for n in names) if names else "the registry"
        raise ValueError(f"no model of {what} is for dataset {dataset!r}")
    rows = [_row(name) for name in selected]
    return sorted(rows, key=lambda r: (r.year, r.macs, r.name))


def _row(name: str) -> CompareRow:
    from cnnzoo.analysis.profile import profile
    from cnnzoo.registry import model_card

    card = model_card(name)
    result = profile(name)  # native input, batch 1, eval
    depth = weight_depth(name)
    return CompareRow(
        name=card.name, family=card.family, year=card.year, dataset=card.dataset,
        input_size=tuple(card.input_size), params=result.params, macs=result.macs,
        activation_bytes=result.activation_bytes, depth=depth,
        top1_err=card.top1_err, top5_err=card.top5_err, err_source=card.err_source,
    )


def weight_depth(model_or_name: nn.Module | str, input_size: tuple[int, int, int] | None = None) -> int:
    """Most convolution and linear layers on one input-to-output path of an inference pass (meta device)."""
    from cnnzoo.analysis.counting import meta_model
    from cnnzoo.registry import model_card

    if isinstance(model_or_name, str):
        card = model_card(model_or_name)
        model = meta_model(card.name)  # no memory, no initialisation
        input_size = input_size or card.input_size
    else:
        model = model_or_name
        if input_size is None:
            raise ValueError("weight_depth needs input_size for a model not built by cnnzoo.create_model")
    device = next(model.parameters(), torch.empty(0, device="meta")).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _DepthMode() as mode:
            out = model(torch.empty(1, *input_size, device=device))
    finally:
        model.train(was_training)
    leaves, _ = tree_flatten(out)
    return max((mode.depth.get(id(t), 0) for t in leaves if isinstance(t, torch.Tensor)), default=0)


_WEIGHT_OPS = {torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
               torch.conv_transpose3d, F.linear, F.bilinear, torch.matmul, torch.mm, torch.addmm, torch.bmm,
               torch.Tensor.matmul, torch.Tensor.__matmul__}


class _DepthMode(TorchFunctionMode):
    """Tags each tensor with the most weight layers behind it: the largest tag of its inputs, plus one for a
    convolution or matrix product. Convolutions on meta tensors take their output shape from the formula."""

    def __init__(self):
        super().__init__()
        self.depth: dict[int, int] = {}
        self._keep: list[torch.Tensor] = []  # keeps tagged tensors alive so their ids stay unique

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs, _ = tree_flatten((args, kwargs))
        before = max((self.depth.get(id(t), 0) for t in inputs if isinstance(t, torch.Tensor)), default=0)
        out = _fast_conv2d(func, args, kwargs) if func is torch.conv2d else _fast_same_shape(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        level = before + (func in _WEIGHT_OPS)
        if level:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and self.depth.get(id(t), 0) < level:
                    self.depth[id(t)] = level
                    self._keep.append(t)
        return out


_SAME_SHAPE = {F.batch_norm, torch.batch_norm, torch.relu, F.relu}


def _fast_same_shape(func, args, kwargs):
    """Batch norm and ReLU on a meta tensor: a new tensor of the input's shape (or the input, in place)."""
    if func not in _SAME_SHAPE or not args or not isinstance(args[0], torch.Tensor) or args[0].device.type != "meta":
        return None
    if kwargs.get("inplace") or (func is F.relu and len(args) > 1 and args[1]):
        return None  # in place: the input itself, let torch do it
    return torch.empty_like(args[0])


def _fast_conv2d(func, args, kwargs):
    """The output of a plain 2-d convolution on meta tensors, shape only (the meta kernel is slow)."""
    if func is not torch.conv2d or kwargs or len(args) != 7:  # nn.Conv2d passes all seven positionally
        return None
    x, weight, _, stride, padding, dilation, groups = args
    if x.device.type != "meta" or x.dim() != 4 or isinstance(padding, str):
        return None
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    kh, kw = weight.shape[-2:]
    h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h < 1 or w < 1 or x.shape[1] != weight.shape[1] * groups:
        return None  # let torch raise its own error
    return torch.empty(x.shape[0], weight.shape[0], h, w, device="meta", dtype=x.dtype)


def plot(rows: list[CompareRow], path: str | os.PathLike) -> list[str]:
    """Write the complexity chart of the ImageNet rows to `path` (.png or .svg), atomically.

    Returns the names left off (not ImageNet, or no reported top-1 error).
    Raises PlotUnavailable without matplotlib, ValueError for another extension or nothing to plot.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in PLOT_FORMATS:
        raise ValueError(f"cannot plot to {path!r}: expected a .png or .svg file name")
    try:
        import matplotlib
        import matplotlib.ticker
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'cnnzoo[plot]'") from None
    # A bare Figure renders with Agg (PNG) or the SVG writer: no display, and the caller's pyplot backend is untouched
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.dataset == PLOT_DATASET and r.top1_err is not None]
    left_off = [r.name for r in rows if r not in shown]
    if not shown:
        raise ValueError("nothing to plot: no ImageNet model with a reported top-1 error among "
                         + ", ".join(r.name for r in rows))
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")

    fig = Figure(figsize=(11, 7), layout="constrained")
    ax = fig.add_subplot()
    largest = max(r.params for r in shown)
    x = [r.macs / 1e9 for r in shown]
    y = [100 - r.top1_err for r in shown]
    area = [3000 * r.params / largest for r in shown]  # points^2: area, not radius, scales with parameters
    colours = {f: i for i, f in enumerate(sorted({r.family for r in shown}))}
    cmap = matplotlib.colormaps["tab20"]
    ax.scatter(x, y, s=area, c=[cmap(colours[r.family] % 20) for r in shown], alpha=0.5,
               edgecolors="black", linewidths=0.5)
    for r, xi, yi, a in zip(shown, x, y, area):  # label to the right of its bubble
        ax.annotate(r.name, (xi, yi), xytext=(math.sqrt(a) / 2 + 2, 0), textcoords="offset points",
                    fontsize=7, ha="left", va="center")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("operations per image (G-MACs, log scale)")
    ax.set_ylabel("ImageNet top-1 accuracy, % (100 - reported top-1 error)")
    ax.set_title("Comparing complexity: accuracy vs operations; bubble area proportional to parameters "
                 f"(largest: {largest / 1e6:.0f}M)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    lo, hi = min(x), max(x)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.set_ylim(math.floor(min(y)) - 3, math.ceil(max(y)) + 3)

    fd, tmp = tempfile.mkstemp(prefix=".cnnzoo-", suffix=ext, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=ext[1:], dpi=150)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the chart is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return left_off
