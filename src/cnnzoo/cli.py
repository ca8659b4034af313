"""The `cnnzoo` command: parse, call the library, print. Bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from dataclasses import asdict

import torch

import cnnzoo
from cnnzoo.checks import input_range
from cnnzoo.registry import DATASET_CLASSES, model_options

EPILOG_LIST = """examples:
  cnnzoo list
  cnnzoo list 'vgg*'
  cnnzoo list --dataset cifar10 --format csv"""

EPILOG_INFO = """examples:
  cnnzoo info vgg16
  cnnzoo info lenet5 --format json"""

EPILOG_SUMMARY = """examples:
  cnnzoo summary resnet50
  cnnzoo summary resnet50 --depth 1
  cnnzoo summary vgg16 --input 3x32x32 --batch 128 --mode train
  cnnzoo summary resnet1202 --batch 256 --format json
  cnnzoo summary googlenet --batch 8 --measure

MACs, FLOPs and activation memory are for the whole batch; FLOPs of convolutions and linear layers are
2 x MACs. RF is the receptive field in input pixels, jump the distance between neighbouring outputs."""


EPILOG_COMPARE = """examples:
  cnnzoo compare --plot zoo.png
  cnnzoo compare alexnet 'vgg*' 'resnet*' --dataset imagenet
  cnnzoo compare --dataset cifar10 --format csv

Each model at its native input, batch 1, eval mode; sorted by year, then MACs. depth counts the convolution and
linear layers that run (projection shortcuts and parallel branches included). Errors are as the papers report them,
on the model's own dataset. The chart (PNG or SVG, needs `pip install 'cnnzoo[plot]'`) shows ImageNet models
with a reported top-1 error: accuracy against G-MACs, bubble area proportional to parameters."""


EPILOG_CLAIMS = """examples:
  cnnzoo claims
  cnnzoo claims --format json"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage plus a message; we promise one line
        self.exit(2, f"{self.prog}: error: {message} (try --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnzoo",
        description="The classic convolutional networks, built as their papers specified.",
        epilog="examples:\n  cnnzoo list\n  cnnzoo info alexnet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {cnnzoo.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("list", help="registered models with their papers and parameter counts",
                       description="List registered models: family, year, native input, parameters "
                                   "(computed from the model, and as the paper reports them).",
                       epilog=EPILOG_LIST, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'resnet*'")
    p.add_argument("--dataset", choices=sorted(DATASET_CLASSES), help="only models for this dataset")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(run=_list)

    p = sub.add_parser("info", help="a model's card, computed parameter count and output shape",
                       description="Show a model's card (paper, reported figures and where they are stated, "
                                   "deviations), its computed parameter count and its output shape at the "
                                   "native input size.",
                       epilog=EPILOG_INFO, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a registered model name (see `cnnzoo list`)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=_info)

    p = sub.add_parser("summary", help="per-layer parameters, MACs, FLOPs, memory and receptive fields",
                       description="Profile a model on the meta device (no memory, no arithmetic): one row per "
                                   "layer and per functional op of a block (residual add, concatenation), with "
                                   "totals for a forward pass and a training step.",
                       epilog=EPILOG_SUMMARY, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="a registered model name (see `cnnzoo list`)")
    p.add_argument("--input", type=_input_size, metavar="CxHxW",
                   help="input size, e.g. 3x224x224 (default: the model's native input)")
    p.add_argument("--batch", type=_count(1), default=1, metavar="N", help="batch size (default 1)")
    p.add_argument("--mode", choices=["eval", "train"], default="eval",
                   help="eval: an inference pass; train: a training step's forward (default eval)")
    p.add_argument("--depth", type=_count(0), default=None, metavar="N",
                   help="roll layers up into modules N levels deep (1: the model's top-level blocks)")
    p.add_argument("--measure", action="store_true",
                   help="also run one inference pass for real and report its measured memory peak beside the "
                        "estimate (eval mode only)")
    p.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    p.set_defaults(run=_summary)

    p = sub.add_parser("claims", help="every number of the lecture, recomputed from the real models",
                       description="One row per quantitative statement of the CNN-architectures lecture: the "
                                   "claim, the lecture's figure, the figure computed from the real models and "
                                   "blocks, and a verdict (agrees, differs, wrong) with the correct computation.",
                       epilog=EPILOG_CLAIMS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(run=_claims)

    p = sub.add_parser("compare", help="models side by side: parameters, MACs, memory, depth, reported error",
                       description="Compare models at their native inputs: computed parameters, MACs, forward "
                                   "activation memory and weight-layer depth, with the error each paper reports; "
                                   "optionally draw the lecture's complexity chart.",
                       epilog=EPILOG_COMPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="model names or shell-style patterns, e.g. 'resnet*' (default: every model)")
    p.add_argument("--dataset", choices=sorted(DATASET_CLASSES), help="only models for this dataset")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--plot", metavar="FILE", help="also write the complexity chart to FILE.png or FILE.svg")
    p.set_defaults(run=_compare)
    return parser


def _input_size(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected CxHxW, e.g. 3x224x224, got {text!r}")
    size = tuple(int(v) for v in match.groups())
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"channels, height and width must be at least 1, got {text!r}")
    return size


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {text!r}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"cnnzoo {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnzoo list | head`
        sys.stderr.close()
    return 0


def _meta_model(name: str):
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        return cnnzoo.create_model(name)


def _list(args) -> None:
    rows = []
    for name in cnnzoo.list_models(args.pattern, dataset=args.dataset):
        card = cnnzoo.model_card(name)
        rows.append({
            "name": name,
            "family": card.family,
            "year": card.year,
            "dataset": card.dataset,
            "input": "x".join(map(str, card.input_size)),
            "params": cnnzoo.count_params(_meta_model(name)),
            "paper_params": None if card.params is None else round(card.params),
            "torchvision": card.torchvision,
        })
    if not rows:
        raise ValueError(f"no model matches pattern {args.pattern!r}" + (f" and dataset {args.dataset}" if args.dataset else ""))
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(_csv(rows), end="")
    else:
        from rich.table import Table

        table = Table(title=f"{len(rows)} models")
        for column, justify in [("name", "left"), ("family", "left"), ("year", "right"), ("dataset", "left"),
                                ("input", "left"), ("params", "right"), ("paper", "right"), ("torchvision", "left")]:
            table.add_column(column, justify=justify)
        for r in rows:
            table.add_row(r["name"], r["family"], str(r["year"]), r["dataset"], r["input"], f"{r['params']:,}",
                          _reported(cnnzoo.model_card(r["name"])) or "-", r["torchvision"] or "")
        _console().print(table)


def _info(args) -> None:
    card = cnnzoo.model_card(args.name)
    model = _meta_model(card.name)
    model.eval()
    out = model(torch.empty(1, *card.input_size, device="meta"))
    options = {k: (None if p.default is p.empty else p.default) for k, p in model_options(card.name).items()}
    info = asdict(card)
    info["paper"]["citation"] = card.paper.cite()
    (hmin, hmax), (wmin, wmax) = input_range(model, 0), input_range(model, 1)
    info["computed"] = {"params": cnnzoo.count_params(model), "output_shape": list(out.shape),
                        "min_input": [hmin, wmin], "max_input": None if hmax is None or wmax is None else [hmax, wmax]}
    info["options"] = options
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
        return
    lines = [
        f"[bold]{card.name}[/bold]  ({card.family}, {card.paper.short})",
        f"paper        {card.paper.cite()}",
        f"url          {card.url}",
        f"dataset      {card.dataset}, {card.num_classes} classes, native input {'x'.join(map(str, card.input_size))}",
        f"parameters   {info['computed']['params']:,} computed"
        + (f"; paper: {_reported(card)} ({card.params_source})" if card.params is not None else "; paper: not stated")
        + (f"; {cnnzoo.count_params(model, exclude_norm=True):,} computed without batch norm, as the paper counts"
           if card.params_exclude_norm else ""),
        f"input sizes  {_accepted(hmin, hmax, wmin, wmax)}",
    ]
    if card.macs is not None:
        lines.append(f"mult-adds    paper: {_short(card.macs)} ({card.macs_source})")
    if card.top1_err is not None or card.top5_err is not None:
        errs = ", ".join(f"{k} {v}%" for k, v in (("top-1 error", card.top1_err), ("top-5 error", card.top5_err))
                         if v is not None)
        lines.append(f"reported     {errs} ({card.err_source})")
    lines.append(f"output       {tuple(out.shape)} for a batch of 1 at the native input")
    lines.append(f"torchvision  {card.torchvision or 'no twin'}")
    lines.append("options      " + (", ".join(f"{k}={v!r}" for k, v in options.items()) or "none")
                 + " (plus num_classes, in_chans)")
    if card.deviations:
        lines.append("deviations from the paper:")
        lines.extend(f"  - {d}" for d in card.deviations)
    else:
        lines.append("deviations   none known")
    console = _console()
    console.print(lines[0], highlight=False)
    for line in lines[1:]:
        console.print(line, highlight=False, markup=False)


def _claims(args) -> None:
    from dataclasses import asdict as as_dict

    from cnnzoo.analysis.claims import claims

    rows = claims()
    if args.format == "json":
        print(json.dumps([as_dict(r) for r in rows], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} claims of the lecture, recomputed", show_lines=True)
    for column in ("claim", "lecture", "computed", "verdict"):
        table.add_column(column)
    for r in rows:
        verdict = r.verdict + (f": {r.explanation}" if r.explanation else "")
        table.add_row(r.claim, r.lecture, r.computed, verdict)
    _console().print(table)


def _summary(args) -> None:
    from cnnzoo.analysis import formats
    from cnnzoo.analysis.profile import ProfileError

    try:
        result = cnnzoo.profile(args.name, input_size=args.input, batch_size=args.batch, mode=args.mode,
                                measure=args.measure)
        error = None
    except ProfileError as err:  # show the rows up to the failing layer, then the error
        result, error = err.profile, err
    if args.format == "json":
        print(formats.to_json(result, args.depth))
    elif args.format == "csv":
        print(formats.to_csv(result, args.depth), end="")
    elif args.format == "markdown":
        print(formats.to_markdown(result, args.depth), end="")
    else:
        _console().print(formats.to_table(result, args.depth))
    if error is not None:
        raise ValueError(str(error).splitlines()[0])


def _compare(args) -> None:
    from cnnzoo.analysis.compare import PLOT_FORMATS, compare, plot

    if args.plot is not None and not args.plot.lower().endswith(PLOT_FORMATS):
        raise ValueError(f"cannot plot to {args.plot!r}: expected a .png or .svg file name")
    rows = compare(args.names or None, dataset=args.dataset)
    if args.plot is not None:  # before printing, so a failed plot prints nothing but its error
        left_off = plot(rows, args.plot)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif args.format == "csv":
        flat = [{**r.to_dict(), "input_size": "x".join(map(str, r.input_size))} for r in rows]
        print(_csv(flat), end="")
    else:
        from rich.table import Table

        table = Table(title=f"{len(rows)} models at their native inputs, batch 1 (sorted by year, then MACs)")
        for column in ["name", "family", "year", "dataset", "input", "params", "MACs", "activations", "depth",
                       "top-1 err", "top-5 err"]:
            table.add_column(column, justify="left" if column in ("name", "family", "dataset", "input") else "right")
        for r in rows:
            table.add_row(r.name, r.family, str(r.year), r.dataset, "x".join(map(str, r.input_size)),
                          f"{r.params / 1e6:,.2f}M", _macs(r.macs), f"{r.activation_bytes / 2**20:,.1f} MiB",
                          str(r.depth), "-" if r.top1_err is None else f"{r.top1_err:g}%",
                          "-" if r.top5_err is None else f"{r.top5_err:g}%")
        _console().print(table)
    if args.plot is not None:
        note = f"wrote {args.plot}: {len(rows) - len(left_off)} ImageNet models with a reported top-1 error"
        if left_off:
            note += f"; left off ({len(left_off)}, other dataset or no top-1 error): {', '.join(left_off)}"
        print(note, file=sys.stderr)


def _macs(value: int) -> str:
    return f"{value / 1e9:,.2f}G" if value >= 1e8 else f"{value / 1e6:,.2f}M"


def _reported(card) -> str | None:
    """The paper's parameter figure written as the paper rounds it: 60,000, 0.27M, 1.7M, 133M."""
    if card.params is None:
        return None
    if card.params_rounding == 1:
        return f"{card.params:,.0f}"
    decimals = max(0, -math.floor(math.log10(card.params_rounding / 1e6) + 1e-9))
    return f"{card.params / 1e6:.{decimals}f}M" + (" w/o BN" if card.params_exclude_norm else "")


def _accepted(hmin, hmax, wmin, wmax) -> str:
    if hmax is None or wmax is None:
        return f"from {hmin}x{wmin} up (in eval mode)"
    if (hmin, wmin) == (hmax, wmax):
        return f"exactly {hmin}x{wmin} (in eval mode)"
    return f"from {hmin}x{wmin} to {hmax}x{wmax} (in eval mode)"


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=not sys.stdout.isatty())


def _short(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= unit:
            return f"{value / unit:g}{suffix}"
    return f"{value:g}"


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
