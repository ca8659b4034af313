"""`cnnzoo bench`: flags, the run and its printing (the measuring is `cnnzoo.deploy.bench`).

Output formats (`--format`), stable:
- table: the environment block (CPU and ISA, cores, threads and why, device, library versions, dtype, memory
  format per path, how memory is measured, the matmul ceiling), then one row per configuration.
- json: {"environment": {...}, "ceilings": [{"dtype", "device", "threads", "gflops"}], "rows": [...],
  "partial": bool, "stopped_by": null | "SIGINT" | "SIGTERM" | "SIGHUP"}; a row has the keys
  model, batch, mode, path, dtype, memory_format, threads, device, status ("ok" or why it could not run),
  images_per_s, latency_ms (median), latency_p10_ms, latency_p90_ms, repeats, peak_memory_bytes (peak less the
  memory held before the model was built), flops_per_image (the profiler's; a training step's for --mode train),
  gflops (achieved), ceiling_fraction (of the matmul ceiling), vs_torchvision (images/s over the torchvision
  twin's, with --vs-torchvision), twin_of (on a torchvision row: the cnnzoo model it is timed beside), top1_err
  and dataset (the model card's), notes (what the fast path applied); a figure not measured is null.
- csv: "# key: value" lines with the environment (and "# PARTIAL: ..." when stopped early), then a header with
  the row keys above and one line per row (notes joined by "; ").

A first SIGINT, SIGTERM or SIGHUP stops measuring: what was measured is printed, marked partial, and the exit
status is 128 + the signal's number (130, 143, 129); signals that follow are ignored while it prints.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import signal
import sys

EPILOG = """examples:
  cnnzoo bench resnet18 resnet50 --batch 1,8,32 --path eager,fast,onnxruntime
  cnnzoo bench 'resnet*' --batch 1,8 --vs-torchvision --format csv > resnets.csv
  cnnzoo bench alexnet vgg16 googlenet_bn resnet50 --batch 1,2,4,8,16 --figures figures/

Images/s = batch / median latency. Peak memory is measured in a fresh process per configuration (peak RSS less
the RSS before the model was built). GFLOP/s use the profiler's FLOPs (`cnnzoo summary`), set against a square
matrix product timed in the same run (the ceiling). Threads default to the cores free when the run begins."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("models", nargs="+", metavar="NAME|PATTERN|CHECKPOINT",
                   help="registered names, shell-style patterns ('resnet*') or checkpoint files")
    p.add_argument("--batch", type=_batches, default=[1], metavar="B,B,...",
                   help="batch sizes, comma-separated (default 1)")
    p.add_argument("--input", type=_input_size, default=None, metavar="CxHxW",
                   help="input size, e.g. 3x64x64 (default: each model's native input)")
    p.add_argument("--mode", choices=["infer", "train"], default="infer",
                   help="infer: forward passes; train: training steps (forward, loss, backward, SGD), eager path")
    p.add_argument("--path", type=_paths, default=["eager"], metavar="P,P,...",
                   help="execution paths, comma-separated: eager, fast (cnnzoo.optimize), compile "
                        "(optimize with torch.compile), onnxruntime (default eager)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads (default: the cores free when the run begins)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: eager converts model and input; fast asks optimize for it (kept float32 where "
                        "the device has no native bfloat16, as the row's dtype shows)")
    p.add_argument("--min-time", type=_seconds, default=0.25, metavar="S",
                   help="seconds of timed repeats per configuration, at least (default 0.25)")
    p.add_argument("--min-repeats", type=_positive_int, default=3, metavar="N",
                   help="timed repeats per configuration, at least (default 3)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--vs-torchvision", action="store_true",
                   help="also time each model's torchvision twin, right after it, and give the ratio of speeds")
    p.add_argument("--figures", metavar="DIR",
                   help="write the Canziani et al. figures (PNG, each with its CSV) to DIR; needs "
                        "pip install 'cnnzoo[plot]'")


def _input_size(text: str):
    from cnnzoo.cli import _input_size as parse

    return parse(text)


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive batch sizes separated by commas, e.g. 1,8,32, got "
                                         f"{text!r}")
    return list(dict.fromkeys(values))


def _paths(text: str) -> list[str]:
    from cnnzoo.deploy.bench import PATHS

    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in PATHS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"unknown path {(unknown or [text])[0]!r}; expected some of "
                                         f"{', '.join(PATHS)}, separated by commas")
    return list(dict.fromkeys(values))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


class _Stopped(Exception):
    """A stop signal came while measuring."""


def run(args) -> int:
    from cnnzoo.deploy import bench

    if args.figures is not None:  # refused now, not after minutes of measuring
        from cnnzoo.deploy.figures import check_target

        check_target(args.figures)
    configs = bench.plan(args.models, batches=args.batch, mode=args.mode, paths=args.path, dtype=args.dtype,
                         threads=args.threads, device=args.device, vs_torchvision=args.vs_torchvision,
                         input_size=args.input)
    env = bench.environment(threads=args.threads, device=args.device, dtype=args.dtype, paths=args.path)
    rows, stopped = _measure(bench, configs, args)
    rows = bench.torchvision_ratios(rows)
    ceilings = [{"dtype": d, "device": dev, "threads": t, "gflops": g}
                for (d, dev, t), g in bench.ceilings().items() if dev == args.device]
    partial = None if stopped is None else \
        f"PARTIAL: stopped by {stopped}; {len(rows)} of {len(configs)} configurations measured"
    if args.format == "json":
        print(json.dumps({"environment": env, "ceilings": ceilings, "rows": [r.to_dict() for r in rows],
                          "partial": stopped is not None, "stopped_by": stopped}, indent=2))
    elif args.format == "csv":
        print(_csv(env, ceilings, rows, partial), end="")
    else:
        _table(env, ceilings, rows, partial)
    if args.figures is not None and rows:
        from cnnzoo.deploy.figures import write_figures

        for line in write_figures(rows, args.figures):
            print(line, file=sys.stderr)
    if stopped is not None:
        return 128 + signal.Signals[stopped].value
    return 0


def _measure(bench, configs, args):
    """The rows, and the name of the signal that stopped the run early (None: it finished)."""
    rows = []
    stopped = None
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def stop(signum, frame):
        for s in STOP_SIGNALS:  # the first signal stops; the ones that follow do not cut the report short
            signal.signal(s, signal.SIG_IGN)
        raise _Stopped(signal.Signals(signum).name)

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
    progress = _progress()
    try:
        with progress:
            def name(i):  # the configuration being measured
                return "" if i >= len(configs) else f"{configs[i].label} b{configs[i].batch} {configs[i].path}"

            task = progress.add_task(name(0), total=len(configs)) if progress is not _QUIET else None
            for row in bench.run_bench(configs, min_time=args.min_time, min_repeats=args.min_repeats):
                rows.append(row)
                if task is not None:
                    progress.update(task, advance=1, description=name(len(rows)))
    except _Stopped as err:
        stopped = err.args[0]
    except KeyboardInterrupt:  # a Ctrl-C that reached the interpreter before our handler was in place
        stopped = "SIGINT"
    finally:
        if stopped is None:
            for s, handler in previous.items():
                signal.signal(s, handler)
    return rows, stopped


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_QUIET = _NoProgress()


def _progress():
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return _QUIET
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    return progress


def _environment_lines(env: dict, ceilings: list[dict]) -> list[str]:
    lines = [
        f"cpu          {env['cpu']} ({', '.join(env['isa']) or 'no AVX2'}); {env['usable_cores']} of "
        f"{env['cores']} cores usable",
        f"threads      {env['threads']} ({env['threads_chosen_by']})",
        f"device       {env['device']}",
        f"versions     torch {env['torch']}, torchvision {env['torchvision'] or '-'}, onnxruntime "
        f"{env['onnxruntime'] or 'not installed'}, python {env['python']}",
        f"dtype        {env['dtype']}; memory format: "
        + ", ".join(f"{p} {f}" for p, f in env["memory_format"].items()),
        f"memory       {env['memory_measure']}",
    ]
    for c in ceilings:
        shown = "not measured" if c["gflops"] is None else f"{c['gflops']:,.1f} GFLOP/s"
        lines.append(f"ceiling      {shown} (square matmul, {c['dtype']}, {c['device']}, {c['threads']} "
                     f"thread{'s' if c['threads'] != 1 else ''})")
    return lines


def _table(env: dict, ceilings: list[dict], rows, partial: str | None) -> None:
    from rich.table import Table

    from cnnzoo.cli import _console
    from cnnzoo.words import plural

    console = _console()
    for line in _environment_lines(env, ceilings):
        console.print(line, highlight=False, markup=False)
    if partial:
        console.print(partial, highlight=False, markup=False)
    show_ratio = any(r.vs_torchvision is not None for r in rows)
    table = Table(title=plural(len(rows), "configuration") + (" (partial)" if partial else ""))
    columns = ["model", "batch", "path", "dtype", "images/s", "latency ms", "p10-p90 ms", "peak MiB", "GFLOP/s",
               "of ceiling"] + (["vs torchvision"] if show_ratio else []) + ["status"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "path", "dtype", "status") else "right")
    for r in rows:
        cells = [r.model, str(r.batch), r.path + (" (train)" if r.mode == "train" else ""), r.dtype]
        if r.ok:
            cells += [f"{r.images_per_s:,.1f}", f"{r.latency_ms:,.2f}",
                      f"{r.latency_p10_ms:,.2f}-{r.latency_p90_ms:,.2f}",
                      "-" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / 2**20:,.1f}",
                      "-" if r.gflops is None else f"{r.gflops:,.1f}",
                      "-" if r.ceiling_fraction is None else f"{100 * r.ceiling_fraction:.0f}%"]
        else:
            cells += ["-"] * 6
        if show_ratio:
            cells.append("-" if r.vs_torchvision is None else f"{r.vs_torchvision:.2f}x")
        cells.append(r.status)
        table.add_row(*cells)
    console.print(table)


def _csv(env: dict, ceilings: list[dict], rows, partial: str | None) -> str:
    from cnnzoo.deploy.bench import BenchRow

    buffer = io.StringIO()
    for line in _environment_lines(env, ceilings):
        key, _, value = line.partition(" ")
        buffer.write(f"# {key}: {value.strip()}\n")
    if partial:
        buffer.write(f"# {partial}\n")
    from dataclasses import fields

    names = [f.name for f in fields(BenchRow)]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        d = r.to_dict()
        d["notes"] = "; ".join(d["notes"])
        writer.writerow(d)
    return buffer.getvalue()
