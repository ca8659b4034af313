"""The figures of Canziani, Paszke & Culurciello, "An Analysis of Deep Neural Network Models for Practical
Applications" (2016, arXiv:1605.07678), drawn from `cnnzoo bench` rows measured on this machine.

Each figure is a PNG with the CSV of the points it shows, both written atomically:
- time_per_image: forward time per image against batch size, one line per net (and path), log axes (their Fig. 3);
- memory: peak memory against batch size, one line per net (and path) (their Fig. 6);
- operations_vs_time: FLOPs per image against time per image, one series per batch size on the first path
  measured, each with its least-squares line and R^2 (their Fig. 7: operations estimate time well);
- accuracy_vs_speed: top-1 accuracy as the model cards report it against images/s at the largest batch on the
  first path (their Fig. 9; the cards' errors are the papers', on each model's own dataset).
Torchvision twins (`--vs-torchvision`) are left out of the last two: they would repeat their cnnzoo models.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Iterable

__all__ = ["check_target", "write_figures", "least_squares"]

PLOT_EXTRA = "pip install 'cnnzoo[plot]'"


def check_target(folder: str) -> None:
    """Refuse before measuring what writing would refuse after: matplotlib missing, a folder that cannot be made."""
    try:
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise ImportError(f"the bench figures need matplotlib: {PLOT_EXTRA}") from None
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot write the figures to {folder!r}: the folder is not writable")


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line y = slope * x + intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys))
    return slope, intercept, (1 - residual / total) if total else 1.0


def write_figures(rows: Iterable, folder: str) -> list[str]:
    """Write the four figures and their CSVs to `folder`; the lines to tell the user (files, R^2)."""
    check_target(folder)
    rows = [r for r in rows if r.ok]
    if not rows:
        return ["no configuration ran, so no figure was written"]
    said = []
    for name, draw in (("time_per_image", _time_per_image), ("memory", _memory),
                       ("operations_vs_time", _operations), ("accuracy_vs_speed", _accuracy)):
        figure, table, lines = draw(rows)
        if figure is None:
            said.extend(lines or [f"{name}: nothing to draw"])
            continue
        _save(figure, table, os.path.join(folder, name))
        said.append(f"wrote {os.path.join(folder, name)}.png and .csv")
        said.extend(lines)
    return said


def _series(rows) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for r in rows:
        out.setdefault((r.model, r.path), []).append(r)
    return {k: sorted(v, key=lambda r: r.batch) for k, v in out.items()}


def _label(model: str, path: str, paths: set[str]) -> str:
    return model if len(paths) == 1 else f"{model} ({path})"


def _figure(title: str, xlabel: str, ylabel: str, xlog: bool = True, ylog: bool = True):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def _legend(ax, count: int) -> None:
    if count:
        ax.legend(fontsize=6 if count > 12 else 8, ncol=2 if count > 12 else 1, loc="best")


def _time_per_image(rows):
    fig, ax = _figure("Forward time per image against batch size (Canziani et al. 2016, Fig. 3)", "batch size",
                      "ms per image")
    table = [["model", "path", "mode", "batch", "ms_per_image"]]
    _lines(fig, ax, rows, lambda r: r.latency_ms / r.batch)
    table += [[r.model, r.path, r.mode, r.batch, r.latency_ms / r.batch] for r in rows]
    return fig, table, []


def _memory(rows):
    rows = [r for r in rows if r.peak_memory_bytes is not None]
    if not rows:
        return None, None, ["memory: no peak memory was measured (it needs Linux's /proc or a CUDA device)"]
    fig, ax = _figure("Peak memory against batch size (Canziani et al. 2016, Fig. 6)", "batch size", "peak MiB")
    _lines(fig, ax, rows, lambda r: r.peak_memory_bytes / 2**20)
    table = [["model", "path", "mode", "batch", "peak_memory_bytes"]]
    table += [[r.model, r.path, r.mode, r.batch, r.peak_memory_bytes] for r in rows]
    return fig, table, []


STYLES = {"eager": "-", "fast": "--", "compile": "-.", "onnxruntime": ":"}


def _lines(fig, ax, rows, value) -> None:
    """One line per net (a colour each) and path (a line style each) against batch size; the legend outside."""
    import matplotlib

    series, paths = _series(rows), {r.path for r in rows}
    models = list(dict.fromkeys(model for model, _ in series))
    cmap = matplotlib.colormaps["tab10" if len(models) <= 10 else "tab20" if len(models) <= 20 else "turbo"]
    colour = {m: cmap(i if len(models) <= 20 else i / max(1, len(models) - 1)) for i, m in enumerate(models)}
    for (model, path), rs in series.items():
        ax.plot([r.batch for r in rs], [value(r) for r in rs], marker="o", markersize=3, linewidth=1,
                color=colour[model], linestyle=STYLES.get(path, "-"), label=_label(model, path, paths))
    batches = sorted({r.batch for r in rows})
    ax.set_xticks(batches, [str(b) for b in batches])
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())
    count = len(series)
    fig.set_size_inches(8 + 2 * (1 + count // 40), 5.5 if count <= 30 else 8)
    fig.legend(loc="outside right upper", fontsize=8 if count <= 15 else 6, ncol=1 + count // 40)


def _first_path(rows) -> str:
    return rows[0].path


def _operations(rows):
    path = _first_path(rows)
    rows = [r for r in rows if r.path == path and r.flops_per_image and r.twin_of is None]
    batches = sorted({r.batch for r in rows})
    fig, ax = _figure(f"Operations against time per image, {path} path (Canziani et al. 2016, Fig. 7)",
                      "ms per image", "GFLOPs per image (profiler)", xlog=False, ylog=False)
    table = [["model", "path", "batch", "gflops_per_image", "ms_per_image"]]
    lines = []
    for batch in batches:
        rs = [r for r in rows if r.batch == batch]
        xs = [r.latency_ms / r.batch for r in rs]
        ys = [r.flops_per_image / 1e9 for r in rs]
        table += [[r.model, path, batch, y, x] for r, x, y in zip(rs, xs, ys)]
        points = ax.scatter(xs, ys, s=14, label=f"batch {batch}")
        if len(rs) >= 3 and len(set(xs)) > 1:
            slope, intercept, r2 = least_squares(xs, ys)
            ends = [min(xs), max(xs)]
            ax.plot(ends, [slope * x + intercept for x in ends], color=points.get_facecolor()[0], linewidth=1,
                    label=f"batch {batch}: least squares, R^2 = {r2:.3f}")
            lines.append(f"operations vs time, batch {batch}, {path} path: R^2 = {r2:.3f} over {len(rs)} models "
                         f"(Canziani et al. 2016 found operations a reliable estimate of time)")
        else:
            lines.append(f"operations vs time, batch {batch}: {len(rs)} model(s), too few for a line (3 at least)")
    if not table[1:]:
        return None, None, ["operations_vs_time: no model with profiled FLOPs ran"]
    _legend(ax, 2 * len(batches))
    return fig, table, lines


def _accuracy(rows):
    path = _first_path(rows)
    largest = max(r.batch for r in rows if r.path == path)
    rs = [r for r in rows if r.path == path and r.batch == largest and r.top1_err is not None and r.twin_of is None]
    if not rs:
        return None, None, ["accuracy_vs_speed: none of the models ran has a top-1 error on its card"]
    fig, ax = _figure(f"Top-1 accuracy (as reported) against images/s at batch {largest}, {path} path "
                      f"(Canziani et al. 2016, Fig. 9)", "images/s", "top-1 accuracy %", ylog=False)
    table = [["model", "dataset", "path", "batch", "images_per_s", "top1_accuracy"]]
    for dataset in sorted({r.dataset or "" for r in rs}):
        group = [r for r in rs if (r.dataset or "") == dataset]
        ax.scatter([r.images_per_s for r in group], [100 - r.top1_err for r in group], label=dataset or "?")
        for r in group:
            ax.annotate(r.model, (r.images_per_s, 100 - r.top1_err), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
            table.append([r.model, r.dataset, path, largest, r.images_per_s, 100 - r.top1_err])
    _legend(ax, 2)
    return fig, table, []


def _save(figure, table: list[list], stem: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from cnnzoo.train.checkpoint import atomic_write_bytes, atomic_write_text

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table)
    atomic_write_text(stem + ".csv", buffer.getvalue())
    image = io.BytesIO()
    FigureCanvasAgg(figure).print_png(image)
    atomic_write_bytes(stem + ".png", image.getvalue())
