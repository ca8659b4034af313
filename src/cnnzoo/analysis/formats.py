"""Renderers for a `Profile`: a rich table, markdown, csv and json. Functions over records, so the records stay
plain numbers and every format shows the same ones.

The json shape is stable (scripts read it):
    {"model", "input_size", "batch_size", "mode", "depth", "complete",
     "totals": {"params", "trainable_params", "macs", "flops", "flops_by_class", "train_flops",
                "activation_elements", "activation_bytes", "input_bytes", "saved_activation_bytes",
                "param_bytes", "buffer_bytes", "grad_bytes", "optimizer_bytes", "train_memory_bytes",
                "inference_peak_bytes", "measured_peak_bytes" (null unless measured)},
     "layers": [{"name", "type", "depth", "input_shape", "output_shape", "params", "trainable_params", "macs",
                 "flops", "flops_by_class", "activation_elements", "activation_bytes", "receptive_field", "jump",
                 "start", "calls", "uncounted_ops"}],
     "uncounted_ops": [...]}
MACs, FLOPs and activations are for the whole batch; `depth` is the roll-up depth (null: every layer).
"""

from __future__ import annotations

import csv
import io
import json

from cnnzoo.analysis.profile import OP_CLASSES, LayerRecord, Profile

__all__ = ["layer_rows", "to_dict", "to_json", "to_csv", "to_markdown", "to_table"]

CSV_FIELDS = (
    "name", "type", "depth", "input_shape", "output_shape", "params", "trainable_params", "macs", "flops",
    *(f"flops_{c}" for c in OP_CLASSES), "activation_elements", "activation_bytes", "receptive_field", "jump",
    "start", "calls", "uncounted_ops",
)


def layer_rows(profile: Profile, depth: int | None = None) -> tuple[LayerRecord, ...]:
    """Every record, or the roll-up to `depth`."""
    return profile.layers if depth is None else profile.rollup(depth)


def to_dict(profile: Profile, depth: int | None = None) -> dict:
    return {
        "model": profile.model,
        "input_size": list(profile.input_size),
        "batch_size": profile.batch_size,
        "mode": profile.mode,
        "depth": depth,
        "complete": profile.complete,
        "totals": profile.totals(),
        "layers": [r.to_dict() for r in layer_rows(profile, depth)],
        "uncounted_ops": list(profile.uncounted_ops),
    }


def to_json(profile: Profile, depth: int | None = None) -> str:
    return json.dumps(to_dict(profile, depth), indent=2)


def to_csv(profile: Profile, depth: int | None = None) -> str:
    """One line per record; shapes as 1x64x112x112, the FLOPs of each op class in its own column."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in layer_rows(profile, depth):
        row = r.to_dict()
        for c in OP_CLASSES:
            row[f"flops_{c}"] = r.flops_by_class[c]
        del row["flops_by_class"]
        row["input_shape"], row["output_shape"] = _shape(r.input_shape, ""), _shape(r.output_shape, "")
        row["uncounted_ops"] = " ".join(r.uncounted_ops)
        row["receptive_field"] = "" if r.receptive_field is None else r.receptive_field
        writer.writerow(row)
    return buffer.getvalue()


_COLUMNS = ("layer", "type", "output", "params", "MACs", "FLOPs", "activations", "RF", "jump")


def _cells(r: LayerRecord) -> list[str]:
    uncounted = f" (+ {', '.join(r.uncounted_ops)} uncounted)" if r.uncounted_ops else ""
    return [
        r.name or "(top level)",
        r.type + (f" ({r.calls} calls)" if r.calls > 1 else ""),
        _shape(r.output_shape, "not run"),
        f"{r.params:,}" if r.params else "-",
        _si(r.macs) if r.macs else "-",
        (_si(r.flops) if r.flops else "-") + uncounted,
        _bytes(r.activation_bytes) if r.activation_bytes else "-",
        "?" if r.receptive_field is None else str(r.receptive_field),
        "?" if r.jump is None else str(r.jump),
    ]


def _total_cells(profile: Profile) -> list[str]:
    return ["total", "", "", f"{profile.params:,}", _si(profile.macs), _si(profile.flops),
            _bytes(profile.activation_bytes), "", ""]


def _summary_lines(profile: Profile) -> list[str]:
    c, h, w = profile.input_size
    lines = [
        f"{profile.model}, input {c}x{h}x{w}, batch {profile.batch_size}, {profile.mode} mode"
        + ("" if profile.complete else " (INCOMPLETE: the forward failed; rows stop at the failing layer)"),
        f"parameters   {profile.params:,} ({profile.trainable_params:,} trainable), {_bytes(profile.param_bytes)}"
        + (f" + {_bytes(profile.buffer_bytes)} buffers" if profile.buffer_bytes else ""),
        f"compute      {_si(profile.macs)} MACs, {_si(profile.flops)} FLOPs forward; "
        f"{_si(profile.train_flops)} FLOPs per training step (forward + backward)",
        "FLOPs by op  " + ", ".join(f"{k} {_si(v)}" for k, v in profile.flops_by_class.items() if v),
        f"memory       training step {_bytes(profile.train_memory_bytes)} (parameters, gradients, momentum and "
        f"{_bytes(profile.saved_activation_bytes)} kept for backward); inference peak "
        f"{_bytes(profile.inference_peak_bytes)} (without convolution workspaces)",
    ]
    if profile.measured_peak_bytes is not None:
        over = profile.measured_peak_bytes - profile.inference_peak_bytes
        lines.append(f"measured     inference peak {_bytes(profile.measured_peak_bytes)} in a real pass "
                     f"({'+' if over >= 0 else '-'}{_bytes(abs(over))} against the estimate: workspaces, "
                     f"tensors held until their variable goes)")
    if profile.uncounted_ops:
        lines.append(f"uncounted    {', '.join(profile.uncounted_ops)}: seen but not counted in any figure above")
    return lines


def to_markdown(profile: Profile, depth: int | None = None) -> str:
    def row(cells):
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    right = {"params", "MACs", "FLOPs", "activations", "RF", "jump"}
    lines = [row(_COLUMNS), "|" + "|".join("---:" if col in right else "---" for col in _COLUMNS) + "|"]
    lines += [row(_cells(r)) for r in layer_rows(profile, depth)]
    lines.append(row([f"**{cell}**" if cell else "" for cell in _total_cells(profile)]))
    summary = _summary_lines(profile)
    return "\n".join([f"**{summary[0]}**", "", *lines, "", *(f"- {line}" for line in summary[1:])]) + "\n"


def to_table(profile: Profile, depth: int | None = None):
    """A rich renderable: the table of records and the totals under it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    summary = _summary_lines(profile)
    table = Table(title=summary[0], title_justify="left")
    for column in _COLUMNS:
        table.add_column(column, justify="right" if column in ("params", "MACs", "FLOPs", "activations", "RF",
                                                               "jump") else "left")
    records = layer_rows(profile, depth)
    for i, r in enumerate(records):
        table.add_row(*_cells(r), end_section=i == len(records) - 1)
    table.add_row(*_total_cells(profile), style="bold")
    return Group(table, Text("\n".join(summary[1:])))


def _shape(shape, missing: str) -> str:
    return missing if shape is None else "x".join(map(str, shape))


def _si(n: float) -> str:
    """1.82G, 340M, 12.5K: three significant digits."""
    for unit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= unit:
            return f"{n / unit:.3g}{suffix}"
    return f"{n:g}"


def _bytes(n: float) -> str:
    for unit, suffix in ((2**50, "PiB"), (2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= unit:
            return f"{n / unit:.3g} {suffix}"
    return f"{n:g} B"
