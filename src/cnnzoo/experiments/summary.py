"""What every experiment's summary is made of: mean and standard deviation over seeds, a markdown table, the
figure (matplotlib, the `plot` extra), and the files: summary.md, results.json, figure.png (all written atomically).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from cnnzoo.train.checkpoint import atomic_write_bytes, atomic_write_text

__all__ = ["Summary", "mean_std", "pm", "markdown_table", "curve", "write_summary", "pyplot"]


@dataclass
class Summary:
    """An experiment's outcome: the table, the verdict in words, the numbers, and a function that draws."""

    title: str
    table: str  # markdown
    verdict: list[str]  # sentences: whether the paper's effect appears in this run, with the numbers
    results: dict  # everything measured, for results.json
    draw: object = None  # draw(plt) -> matplotlib Figure
    notes: list[str] = field(default_factory=list)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pm(values, digits: int = 2) -> str:
    """"mean ± std" of `values`, e.g. "7.31 ± 0.42"."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def curve(histories: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and the mean over runs of `key` per epoch (runs of one arm have the same epochs)."""
    epochs = [row["epoch"] for row in histories[0]]
    return epochs, [mean_std([h[i][key] for h in histories])[0] for i in range(len(epochs))]


def pyplot():
    """matplotlib's pyplot on the Agg backend, or None without the `plot` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_summary(out: Path, plan, summary: Summary, command: str) -> list[Path]:
    """summary.md, results.json and (with matplotlib) figure.png in `out`; returns the paths written."""
    out = Path(out)
    written = []
    plt = pyplot()
    if summary.draw is not None and plt is not None:
        fig = summary.draw(plt)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        atomic_write_bytes(out / "figure.png", buffer.getbuffer())
        written.append(out / "figure.png")
    results = {**plan.record(), "shrunk": plan.shrunk, "verdict": summary.verdict, "results": summary.results,
               "command": command}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    written.append(out / "results.json")
    shrunk = ("Shrunk for the small scale: " + "; ".join(plan.shrunk) + ".") if plan.shrunk else \
        "Nothing shrunk: the paper's setting."
    text = "\n\n".join([
        f"# {summary.title}",
        f"`{command}`",
        f"Data: {plan.data}; scale: {plan.scale}; {plan.seeds} seed(s); {plan.epochs} epochs per run "
        f"({plan.recipe} recipe). {shrunk}",
        summary.table,
        "\n".join(f"- {line}" for line in summary.verdict),
        *summary.notes,
    ]) + "\n"
    atomic_write_text(out / "summary.md", text)
    written.append(out / "summary.md")
    return written
