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

`plot(rows, path, metric="top1")` draws the lecture's "Comparing complexity" chart: accuracy (100 - the reported
top-1 or top-5 error) against G-MACs on a log axis, bubble area proportional to parameters, one colour per family,
with legends for both and every bubble labelled where no label hides another or another's bubble. Only ImageNet
models go on it (errors on different datasets are not comparable), and only with a reported error of the chosen
kind: the paper's, or for top-1 where the paper gives none, a figure another source states for the same network
(GoogLeNet's: BVLC's replication), drawn hollow and named in the footnote, as are the cards whose figure is not the
paper's. `chart_points` gives what the chart shows; `LECTURE_SELECTION` is the lecture's own choice of models.
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

__all__ = ["CompareRow", "compare", "plot", "weight_depth", "PlotUnavailable", "PLOT_DATASET", "LECTURE_SELECTION",
           "METRICS", "ChartPoint", "chart_points", "chart_figure"]

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


# The complexity chart ------------------------------------------------------------------------------------------

METRICS = ("top1", "top5")
_METRIC_WORDS = {"top1": "top-1", "top5": "top-5"}

# The lecture's "Comparing complexity" chart is Fig. 2 of Canziani, Paszke & Culurciello 2016 (arXiv:1605.07678):
# AlexNet, BN-AlexNet, BN-NIN, GoogLeNet, Inception-v3, Inception-v4, ResNet-18/34/50/101/152, VGG-16, VGG-19 and
# ENet. These are their registered counterparts, in that order. BN-NIN is stood in for by nin_imagenet, the NIN
# authors' ImageNet network without batch normalisation; BN-AlexNet, Inception-v3 and ENet are not registered.
LECTURE_SELECTION: tuple[str, ...] = ("alexnet", "nin_imagenet", "googlenet", "inception_v4", "resnet18", "resnet34",
                                      "resnet50", "resnet101", "resnet152", "vgg16", "vgg19")

FIGSIZE = (12.0, 7.0)  # inches
DPI = 150
AREA_PER_MPARAM = 14.0  # bubble area in points^2 per million parameters: one scale for every chart and its legend
SIZE_LEGEND = (5e6, 25e6, 100e6)  # parameters of the size legend's bubbles
LABEL_FONTSIZE = 7.5
_EDGE_WIDTH = 1.2  # points: the bubbles' outline
_LABEL_GAP = 2.0  # points: the least room between a label and a bubble or the axes' edge
_LABEL_SPACING = 5.0  # points: the least room between two labels, so that two names never read as one
# tab10, then black, navy and others far from its hues: one colour per family, families in sorted order
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#222222", "#000080", "#1b9e77", "#e6ab02", "#f0027f", "#66a61e")


@dataclass(frozen=True)
class ChartPoint:
    """One bubble of the complexity chart: a model's computed costs and the reported error it is placed at."""

    name: str
    family: str
    params: int
    macs: int  # per image, at the model's native input
    activation_bytes: int
    error: float  # % (top-1 or top-5 per `metric`)
    metric: str  # "top1" | "top5"
    error_source: str  # where the figure is stated: the place in the paper ("Table 3, ..."), or the other source
    paper_figure: bool  # False when the figure is not the paper's own (drawn hollow, its source in the footnote)

    @property
    def accuracy(self) -> float:
        return 100 - self.error


def chart_points(rows: list[CompareRow], *, metric: str = "top1") -> list[ChartPoint]:
    """The rows that go on the chart for `metric` ("top1" or "top5"), in row order, with the figure each is placed at.

    A row is on the chart when it is an ImageNet model (errors on different datasets are not comparable) with a
    reported error of that kind: its paper's, or for top-1 where the paper reports none, the card's
    `other_top1_err` (another source's figure, `paper_figure=False`).
    """
    _check_metric(metric)
    points = []
    for row in _checked_rows(rows):
        figure = _figure(row, metric)
        if figure is not None:
            error, source, own = figure
            points.append(ChartPoint(name=row.name, family=row.family, params=row.params, macs=row.macs,
                                     activation_bytes=row.activation_bytes, error=error, metric=metric,
                                     error_source=source, paper_figure=own))
    return points


def _check_metric(metric) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of: {', '.join(METRICS)}")


def _checked_rows(rows) -> list[CompareRow]:
    if isinstance(rows, CompareRow) or not hasattr(rows, "__iter__"):
        raise TypeError(f"rows must be a list of CompareRow (from compare()), got {type(rows).__name__}")
    rows = list(rows)
    for row in rows:
        if not isinstance(row, CompareRow):
            raise TypeError(f"rows must be CompareRow objects (from compare()), got {type(row).__name__}")
    return rows


def _figure(row: CompareRow, metric: str) -> tuple[float, str, bool] | None:
    """The error `row` is placed at, where it is stated, and whether that is in the paper; None: not on the chart."""
    if row.dataset != PLOT_DATASET:
        return None
    error = row.top1_err if metric == "top1" else row.top5_err
    if error is not None:
        return error, row.err_source, _stated_in_paper(row.err_source)
    if metric == "top1":
        from cnnzoo.registry import UnknownModelError, model_card

        try:
            card = model_card(row.name)
        except UnknownModelError:  # a row made by hand for a model outside the registry: no other figure
            return None
        if card.other_top1_err is not None:
            return card.other_top1_err, card.other_top1_source, False
    return None


def _stated_in_paper(source: str) -> bool:
    """Whether a card's `err_source` is a place in the paper. The papers' figures are cited by table, section or
    figure ("Table 3, ..."); a card whose figure comes from elsewhere names that source instead (the authors'
    README, a model zoo release, another library's checkpoint)."""
    return source.startswith(("Table", "Tab.", "Sec.", "Section", "Fig.", "Figure"))


def _left_off(rows: list[CompareRow], metric: str) -> dict[str, str]:
    """Name -> why it is not on the chart, for the rows that are not."""
    words = _METRIC_WORDS[metric]
    return {r.name: ("not ImageNet" if r.dataset != PLOT_DATASET else f"no reported {words} error")
            for r in rows if _figure(r, metric) is None}


def plot(rows: list[CompareRow], path: str | os.PathLike, *, metric: str = "top1") -> list[str]:
    """Write the complexity chart of `rows` to `path` (.png or .svg), atomically; `metric` is "top1" or "top5".

    Returns the names left off (not ImageNet, or no reported error of that kind), in row order.
    Raises PlotUnavailable without matplotlib, ValueError for another extension, an unknown metric or nothing to plot.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in PLOT_FORMATS:
        raise ValueError(f"cannot plot to {path!r}: expected a .png or .svg file name")
    _check_metric(metric)
    _need_matplotlib()
    rows = _checked_rows(rows)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")
    fig = chart_figure(rows, metric=metric)
    fd, tmp = tempfile.mkstemp(prefix=".cnnzoo-", suffix=ext, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=ext[1:], dpi=DPI)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; the chart is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return list(_left_off(rows, metric))


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'cnnzoo[plot]'") from None


def chart_figure(rows: list[CompareRow], *, metric: str = "top1"):
    """The complexity chart of `rows` as a matplotlib Figure, its layout fixed and its labels placed.

    Accuracy (100 - the reported error) against G-MACs on a log axis; bubble area proportional to parameters, at
    one scale (AREA_PER_MPARAM) shared by the size legend; one colour per family; a hollow, dashed bubble for a
    figure that is not the paper's own, its source in the footnote, which also names the rows left off and why.
    No two labels overlap, nor does a label overlap a bubble other than its own (`_place_labels`). The figure has
    an Agg canvas (no display needed) at DPI; the bubbles' and labels' artists have gids "bubble-NAME",
    "label-NAME".
    """
    _check_metric(metric)
    _need_matplotlib()
    rows = _checked_rows(rows)
    points = chart_points(rows, metric=metric)
    if not points:
        raise ValueError(f"nothing to plot: no ImageNet model with a reported {_METRIC_WORDS[metric]} error among "
                         + (", ".join(r.name for r in rows) or "no rows"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = _family_colours()
    _draw_bubbles(ax, points, colours)
    _draw_axes(ax, points, metric)
    _draw_legends(ax, points, colours)
    _draw_footnote(fig, rows, points, metric)
    fig.canvas.draw()  # settles the layout ...
    fig.set_layout_engine("none")  # ... and keeps it, so that the labels are placed where they will be drawn
    _place_labels(ax, points)
    return fig


def _area(params: float) -> float:
    """A bubble's area in points^2."""
    return AREA_PER_MPARAM * params / 1e6


def _family_colours() -> dict[str, str]:
    """One colour per family that can be on a chart (an ImageNet card with an error): the same on every chart."""
    from cnnzoo.registry import list_models, model_card

    cards = [model_card(n) for n in list_models(dataset=PLOT_DATASET)]
    families = sorted({c.family for c in cards if {c.top1_err, c.top5_err, c.other_top1_err} != {None}})
    return {f: _PALETTE[i % len(_PALETTE)] for i, f in enumerate(families)}


def _colour(colours: dict[str, str], family: str) -> str:
    return colours.get(family, _PALETTE[-1])  # a family registered by a user after the import


def _draw_bubbles(ax, points: list[ChartPoint], colours: dict[str, str]) -> None:
    from matplotlib.colors import to_rgba

    # largest first, so a small bubble is drawn over a large one that it lies in
    for z, p in enumerate(sorted(points, key=lambda p: (-p.params, p.name))):
        colour = _colour(colours, p.family)
        face = to_rgba(colour, 0.45) if p.paper_figure else "none"
        ax.scatter([p.macs / 1e9], [p.accuracy], s=_area(p.params), facecolors=[face], edgecolors=[colour],
                   linewidths=_EDGE_WIDTH, linestyles="solid" if p.paper_figure else (0, (3, 2)),
                   zorder=2 + z / 1000, gid=f"bubble-{p.name}")
    ax.scatter([p.macs / 1e9 for p in points], [p.accuracy for p in points], s=4, zorder=3, linewidths=0,
               c=[_colour(colours, p.family) for p in points])  # the centres, where the numbers are


def _draw_axes(ax, points: list[ChartPoint], metric: str) -> None:
    import matplotlib.ticker

    words = _METRIC_WORDS[metric]
    x = [p.macs / 1e9 for p in points]
    y = [p.accuracy for p in points]
    ax.set_xscale("log")
    ax.set_xlim(min(x) / 1.6, max(x) * 1.6)  # room for the labels beside the outermost bubbles
    ax.set_ylim(math.floor(min(y)) - 3.5, math.ceil(max(y)) + 3.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("operations per image at the model's native input, batch 1 (G-MACs, log scale)")
    ax.set_ylabel(f"ImageNet {words} accuracy, % (100 - reported {words} error)")
    ax.set_title(f"Comparing complexity: {words} accuracy against operations; bubble area proportional to "
                 "parameters", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.1)


def _draw_legends(ax, points: list[ChartPoint], colours: dict[str, str]) -> None:
    from matplotlib.lines import Line2D

    marker = dict(marker="o", linestyle="none", markeredgewidth=_EDGE_WIDTH)
    families = [Line2D([], [], markersize=9, markerfacecolor=_colour(colours, f), markeredgecolor=_colour(colours, f),
                       alpha=0.8, label=f, **marker) for f in sorted({p.family for p in points})]
    if not all(p.paper_figure for p in points):
        families.append(Line2D([], [], markersize=9, markerfacecolor="none", markeredgecolor="0.3",
                               label="not the paper's figure\n(hollow; see the note)", **marker))
    first = ax.legend(handles=families, title="family", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                      title_fontsize=9, frameon=False, borderaxespad=0)
    ax.add_artist(first)
    first.set_clip_on(False)  # add_artist clips to the axes, which would leave the legend out of the layout
    sizes = [Line2D([], [], markersize=math.sqrt(_area(n)), markerfacecolor="0.85", markeredgecolor="0.3",
                    label=f"{n / 1e6:g}M", **marker) for n in SIZE_LEGEND]
    ax.legend(handles=sizes, title="parameters", loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8,
              title_fontsize=9, frameon=False, borderaxespad=0, labelspacing=2.2, handlelength=3.5,
              handletextpad=1.0, borderpad=1.0)


def _draw_footnote(fig, rows: list[CompareRow], points: list[ChartPoint], metric: str) -> None:
    """Notes under the chart: figures that are not the papers' (with their sources), rows left off and why."""
    import textwrap

    notes = [f"{p.name}: {p.error_source}." for p in points if not p.paper_figure]
    if notes:
        notes[0] = "Hollow bubbles are not the papers' own figures. " + notes[0]
    by_reason: dict[str, list[str]] = {}
    for name, reason in _left_off(rows, metric).items():
        by_reason.setdefault(reason, []).append(name)
    if by_reason:
        notes.append("Left off: " + "; ".join(f"{reason}: {', '.join(names)}" for reason, names in by_reason.items())
                     + ".")
    notes.append("Errors as reported, by protocols that differ (1 or 10 crops, test scales); costs computed here.")
    fontsize = 7.0
    lines = [line for note in notes for line in textwrap.wrap(note, 190, subsequent_indent="    ")]
    height = (len(lines) * 1.3 * fontsize + 8) / 72 / FIGSIZE[1]  # figure fraction
    fig.get_layout_engine().set(rect=(0, height, 1, 1 - height))
    fig.text(0.008, height - 2 / 72 / FIGSIZE[1], "\n".join(lines), fontsize=fontsize, va="top", ha="left",
             linespacing=1.3, color="0.25")


def _place_labels(ax, points: list[ChartPoint]) -> None:
    """Label every bubble where the label overlaps no other label and no bubble but its own.

    Deterministic and greedy (the order is `free_beside`'s). A label tries positions touching its bubble
    (right, left, above, below, then the diagonals), then rings farther out, every 15 degrees, with a leader line to
    the bubble's edge. A position is allowed when the label stays inside the axes and keeps LABEL_GAP points from
    every other bubble, every placed label and every placed leader line, and its own leader line crosses no placed
    label or leader line; of those it takes the cheapest: the ring's number, plus 2 for each other bubble its leader
    line crosses. All in display coordinates, with the text's extent measured by the renderer.
    """
    renderer = ax.figure.canvas.get_renderer()
    px = ax.figure.dpi / 72  # pixels per point
    gap, spacing = _LABEL_GAP * px, _LABEL_SPACING * px
    frame = ax.get_window_extent(renderer)
    inside = (frame.x0 + gap, frame.y0 + gap, frame.x1 - gap, frame.y1 - gap)
    centres = [tuple(c) for c in ax.transData.transform([(p.macs / 1e9, p.accuracy) for p in points])]
    radii = [(math.sqrt(_area(p.params)) + _EDGE_WIDTH) / 2 * px for p in points]
    extents = []
    for p in points:
        probe = ax.text(0, 0, p.name, fontsize=LABEL_FONTSIZE)
        box = probe.get_window_extent(renderer)
        extents.append((box.width, box.height))
        probe.remove()

    # Who chooses first: the labels with the fewest places beside their bubble that no other bubble covers (so
    # they get one), then those with more; last those with none (they need a leader line and can go anywhere).
    def free_beside(i):
        others = [(centres[j], radii[j]) for j in range(len(points)) if j != i]
        return sum(not any(_circle_meets_box(c, rj, box, gap) for c, rj in others)
                   for ring, _, box in _candidates(*centres[i], radii[i], *extents[i], gap, inside, rings=1))

    free = [free_beside(i) for i in range(len(points))]
    boxes: list[tuple[float, float, float, float]] = []
    segments: list[tuple[tuple[float, float], tuple[float, float]]] = []
    placed: dict[int, tuple[tuple[float, float], bool]] = {}
    for i in sorted(range(len(points)), key=lambda i: (free[i], -radii[i], points[i].name)):
        (cx, cy), r, (w, h) = centres[i], radii[i], extents[i]
        others = [(centres[j], radii[j]) for j in range(len(points)) if j != i]
        best = None  # (cost, box, leader line or None)
        for ring, preference, box in _candidates(cx, cy, r, w, h, gap, inside):
            if best is not None and best[0] <= ring:
                break  # a later position costs at least its ring
            if (any(_circle_meets_box(c, rj, box, gap) for c, rj in others)
                    or any(_boxes_meet(box, b, spacing) for b in boxes)
                    or any(_segment_meets_box(a, b, _grown(box, gap)) for a, b in segments)):
                continue
            line = _leader(cx, cy, r, box) if ring else None
            crossed = 0
            if line is not None:
                if any(_segment_meets_box(*line, _grown(b, gap)) for b in boxes) or any(
                        _segments_cross(line, s) for s in segments):
                    continue
                crossed = sum(_segment_meets_circle(line, c, rj) for c, rj in others)
            cost = ring + 2 * crossed + preference / 100
            if best is None or cost < best[0]:
                best = cost, box, line
        if best is None:  # nowhere free (a selection far denser than the registry's): right of the bubble
            best = 0, (cx + r + gap, cy - h / 2, cx + r + gap + w, cy + h / 2), None
        _, box, line = best
        boxes.append(box)
        if line is not None:
            segments.append(line)
        placed[i] = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), line is not None

    to_data = ax.transData.inverted()
    for i, p in enumerate(points):
        centre, leader = placed[i]
        arrow = dict(arrowstyle="-", color="0.4", linewidth=0.6, shrinkA=1, shrinkB=radii[i] / px) if leader else None
        ax.annotate(p.name, (p.macs / 1e9, p.accuracy), xytext=tuple(to_data.transform(centre)), textcoords="data",
                    ha="center", va="center", fontsize=LABEL_FONTSIZE, zorder=5, arrowprops=arrow,
                    annotation_clip=False, gid=f"label-{p.name}")


# preferred directions: beside (right, left), above, below, then the diagonals; farther out, every 15 degrees
_NEAR = (0, 180, 90, 270, 30, 150, 330, 210)
_FAR = (0, 180, 90, 270, 45, 135, 315, 225, 15, 165, 345, 195, 30, 150, 330, 210, 60, 120, 300, 240, 75, 105, 285,
        255)
_RINGS = 40


def _candidates(cx, cy, r, w, h, gap, inside, rings=_RINGS):
    """Label boxes around a bubble inside the axes, nearest first: (ring, preference, box). A box in direction
    theta at distance d has its nearest corner (or edge, straight beside or above) on the circle of radius d."""
    step = max(0.75 * h, 5.0)
    for ring in range(rings):
        d = r + gap + ring * step
        for preference, degrees in enumerate(_NEAR if ring == 0 else _FAR):
            t = math.radians(degrees)
            dx, dy = math.cos(t), math.sin(t)
            dx, dy = (0.0 if abs(dx) < 1e-9 else dx), (0.0 if abs(dy) < 1e-9 else dy)
            bx = cx + dx * d + (w / 2) * (dx > 0) - (w / 2) * (dx < 0)
            by = cy + dy * d + (h / 2) * (dy > 0) - (h / 2) * (dy < 0)
            box = (bx - w / 2, by - h / 2, bx + w / 2, by + h / 2)
            if inside[0] <= box[0] and box[2] <= inside[2] and inside[1] <= box[1] and box[3] <= inside[3]:
                yield ring, preference, box


def _grown(box, pad: float):
    return box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad


def _segments_cross(s, t) -> bool:
    """Whether two segments cross (touching end points count)."""
    def side(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    (a, b), (c, d) = s, t
    d1, d2, d3, d4 = side(c, d, a), side(c, d, b), side(a, b, c), side(a, b, d)
    return d1 * d2 <= 0 and d3 * d4 <= 0 and (d1, d2, d3, d4) != (0, 0, 0, 0)


def _segment_meets_circle(segment, centre, r: float) -> bool:
    (ax_, ay), (bx, by) = segment
    dx, dy = bx - ax_, by - ay
    length = dx * dx + dy * dy or 1.0
    t = min(max(((centre[0] - ax_) * dx + (centre[1] - ay) * dy) / length, 0.0), 1.0)
    return math.dist((ax_ + t * dx, ay + t * dy), centre) < r


def _leader(cx, cy, r, box):
    """The leader line: from the bubble's edge toward the label, to the nearest point of the label's box."""
    qx, qy = min(max(cx, box[0]), box[2]), min(max(cy, box[1]), box[3])
    d = math.hypot(qx - cx, qy - cy) or 1.0
    return (cx + (qx - cx) * r / d, cy + (qy - cy) * r / d), (qx, qy)


def _boxes_meet(a, b, pad: float) -> bool:
    return a[0] - pad < b[2] and b[0] - pad < a[2] and a[1] - pad < b[3] and b[1] - pad < a[3]


def _circle_meets_box(centre, r: float, box, pad: float) -> bool:
    dx = max(box[0] - centre[0], 0.0, centre[0] - box[2])
    dy = max(box[1] - centre[1], 0.0, centre[1] - box[3])
    return dx * dx + dy * dy < (r + pad) ** 2


def _segment_meets_box(a, b, box) -> bool:
    """Whether the segment a-b crosses the box (Liang-Barsky clipping)."""
    t0, t1 = 0.0, 1.0
    dx, dy = b[0] - a[0], b[1] - a[1]
    for p, q in ((-dx, a[0] - box[0]), (dx, box[2] - a[0]), (-dy, a[1] - box[1]), (dy, box[3] - a[1])):
        if p == 0:
            if q < 0:
                return False
        else:
            t = q / p
            if p < 0:
                t0 = max(t0, t)
            else:
                t1 = min(t1, t)
            if t0 > t1:
                return False
    return t1 - t0 > 1e-6  # touching at its own end point (the label's leader) is not crossing
