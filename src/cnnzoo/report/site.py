"""The lecture as a static site: `write_report(out_dir, names)` writes HTML pages that open from file:// with no
network.

- `index.html`: the complexity chart (accuracy against MACs on a log axis, bubble area proportional to parameters,
  one colour per family; hover for the figures, click for the model's page, filters by family and dataset, a
  top-1/top-5 switch), the comparison table (sortable) and the lecture's claims with their verdicts;
- `models/NAME.html`: the card, the diagram, the per-layer table at every roll-up level, the receptive field's
  growth through the net, activation memory by layer, and the paper's training recipe;
- `families/FAMILY.html`: the variants of one paper side by side, per dataset.

The site is a reader: every figure comes from `compare`, `chart_points`, `claims`, `profile`, `model_card`,
`recipe_for` and `diagram`. Charts are SVG drawn here; the one script (assets/site.js, no library) only shows,
hides, sorts and fills in what the pages already hold. Pages are written atomically; each stays under 2 MB
(the full-depth layer table travels as compact JSON, rendered when its level is chosen).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from html import escape
from importlib import resources
from pathlib import Path

__all__ = ["write_report", "build_report", "lecture_claims", "Site", "ASSETS"]

ASSETS = ("site.css", "site.js")
TORCHVISION_DOCS = "https://pytorch.org/vision/stable/models/generated/torchvision.models.{}.html"
MAX_BARS = 120  # activation chart: the deepest roll-up with at most this many groups
# Colours for families, in the registry's sorted order of families (stable across reports of any subset).
PALETTE = ("#4363d8", "#f58231", "#3cb44b", "#e6194b", "#911eb4", "#9a6324", "#f032e6", "#808080", "#42d4f4",
           "#bfef45", "#000075", "#ffe119", "#469990", "#800000", "#808000", "#dcbeff", "#fabed4", "#aaffc3")
METRICS = {"top1": "top-1", "top5": "top-5"}


@dataclass(frozen=True)
class Site:
    """What `build_report` wrote: the index, every page, and how long it took."""

    index: Path
    pages: tuple[Path, ...]
    seconds: float
    blocks: dict = field(default_factory=dict)  # name -> top-level blocks of the diagram on its page

    @property
    def largest(self) -> tuple[Path, int]:
        """The largest page and its size in bytes."""
        sizes = [(p, p.stat().st_size) for p in self.pages]
        return max(sizes, key=lambda s: s[1])


def write_report(out_dir: str | os.PathLike, names: list[str] | str | None = None) -> Path:
    """Write the site for `names` (names or fnmatch patterns; None: the whole zoo) into `out_dir`; the index's path.

    Unknown names raise the registry's error (with the nearest names); a pattern matching nothing, a ValueError.
    """
    return build_report(out_dir, names).index


def build_report(out_dir: str | os.PathLike, names: list[str] | str | None = None) -> Site:
    """`write_report`, returning every page written and the time it took."""
    from cnnzoo.analysis.compare import LECTURE_SELECTION, chart_points, compare
    from cnnzoo.analysis.profile import profile
    from cnnzoo.registry import list_models, model_card

    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot write the report into {os.fspath(out)!r}: it is a file, not a folder")
    rows = compare(names)  # resolves names and patterns with the registry's errors
    for sub in ("assets", "models", "families"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    all_families = sorted({model_card(n).family for n in list_models()})
    colours = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(all_families)}
    ctx = _Context(rows=rows, cards={r.name: model_card(r.name) for r in rows}, colours=colours,
                   lecture=frozenset(LECTURE_SELECTION))
    pages = []
    for asset in ASSETS:
        _write(out / "assets" / asset, resources.files("cnnzoo.report").joinpath("assets").joinpath(asset).read_text(encoding="utf-8"))

    points = {metric: _chart_points(rows, chart_points, metric) for metric in METRICS}
    pages.append(_write(out / "index.html", _index(ctx, points, lecture_claims())))
    for row in rows:
        pages.append(_write(out / "models" / f"{row.name}.html", _model_page(ctx, row, profile(row.name))))
    for family in ctx.families:
        pages.append(_write(out / "families" / f"{family}.html", _family_page(ctx, family)))
    return Site(index=out / "index.html", pages=tuple(pages), seconds=time.perf_counter() - start,
                blocks=dict(ctx.blocks))


@functools.lru_cache(maxsize=1)
def lecture_claims() -> tuple:
    """`claims()`, computed once per process (they depend on the code only, and take seconds)."""
    from cnnzoo.analysis.claims import claims

    return tuple(claims())


def _chart_points(rows, chart_points, metric: str) -> list[tuple[str, object]]:
    """(dataset, ChartPoint) for every row with a reported error of `metric`, on any dataset.

    `chart_points` decides what goes on a chart and at which figure, for ImageNet rows (errors on different
    datasets are not comparable); the site gives each dataset its own chart, so it asks for each dataset's rows
    in turn as if they were ImageNet's and keeps the dataset beside each point.
    """
    out = []
    for dataset in dict.fromkeys(r.dataset for r in rows):
        group = [replace(r, dataset="imagenet") for r in rows if r.dataset == dataset]
        out.extend((dataset, p) for p in chart_points(group, metric=metric))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces


@dataclass(frozen=True)
class _Context:
    rows: list  # CompareRow, in compare's order (year, MACs, name)
    cards: dict  # name -> ModelCard
    colours: dict  # family -> colour
    lecture: frozenset  # the names on the lecture's chart
    diagrams: dict = field(default_factory=dict)  # name -> the inline SVG, drawn once for its page and its family's
    blocks: dict = field(default_factory=dict)  # name -> its diagram's top-level blocks

    def diagram(self, name: str) -> str:
        if name not in self.diagrams:
            from cnnzoo.report.diagram import diagram

            drawn = diagram(name)
            self.diagrams[name], self.blocks[name] = drawn.svg(standalone=False), drawn.blocks
        return self.diagrams[name]

    @property
    def families(self) -> list[str]:
        seen = []
        for r in self.rows:
            if r.family not in seen:
                seen.append(r.family)
        return seen

    def row(self, name: str):
        return next(r for r in self.rows if r.name == name)


def _write(path: Path, text: str) -> Path:
    from cnnzoo.train.checkpoint import atomic_write_text

    atomic_write_text(path, text)
    return path


def _e(value) -> str:
    return escape(str(value), quote=True)


def _json(data) -> str:
    """JSON to sit inside <script type="application/json">: no '<' can close the element."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")


def _si(n: float | None) -> str:
    """1.82G, 340M, 12.5K: three significant digits."""
    if n is None:
        return "-"
    for unit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= unit:
            return f"{n / unit:.3g}{suffix}"
    return f"{n:g}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= unit:
            return f"{n / unit:.3g} {suffix}"
    return f"{n:g} B"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:g}%"


def _shape(shape) -> str:
    return "not run" if shape is None else "x".join(map(str, shape))


def _page(title: str, root: str, body: str, ctx: _Context, here: str = "") -> str:
    nav = " ".join(
        f'<a href="{root}families/{_e(f)}.html"{" aria-current=page" if f == here else ""}>{_e(f)}</a>'
        for f in ctx.families)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><link rel=\"icon\" href=\"data:,\">"
        f"<link rel=\"stylesheet\" href=\"{root}assets/site.css\"><script src=\"{root}assets/site.js\" defer></script>"
        "</head><body>\n"
        f"<header><a class=\"home\" href=\"{root}index.html\">cnnzoo</a><nav aria-label=\"families\">{nav}</nav>"
        "</header>\n<main>\n" + body + "\n</main>\n"
        "<footer>Written by <code>cnnzoo report</code>: every figure computed from the models on PyTorch's meta "
        "device (batch 1, eval mode, each model's native input) or quoted from its paper, as marked.</footer>\n"
        "</body></html>\n"
    )


def _model_link(name: str, root: str) -> str:
    return f'<a href="{root}models/{_e(name)}.html">{_e(name)}</a>'


# ---------------------------------------------------------------------------------------------------------------
# Index: chart, comparison table, claims


def _index(ctx: _Context, points: dict, lecture_claims: list) -> str:
    body = [
        "<h1>The classic CNNs, computed</h1>",
        f"<p class=\"lead\">{len(ctx.rows)} models of {len(ctx.families)} families, each built as its paper "
        "specified. Parameters, multiply-accumulates (MACs) and activation memory are computed; errors are the ones "
        "the papers report, on their own datasets.</p>",
        _chart_section(ctx, points),
        _compare_section(ctx),
        _claims_section(lecture_claims),
        _family_list(ctx),
    ]
    return _page("cnnzoo: the classic CNNs", "", "\n".join(body), ctx)


def _chart_section(ctx: _Context, points: dict) -> str:
    groups = {}  # (dataset, metric) -> points
    for metric, pts in points.items():
        for dataset, p in pts:
            groups.setdefault((dataset, metric), []).append(p)
    if not groups:
        return ("<section id=\"chart\"><h2>Comparing complexity</h2><p>None of these models has a reported "
                "error to chart.</p></section>")
    datasets = sorted({d for d, _ in groups}, key=lambda d: (d != "imagenet", d))
    shown_families = [f for f in ctx.families if any(p.family == f for pts in groups.values() for p in pts)]
    largest = max(p.params for pts in groups.values() for p in pts)
    figures = []
    for dataset in datasets:
        for metric in METRICS:
            pts = groups.get((dataset, metric), [])
            hidden = "" if (dataset, metric) == (datasets[0], "top1") else " hidden"
            figures.append(
                f'<figure class="chart" data-dataset="{_e(dataset)}" data-metric="{metric}"{hidden}>'
                + (_chart_svg(ctx, pts, dataset, metric, largest) if pts else
                   f"<p class=\"empty\">No {_e(dataset)} model here has a reported {METRICS[metric]} error.</p>")
                + "</figure>")
    family_boxes = "".join(
        f'<label><input type="checkbox" name="family" value="{_e(f)}" checked>'
        f'<span class="swatch" style="background:{ctx.colours[f]}"></span>{_e(f)}</label>' for f in shown_families)
    dataset_radios = "".join(
        f'<label><input type="radio" name="dataset" value="{_e(d)}"{" checked" if i == 0 else ""}>{_e(d)}</label>'
        for i, d in enumerate(datasets))
    metric_radios = "".join(
        f'<label><input type="radio" name="metric" value="{m}"{" checked" if m == "top1" else ""}>{label}</label>'
        for m, label in METRICS.items())
    return (
        '<section id="chart" class="chart-box"><h2>Comparing complexity</h2>'
        "<p>Accuracy (100 − the reported error) against multiply-accumulates per image, on a log axis; a bubble's "
        "area is proportional to the model's parameters. Hover over a bubble for its figures, click it for its "
        "page. A dashed outline marks an error that is not the paper's own figure (the tooltip names its source). "
        "Errors on different datasets are not comparable, so each dataset has its own chart.</p>"
        '<form class="filters" onsubmit="return false">'
        f'<fieldset><legend>dataset</legend>{dataset_radios}</fieldset>'
        f'<fieldset><legend>error</legend>{metric_radios}</fieldset>'
        '<fieldset><legend>selection</legend><label><input type="checkbox" name="lecture">only the lecture\'s '
        'chart</label></fieldset>'
        f'<fieldset class="families"><legend>family</legend>{family_boxes}'
        '<button type="button" class="all">all</button><button type="button" class="none">none</button></fieldset>'
        "</form>"
        f'<div class="chart-row">{"".join(figures)}{_size_legend(largest)}</div>'
        '<p class="shown" aria-live="polite"></p>'
        '<div class="tooltip" role="tooltip" hidden></div></section>'
    )


_W, _H = 860, 470
_M = dict(left=64, right=24, top=20, bottom=50)
_R_MAX = 30.0  # px: the radius of the largest model's bubble


def _radius(params: int, largest: int) -> float:
    return max(2.5, _R_MAX * math.sqrt(params / largest))


def _chart_svg(ctx: _Context, pts: list, dataset: str, metric: str, largest: int) -> str:
    x0, x1 = _M["left"], _W - _M["right"]
    y0, y1 = _H - _M["bottom"], _M["top"]
    lo = math.log10(min(p.macs for p in pts)) - 0.25  # room for the bubbles at either end
    hi = max(math.log10(max(p.macs for p in pts)) + 0.25, lo + 1)
    acc = [100 - p.error for p in pts]
    step = 5 if max(acc) - min(acc) <= 30 else 10
    a_lo = max(0, step * math.floor((min(acc) - 2) / step))
    a_hi = min(100, step * math.ceil((max(acc) + 2) / step))

    def x(macs):
        return x0 + (math.log10(macs) - lo) / (hi - lo) * (x1 - x0)

    def y(a):
        return y0 - (a - a_lo) / (a_hi - a_lo) * (y0 - y1)

    parts = [f'<svg class="complexity" viewBox="0 0 {_W} {_H}" role="img" aria-label="{_e(dataset)} '
             f'{METRICS[metric]} accuracy against MACs">']
    for d in range(math.floor(lo), math.ceil(hi) + 1):  # decades, and 2..9 times each, within the axis
        if lo <= d <= hi:
            xd = x(10 ** d)
            parts.append(f'<line class="grid" x1="{xd:.1f}" y1="{y1}" x2="{xd:.1f}" y2="{y0}"/>'
                         f'<text class="tick" x="{xd:.1f}" y="{y0 + 16}" text-anchor="middle">{_si(10 ** d)}</text>')
        for k in range(2, 10):
            if lo <= d + math.log10(k) <= hi:
                xk = x(k * 10 ** d)
                parts.append(f'<line class="minor" x1="{xk:.1f}" y1="{y0}" x2="{xk:.1f}" y2="{y0 - 4}"/>')
    a = a_lo
    while a <= a_hi:
        parts.append(f'<line class="grid" x1="{x0}" y1="{y(a):.1f}" x2="{x1}" y2="{y(a):.1f}"/>'
                     f'<text class="tick" x="{x0 - 6}" y="{y(a) + 4:.1f}" text-anchor="end">{a:g}</text>')
        a += step
    parts.append(f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/>'
                 f'<line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>'
                 f'<text class="axis-label" x="{(x0 + x1) / 2}" y="{_H - 10}" text-anchor="middle">'
                 f'multiply-accumulates per image ({_e(dataset)} input, log scale)</text>'
                 f'<text class="axis-label" transform="translate(16 {(y0 + y1) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{METRICS[metric]} accuracy, %</text>')
    labels = []
    for p in sorted(pts, key=lambda p: -p.params):  # small bubbles drawn last, on top
        row = ctx.row(p.name)
        cx, cy, r = x(p.macs), y(100 - p.error), _radius(p.params, largest)
        lecture = "1" if p.name in ctx.lecture else "0"
        parts.append(
            f'<a href="models/{_e(p.name)}.html" data-family="{_e(p.family)}" data-lecture="{lecture}">'
            f'<circle class="bubble{"" if p.paper_figure else " other"}" cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" '
            f'fill="{ctx.colours[p.family]}" data-name="{_e(p.name)}" data-family="{_e(p.family)}" '
            f'data-dataset="{_e(row.dataset)}" data-params="{_si(p.params)}" data-macs="{_si(p.macs)}" '
            f'data-activations="{_bytes(p.activation_bytes)}" data-error="{p.error:g}" '
            f'data-metric="{METRICS[metric]}" data-source="{_e(p.error_source)}" '
            f'data-paper="{"1" if p.paper_figure else "0"}"/></a>')
        if p.name in ctx.lecture:
            labels.append(f'<text class="label" data-family="{_e(p.family)}" data-lecture="1" x="{cx:.1f}" '
                          f'y="{cy - r - 3:.1f}" text-anchor="middle">{_e(p.name)}</text>')
    parts.extend(labels)
    parts.append("</svg>")
    return "".join(parts)


def _size_legend(largest: int) -> str:
    sizes = [s for s in (5e6, 25e6, 100e6) if s <= largest] or [largest]
    rs = [_radius(s, largest) for s in sizes]
    height = 2 * max(rs) + 24
    parts = [f'<svg class="size-legend" viewBox="0 0 110 {height:.0f}" width="110" role="img" '
             f'aria-label="bubble sizes"><text x="0" y="12">parameters</text>']
    for s, r in zip(sizes, rs):
        cy = height - 4 - r
        parts.append(f'<circle cx="{4 + max(rs):.1f}" cy="{cy:.1f}" r="{r:.1f}"/>'
                     f'<text x="{8 + 2 * max(rs):.1f}" y="{height - 4 - 2 * r + 4:.1f}">{_si(s)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_COMPARE_COLUMNS = (  # header, kind ("text" or "num"), title
    ("model", "text", ""), ("family", "text", ""), ("year", "num", ""), ("dataset", "text", ""),
    ("input", "text", "C x H x W"), ("params", "num", "parameters, computed"),
    ("MACs", "num", "multiply-accumulates per image, computed"),
    ("activations", "num", "memory of the tensors a forward pass creates, per image (float32)"),
    ("depth", "num", "the most convolution and linear layers on one input-to-output path"),
    ("top-1 err", "num", "% as the paper reports it, on its dataset"),
    ("top-5 err", "num", "% as the paper reports it, on its dataset"), ("source", "text", "where the errors are stated"),
)


def _compare_section(ctx: _Context) -> str:
    head = "".join(
        f'<th data-type="{kind}"{f" title={_q(title)}" if title else ""}><button type="button">{_e(h)}</button></th>'
        for h, kind, title in _COMPARE_COLUMNS)
    body = []
    for r in ctx.rows:
        cells = [
            (r.name, _model_link(r.name, "")), (r.family, f'<a href="families/{_e(r.family)}.html">{_e(r.family)}</a>'),
            (r.year, str(r.year)), (r.dataset, _e(r.dataset)), ("x".join(map(str, r.input_size)),) * 2,
            (r.params, _si(r.params)), (r.macs, _si(r.macs)), (r.activation_bytes, _bytes(r.activation_bytes)),
            (r.depth, str(r.depth)), (r.top1_err, _pct(r.top1_err)), (r.top5_err, _pct(r.top5_err)),
            (r.err_source, _e(r.err_source or "-")),
        ]
        body.append("<tr>" + "".join(
            f'<td data-sort="{"" if key is None else _e(key)}">{shown}</td>' for key, shown in cells) + "</tr>")
    return ('<section id="compare"><h2>Side by side</h2><p>Click a column\'s header to sort by it (again to '
            'reverse). Computed at each model\'s native input, batch 1, eval mode.</p>'
            f'<div class="scroll"><table class="sortable compare"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></section>')


def _q(text: str) -> str:
    return f'"{_e(text)}"'


def _claims_section(lecture_claims: list) -> str:
    counts = {}
    for c in lecture_claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    body = "".join(
        f'<tr class="verdict-{_e(c.verdict)}"><td>{_e(c.claim)}</td><td>{_e(c.lecture)}</td><td>{_e(c.computed)}</td>'
        f'<td><span class="verdict">{_e(c.verdict)}</span></td><td>{_e(c.explanation)}</td></tr>'
        for c in lecture_claims)
    return ('<section id="claims"><h2>The lecture\'s numbers, recomputed</h2>'
            f"<p>Every quantitative statement of the lecture, recomputed from the real models and blocks "
            f"({len(lecture_claims)} claims: {_e(summary)}). <code>cnnzoo claims</code> prints the same.</p>"
            '<div class="scroll"><table class="claims"><thead><tr><th>claim</th><th>lecture</th><th>computed</th>'
            f"<th>verdict</th><th>why</th></tr></thead><tbody>{body}</tbody></table></div></section>")


def _family_list(ctx: _Context) -> str:
    items = []
    for f in ctx.families:
        members = [r for r in ctx.rows if r.family == f]
        paper = ctx.cards[members[0].name].paper
        items.append(f'<li><a href="families/{_e(f)}.html">{_e(f)}</a> <span class="muted">({_e(paper.short)})'
                     f"</span>: " + ", ".join(_model_link(r.name, "") for r in members) + "</li>")
    return f'<section id="families"><h2>Families</h2><ul class="families">{"".join(items)}</ul></section>'


# ---------------------------------------------------------------------------------------------------------------
# A model's page


def _model_page(ctx: _Context, row, prof) -> str:
    card = ctx.cards[row.name]
    body = [
        f"<h1>{_e(row.name)}</h1>",
        f'<p class="lead"><a href="../families/{_e(card.family)}.html">{_e(card.family)}</a> · '
        f"{_e(card.paper.short)} · {_e(card.dataset)}, input {_e(_shape(card.input_size))}</p>",
        _card_section(card, row, prof),
        '<section id="diagram"><h2>Diagram</h2><div class="diagram">'
        + ctx.diagram(row.name) + "</div></section>",
        _layers_section(prof),
        _rf_section(prof),
        _memory_section(prof),
        _recipe_section(row.name),
    ]
    return _page(f"{row.name} · cnnzoo", "../", "\n".join(body), ctx, here=card.family)


def _reported(value, source: str, fmt) -> str:
    if value is None:
        return '<span class="muted">not stated in the paper</span>'
    return f"{_e(fmt(value))}" + (f' <span class="muted">({_e(source)})</span>' if source else "")


def _card_section(card, row, prof) -> str:
    paper = card.paper
    twin = (f'<a href="{_e(TORCHVISION_DOCS.format(card.torchvision))}">torchvision.models.{_e(card.torchvision)}'
            "</a> (identical state_dict: its pretrained weights load)" if card.torchvision
            else '<span class="muted">none</span>')
    errors = []
    if card.top1_err is not None:
        errors.append(f"top-1 {card.top1_err:g}%")
    if card.top5_err is not None:
        errors.append(f"top-5 {card.top5_err:g}%")
    error = (f"{_e(', '.join(errors))} <span class=\"muted\">({_e(card.err_source)})</span>" if errors
             else '<span class="muted">not stated in the paper</span>')
    if card.other_top1_err is not None:
        error += (f"<br>top-1 {card.other_top1_err:g}% <span class=\"muted\">(not the paper's figure: "
                  f"{_e(card.other_top1_source)})</span>")
    items = [
        ("paper", f'{_e(paper.cite())} <a href="{_e(paper.url)}">{_e(paper.url)}</a>'),
        ("dataset", f"{_e(card.dataset)}, {card.num_classes:,} classes, input {_e(_shape(card.input_size))}"),
        ("parameters", f"{prof.params:,} computed; paper: "
         + _reported(card.params, card.params_source, _si)),
        ("MACs", f"{_si(prof.macs)} computed ({prof.macs:,}); paper: " + _reported(card.macs, card.macs_source, _si)),
        ("activations", f"{_bytes(prof.activation_bytes)} per image in a forward pass; a training step holds "
         f"{_bytes(prof.train_memory_bytes)} (parameters, gradients, momentum, saved activations)"),
        ("depth", f"{row.depth} weight layers on the longest path"),
        ("reported error", error),
        ("torchvision twin", twin),
    ]
    deviations = "".join(f"<li>{_e(d)}</li>" for d in card.deviations) or "<li>none known</li>"
    return ('<section id="card"><h2>Card</h2><dl class="card">'
            + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
            + f'</dl><h3>Deviations from the paper</h3><ul class="deviations">{deviations}</ul></section>')


_LAYER_COLUMNS = ("layer", "type", "output", "params", "MACs", "activations", "RF", "jump")


def _layer_cells(r) -> list[str]:
    return [
        r.name or "(top level)", r.type + (f" ({r.calls} calls)" if r.calls > 1 else ""), _shape(r.output_shape),
        f"{r.params:,}" if r.params else "-", _si(r.macs) if r.macs else "-",
        _bytes(r.activation_bytes) if r.activation_bytes else "-",
        "?" if r.receptive_field is None else str(r.receptive_field), "?" if r.jump is None else str(r.jump),
    ]


def _levels(prof) -> list[tuple[str, tuple]]:
    """(label, records) for each roll-up depth that differs from the one before, then every layer."""
    deepest = max((r.depth for r in prof.layers), default=0)
    levels, seen = [], set()
    for depth in range(1, deepest):
        records = prof.rollup(depth)
        if len(records) not in seen and len(records) < len(prof.layers):
            levels.append((f"depth {depth}", records))
            seen.add(len(records))
    levels.append(("every layer", prof.layers))
    return levels


def _layers_section(prof) -> str:
    levels = _levels(prof)
    data = {"columns": _LAYER_COLUMNS,
            "levels": [{"label": label, "rows": [_layer_cells(r) for r in records]} for label, records in levels]}
    buttons = "".join(
        f'<button type="button" data-level="{i}"{" aria-pressed=true" if i == 0 else " aria-pressed=false"}>'
        f"{_e(label)} ({len(records)})</button>" for i, (label, records) in enumerate(levels))
    head = "".join(f"<th>{c}</th>" for c in _LAYER_COLUMNS)
    total = ["total", "", "", f"{prof.params:,}", _si(prof.macs), _bytes(prof.activation_bytes), "", ""]
    return ('<section id="layers" class="layers"><h2>Layer by layer</h2>'
            "<p>Each roll-up level groups the layers by the first parts of their module path; every level sums to "
            "the same totals. RF: the receptive field of one output unit, in input pixels; jump: the distance in "
            "input pixels between neighbouring output units.</p>"
            f'<div class="levels" role="group" aria-label="roll-up level">{buttons}</div>'
            f'<div class="scroll tall"><table class="layer-table"><thead><tr>{head}</tr></thead><tbody></tbody>'
            f'<tfoot><tr>{"".join(f"<td>{_e(c)}</td>" for c in total)}</tr></tfoot></table></div>'
            "<noscript><p>The layer table needs JavaScript; <code>cnnzoo summary NAME</code> prints it.</p>"
            f'</noscript><script type="application/json" class="layer-data">{_json(data)}</script></section>')


def _rf_section(prof) -> str:
    records = [r for r in prof.layers if r.receptive_field is not None and r.output_shape is not None
               and len(r.output_shape) == 4]
    if not records:
        return ('<section id="receptive-field"><h2>Receptive field</h2><p>No spatial layer with a known receptive '
                "field.</p></section>")
    w, h, left, right, top, bottom = 860, 300, 64, 24, 16, 44
    n = len(records)
    side = max(prof.input_size[1:])
    top_rf = max(max(r.receptive_field for r in records), side)

    def x(i):
        return left + (i / max(n - 1, 1)) * (w - left - right)

    def y(v):
        return h - bottom - v / top_rf * (h - top - bottom)

    path = " ".join(f"{x(i):.1f},{y(r.receptive_field):.1f}" for i, r in enumerate(records))
    parts = [f'<svg class="rf" viewBox="0 0 {w} {h}" role="img" aria-label="receptive field by layer">']
    for v in _nice_ticks(top_rf):
        parts.append(f'<line class="grid" x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    parts.append(f'<line class="input-size" x1="{left}" x2="{w - right}" y1="{y(side):.1f}" y2="{y(side):.1f}"/>'
                 f'<text class="note" x="{w - right}" y="{y(side) - 4:.1f}" text-anchor="end">input side, {side} px'
                 "</text>")
    # the top-level blocks along the x axis: where each starts
    starts, last = [], None
    for i, r in enumerate(records):
        block = r.name.split(".")[0] if r.name else ""
        if block != last:
            starts.append((i, block))
            last = block
    labelled_at = -1e9
    for i, block in starts if len(starts) <= 60 else ():
        parts.append(f'<line class="block-start" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{h - bottom}"/>')
        if x(i) - labelled_at >= 44:  # a label where there is room since the last one
            labelled_at = x(i)
            parts.append(f'<text class="tick" transform="translate({x(i) + 3:.1f} {h - bottom + 12}) rotate(30)">'
                         f"{_e(block)}</text>")
    parts.append(f'<polyline class="rf-line" points="{path}"/>')
    if n <= 300:
        for i, r in enumerate(records):
            parts.append(f'<circle class="rf-point" cx="{x(i):.1f}" cy="{y(r.receptive_field):.1f}" r="2.5">'
                         f"<title>{_e(r.name)} ({_e(r.type)}): RF {r.receptive_field} px, jump {r.jump}</title>"
                         "</circle>")
    parts.append(f'<text class="axis-label" x="{(left + w - right) / 2}" y="{h - 4}" text-anchor="middle">'
                 f"layers in forward order ({n} with a spatial output)</text></svg>")
    final = records[-1]
    return ('<section id="receptive-field"><h2>Receptive field</h2>'
            f"<p>How much of the input one unit sees, layer by layer: {final.receptive_field} px after "
            f"{_e(final.name)} (jump {final.jump}), against an input side of {side} px. Where branches meet, "
            "the larger field counts; a dip is a branch that sees less than the one before it in forward order "
            "(a shortcut's 1x1 projection, a 1x1 branch of an inception module). Dotted lines: where each "
            "top-level block starts.</p>" + "".join(parts) + "</section>")


def _nice_ticks(top: float) -> list[float]:
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(s * mag for s in (1, 2, 5, 10) if s * mag >= raw)
    return [i * step for i in range(int(top // step) + 1)]


def _memory_level(prof) -> tuple[str, tuple]:
    deepest = max((r.depth for r in prof.layers), default=0)
    chosen = ("depth 1", prof.rollup(1))
    for depth in range(1, deepest + 1):
        records = prof.rollup(depth)
        if len(records) <= MAX_BARS:
            chosen = (f"depth {depth}" if depth < deepest else "every layer", records)
    return chosen


def _memory_section(prof) -> str:
    label, records = _memory_level(prof)
    records = [r for r in records if r.output_shape is not None]
    w, h, left, right, top, bottom = 860, 260, 64, 24, 16, 40
    top_bytes = max((r.activation_bytes for r in records), default=0)
    if not top_bytes:
        return '<section id="memory"><h2>Activation memory</h2><p>No activations recorded.</p></section>'
    unit, suffix = next((u, s) for u, s in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B"))
                        if top_bytes >= u)
    top_v = top_bytes / unit
    band = (w - left - right) / len(records)
    parts = [f'<svg class="memory" viewBox="0 0 {w} {h}" role="img" aria-label="activation memory by layer">']

    def y(v):
        return h - bottom - v / top_v * (h - top - bottom)

    for v in _nice_ticks(top_v):
        parts.append(f'<line class="grid" x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for i, r in enumerate(records):
        v = r.activation_bytes / unit
        parts.append(f'<rect class="bar" x="{left + i * band + band * 0.1:.1f}" y="{y(v):.1f}" '
                     f'width="{max(band * 0.8, 0.5):.1f}" height="{y(0) - y(v):.1f}"><title>{_e(r.name or r.type)}: '
                     f"{_bytes(r.activation_bytes)}, output {_e(_shape(r.output_shape))}</title></rect>")
    parts.append(f'<text class="axis-label" transform="translate(16 {(top + h - bottom) / 2}) rotate(-90)" '
                 f'text-anchor="middle">{suffix}</text>'
                 f'<text class="axis-label" x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">'
                 f"{len(records)} groups ({_e(label)}) in forward order; hover a bar for its name</text></svg>")
    biggest = max(records, key=lambda r: r.activation_bytes)
    return ('<section id="memory"><h2>Activation memory</h2>'
            f"<p>The tensors each part of the net creates in a forward pass, per image (float32): "
            f"{_bytes(prof.activation_bytes)} in all, the most in {_e(biggest.name or biggest.type)} "
            f"({_bytes(biggest.activation_bytes)}).</p>"
            + "".join(parts) + "</section>")


_RECIPE_SKIP = ("name", "family", "dataset", "notes", "assumed", "source")


def _recipe_section(name: str) -> str:
    from cnnzoo.train.recipes import recipe_for

    try:
        recipe = recipe_for(name)
    except ValueError as err:
        return f'<section id="recipe"><h2>Training recipe</h2><p class="muted">{_e(err)}</p></section>'
    data = recipe.to_dict()
    assumed = set(recipe.assumed)
    items = []
    for key, value in data.items():
        if key in _RECIPE_SKIP or value is None or value == [] or (key in ("label_smoothing", "warmup_iters")
                                                                   and not value):
            continue
        if key == "schedule":
            value = recipe.schedule.in_words()
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        mark = ' <span class="muted">(not stated in the paper)</span>' if key in assumed or any(
            a.startswith(f"{key}.") for a in assumed) else ""
        items.append(f"<dt>{_e(key)}</dt><dd>{_e(_g(value))}{mark}</dd>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in recipe.notes)
    return ('<section id="recipe"><h2>Training recipe</h2>'
            f"<p>The paper's ({_e(recipe.family)} on {_e(recipe.dataset)}, {_e(recipe.source)}); "
            f"<code>cnnzoo train {_e(name)} --data D</code> uses it.</p>"
            f'<dl class="card">{"".join(items)}</dl>' + (f"<ul>{notes}</ul>" if notes else "") + "</section>")


def _g(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------------------------
# A family's page


def _family_page(ctx: _Context, family: str) -> str:
    members = [r for r in ctx.rows if r.family == family]
    paper = ctx.cards[members[0].name].paper
    body = [f"<h1>{_e(family)}</h1>",
            f'<p class="lead">{_e(paper.cite())} <a href="{_e(paper.url)}">{_e(paper.url)}</a></p>']
    datasets = []
    for r in members:
        if r.dataset not in datasets:
            datasets.append(r.dataset)
    for dataset in datasets:
        group = sorted((r for r in members if r.dataset == dataset), key=lambda r: (r.macs, r.name))
        rows = [
            ("input", lambda r: _e(_shape(r.input_size))), ("parameters", lambda r: _si(r.params)),
            ("MACs", lambda r: _si(r.macs)), ("activations", lambda r: _bytes(r.activation_bytes)),
            ("depth", lambda r: str(r.depth)), ("top-1 error", lambda r: _pct(r.top1_err)),
            ("top-5 error", lambda r: _pct(r.top5_err)),
            ("torchvision", lambda r: _e(ctx.cards[r.name].torchvision or "-")),
        ]
        head = "".join(f"<th>{_model_link(r.name, '../')}</th>" for r in group)
        table = "".join(f"<tr><th>{label}</th>" + "".join(f"<td>{cell(r)}</td>" for r in group) + "</tr>"
                        for label, cell in rows)
        diagrams = "".join(
            f'<figure class="variant"><figcaption>{_model_link(r.name, "../")} · {_si(r.params)} params · '
            f'{_si(r.macs)} MACs</figcaption><div class="diagram">{ctx.diagram(r.name)}</div>'
            "</figure>" for r in group)
        order = (f'<p class="muted">{len(group)} variants, the cheapest first'
                 f'{" (scroll sideways for the rest)" if len(group) > 2 else ""}.</p>' if len(group) > 1 else "")
        body.append(f'<section class="dataset" data-dataset="{_e(dataset)}"><h2>On {_e(dataset)}</h2>'
                    f'<div class="scroll"><table class="variants"><thead><tr><th></th>{head}</tr></thead>'
                    f"<tbody>{table}</tbody></table></div>"
                    f"{order}"
                    f'<div class="side-by-side">{diagrams}</div></section>')
    return _page(f"{family} · cnnzoo", "../", "\n".join(body), ctx, here=family)
