"""Drawing primitives of a diagram, written as SVG text (by hand: deterministic, text stays text) or drawn with
matplotlib for PNG and PDF (the optional `plot` extra)."""

from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
FONT_SIZE = 11
CHAR_WIDTH = 6.4  # average advance of FONT at FONT_SIZE px (DejaVu Sans is wide); boxes are sized from it


def text_width(text: str, size: float = FONT_SIZE) -> float:
    return len(text) * CHAR_WIDTH * size / FONT_SIZE


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str = "none"
    stroke: str = "#444"
    dash: bool = False
    radius: float = 3.0
    width: float = 1.0


@dataclass
class Circle:
    x: float
    y: float
    r: float
    fill: str
    stroke: str = "#444"


@dataclass
class Text:
    x: float
    y: float  # baseline
    text: str
    size: float = FONT_SIZE
    anchor: str = "start"  # start | middle | end
    fill: str = "#111"
    bold: bool = False
    parts: tuple = ()  # ((text, fill), ...) drawn in sequence in place of `text`, e.g. a lighter suffix


@dataclass
class Line:
    points: list[tuple[float, float]]
    stroke: str = "#555"
    dash: bool = False
    arrow: bool = True
    width: float = 1.0


@dataclass
class Group:
    """SVG <g> with a class and data attributes; children are drawn in order."""

    css: str
    data: dict = field(default_factory=dict)
    children: list = field(default_factory=list)
    title: str = ""  # a tooltip (SVG <title>)


def svg(items: list, width: float, height: float, *, standalone: bool = True, attributes: dict | None = None,
        marker: str = "arrow") -> str:
    """The SVG document (standalone) or element (for inlining in HTML) of the primitives; `marker` is the id of
    the arrowhead, unique per diagram where several share a page."""
    extra = "".join(f' {k}="{_esc(v)}"' for k, v in (attributes or {}).items())
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}" font-size="{FONT_SIZE}"{extra}>')
    defs = (f'<defs><marker id="{marker}" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>')
    body: list[str] = []
    _emit(items, body, marker)
    text = head + defs + "".join(body) + "</svg>"
    if standalone:
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"
    return text


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _emit(items: list, out: list[str], marker: str) -> None:
    for item in items:
        if isinstance(item, Group):
            data = "".join(f' data-{k}="{_esc(v)}"' for k, v in item.data.items())
            out.append(f'<g class="{_esc(item.css)}"{data}>')
            if item.title:
                out.append(f"<title>{_esc(item.title)}</title>")
            _emit(item.children, out, marker)
            out.append("</g>")
        elif isinstance(item, Rect):
            dash = ' stroke-dasharray="4 3"' if item.dash else ""
            out.append(f'<rect x="{item.x:.1f}" y="{item.y:.1f}" width="{item.w:.1f}" height="{item.h:.1f}" '
                       f'rx="{item.radius:g}" fill="{item.fill}" stroke="{item.stroke}" '
                       f'stroke-width="{item.width:g}"{dash}/>')
        elif isinstance(item, Circle):
            out.append(f'<circle cx="{item.x:.1f}" cy="{item.y:.1f}" r="{item.r:g}" fill="{item.fill}" '
                       f'stroke="{item.stroke}"/>')
        elif isinstance(item, Text):
            weight = ' font-weight="bold"' if item.bold else ""
            size = f' font-size="{item.size:g}"' if item.size != FONT_SIZE else ""
            anchor = f' text-anchor="{item.anchor}"' if item.anchor != "start" else ""
            if item.parts:
                inner = "".join(f'<tspan fill="{fill}">{_esc(t)}</tspan>' for t, fill in item.parts)
            else:
                inner = _esc(item.text)
            out.append(f'<text x="{item.x:.1f}" y="{item.y:.1f}" fill="{item.fill}"{anchor}{size}{weight}>'
                       f"{inner}</text>")
        elif isinstance(item, Line):
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in item.points)
            dash = ' stroke-dasharray="3 3"' if item.dash else ""
            end = f' marker-end="url(#{marker})"' if item.arrow else ""
            out.append(f'<polyline points="{d}" fill="none" stroke="{item.stroke}" '
                       f'stroke-width="{item.width:g}"{dash}{end}/>')


def save_raster(items: list, width: float, height: float, path: str | os.PathLike) -> Path:
    """Draw the primitives with matplotlib into a PNG or PDF (one pixel of the SVG is one point / 0.75)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Circle as MplCircle
        from matplotlib.patches import FancyBboxPatch
    except ImportError:
        from cnnzoo.analysis.compare import PlotUnavailable

        raise PlotUnavailable("PNG and PDF diagrams need matplotlib: pip install 'cnnzoo[plot]' "
                              "(an SVG needs nothing)") from None
    dpi = 100
    scale = 2  # PNG at twice the SVG's pixel size, for sharp text
    fig = plt.figure(figsize=(width / dpi * scale, height / dpi * scale), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    points = 72 / dpi * scale  # font size in points for one SVG pixel

    def draw(items):
        for item in items:
            if isinstance(item, Group):
                draw(item.children)
            elif isinstance(item, Rect):
                ax.add_patch(FancyBboxPatch((item.x, item.y), item.w, item.h,
                                            boxstyle=f"round,pad=0,rounding_size={item.radius}",
                                            facecolor=item.fill if item.fill != "none" else "none",
                                            edgecolor=item.stroke, linewidth=item.width * points,
                                            linestyle=(0, (4, 3)) if item.dash else "-"))
            elif isinstance(item, Circle):
                ax.add_patch(MplCircle((item.x, item.y), item.r, facecolor=item.fill, edgecolor=item.stroke,
                                       linewidth=points))
            elif isinstance(item, Text):  # one string: matplotlib's advances differ from the SVG estimate
                text = "".join(t for t, _ in item.parts) if item.parts else item.text
                ha = {"start": "left", "middle": "center", "end": "right"}[item.anchor]
                ax.text(item.x, item.y, text, color=item.fill, fontsize=item.size * points, ha=ha, va="baseline",
                        fontweight="bold" if item.bold else "normal", family="DejaVu Sans")
            elif isinstance(item, Line):
                xs, ys = zip(*item.points)
                ax.plot(xs, ys, color=item.stroke, linewidth=item.width * points,
                        linestyle=(0, (3, 3)) if item.dash else "-")
                if item.arrow and len(item.points) >= 2:
                    (x0, y0), (x1, y1) = item.points[-2], item.points[-1]
                    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                                arrowprops=dict(arrowstyle="-|>", color=item.stroke, lw=0,
                                                mutation_scale=7 * points, shrinkA=0, shrinkB=0))

    draw(items)
    path = Path(path)
    from cnnzoo.train.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=path.suffix[1:], dpi=dpi)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getbuffer())
    return path
