"""The `cnnzoo` command: parse, call the library, print. Bad input: one line on stderr, exit status 2.

Start-up is kept short: torch and the library are imported inside the subcommands, and the parser gives a
subcommand its flags only when that subcommand is the one being run (train's flags come from TrainConfig, whose
module needs torch), so `cnnzoo --help` imports neither. `benchmarks/cli_start.py` measures it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from contextlib import contextmanager

import cnnzoo
from cnnzoo.registry import DATASET_CLASSES  # data only: importing the registry does not import torch
from cnnzoo.words import plural

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
  cnnzoo compare --dataset imagenet --plot zoo-all.svg --all --metric top5
  cnnzoo compare alexnet 'vgg*' 'resnet*' --dataset imagenet
  cnnzoo compare --dataset cifar10 --format csv

Each model at its native input, batch 1, eval mode; sorted by year, then MACs. depth: the most convolution and
linear layers on any one input-to-output path of an inference pass (parallel branches count once, a projection
shortcut is a shorter path; GoogLeNet 22, ResNet-152 152). Errors are as the papers report them,
on the model's own dataset.

The chart (PNG or SVG, needs `pip install 'cnnzoo[plot]'`) is the lecture's "comparing complexity": accuracy
(100 - the reported top-1 error, or top-5 with --metric top5) against G-MACs, bubble area proportional to
parameters, one colour per family. It shows the NAMES given; without them, the lecture's models (--all: every
ImageNet model), while the table still lists every row. Only ImageNet models with a reported error of that kind
are drawn; a top-1 figure that is not the paper's own (GoogLeNet's paper gives top-5 only; its top-1 is BVLC's
replication's) is a hollow bubble, its source in the chart's footnote, which also names the models left off."""


EPILOG_TRAIN = """examples:
  cnnzoo train lenet5 --data digits --recipe fast --out runs/lenet5
  cnnzoo train lenet5 --data digits --recipe fast --out runs/lenet5 --resume
  cnnzoo train resnet20 --data cifar10 --download --epochs 30 --lr 0.05
  cnnzoo train resnet20 --data cifar10 --set schedule.kind=cosine --set warmup_iters=0
  torchrun --nproc-per-node 2 -m cnnzoo train lenet5 --data digits --recipe fast --out runs/ddp

Every hyperparameter left out comes from the recipe (`cnnzoo recipes NAME` prints it). Ctrl-C or SIGTERM saves
last.pt and exits (status 130 or 143); --resume continues exactly where the run stopped."""

EPILOG_EVAL = """examples:
  cnnzoo eval runs/lenet5/best.pt --data digits
  cnnzoo eval runs/a/best.pt runs/b/best.pt --data cifar10 --tta flip

Several checkpoints are evaluated one by one and as an ensemble (their softmax outputs averaged)."""

EPILOG_RECIPES = """examples:
  cnnzoo recipes
  cnnzoo recipes resnet110
  cnnzoo recipes lenet5 --recipe fast --format json"""

EPILOG_CLAIMS = """examples:
  cnnzoo claims
  cnnzoo claims --format json"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage plus a message; we promise one line
        self.exit(2, f"{self.prog}: error: {message} (try --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the command line `argv`: every subcommand is listed, but only the one `argv` names gets its
    flags (some need torch to define). Without `argv`, every subcommand gets its flags."""
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    parser = _Parser(
        prog="cnnzoo",
        description="The classic convolutional networks, built as their papers specified.",
        epilog="examples:\n  cnnzoo list\n  cnnzoo info alexnet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cnnzoo {cnnzoo.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, run, arguments, **text) -> None:
        p = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **text)
        p.set_defaults(run=run)
        if argv is None or name == chosen:
            arguments(p)

    command("list", _list, _list_arguments,
            help="registered models with their papers and parameter counts",
            description="List registered models: family, year, native input, parameters (computed from the model, "
                        "and as the paper reports them).",
            epilog=EPILOG_LIST)
    command("info", _info, _info_arguments,
            help="a model's card, computed parameter count and output shape",
            description="Show a model's card (paper, reported figures and where they are stated, deviations), its "
                        "computed parameter count and its output shape at the native input size.",
            epilog=EPILOG_INFO)
    command("summary", _summary, _summary_arguments,
            help="per-layer parameters, MACs, FLOPs, memory and receptive fields",
            description="Profile a model on the meta device (no memory, no arithmetic): one row per layer and per "
                        "functional op of a block (residual add, concatenation), with totals for a forward pass and "
                        "a training step.",
            epilog=EPILOG_SUMMARY)
    command("claims", _claims, _claims_arguments,
            help="every number of the lecture, recomputed from the real models",
            description="One row per quantitative statement of the CNN-architectures lecture: the claim, the "
                        "lecture's figure, the figure computed from the real models and blocks, and a verdict "
                        "(agrees, differs, wrong) with the correct computation.",
            epilog=EPILOG_CLAIMS)
    command("compare", _compare, _compare_arguments,
            help="models side by side: parameters, MACs, memory, depth, reported error",
            description="Compare models at their native inputs: computed parameters, MACs, forward activation "
                        "memory and weight-layer depth, with the error each paper reports; optionally draw the "
                        "lecture's complexity chart.",
            epilog=EPILOG_COMPARE)
    command("train", _train, _train_arguments,
            help="train a model with its paper's recipe (or a fast one)",
            description="Train a registered model on a dataset with the recipe of its paper; resumes exactly; "
                        "writes config.json, metrics.csv, checkpoints and curves to one folder.",
            epilog=EPILOG_TRAIN)
    command("eval", _eval, _eval_arguments,
            help="top-1/top-5 error of checkpoints, alone and as an ensemble",
            description="Evaluate checkpoints on a dataset's test split: top-1 and top-5 error, with test-time "
                        "augmentation; several checkpoints also give their ensemble.",
            epilog=EPILOG_EVAL)
    command("recipes", _recipes, _recipes_arguments,
            help="the papers' training recipes, as data",
            description="Print the training recipe of a model's paper (optimizer, schedule, batch, regularisation, "
                        "augmentation, with sources), or list every family's.",
            epilog=EPILOG_RECIPES)
    command("bench", _elsewhere("cli_bench", "run"), _elsewhere("cli_bench", "arguments"),
            help="measured speed and memory on this machine: eager, fast path, ONNX Runtime",
            description="Time models' forward passes (or training steps) on this machine: images/s, latency, "
                        "measured peak memory and achieved GFLOP/s against a matmul ceiling measured in the same "
                        "run, per batch size and execution path; optionally beside torchvision's own models and as "
                        "the Canziani et al. figures.")
    command("export", _elsewhere("cli_export", "run"), _elsewhere("cli_export", "arguments"),
            help="export a model to ONNX, checked in ONNX Runtime against eager",
            description="Export a registered model or a checkpoint to ONNX, check the file with onnx.checker, run "
                        "it in ONNX Runtime and compare its outputs with PyTorch's; exit status 1 when they differ "
                        "beyond tolerance.")
    command("diagram", _elsewhere("cli_diagram", "run"), _elsewhere("cli_diagram", "arguments"),
            help="a model's figure in its paper's visual language (SVG, PNG or PDF)",
            description="Draw a model as its paper draws it, from the profiler's trace of the real model: layers "
                        "as labelled blocks with output shapes, parallel branches side by side, residual shortcuts "
                        "as arcs, repeated units collapsed; colour by operation class.")
    command("report", _elsewhere("cli_report", "run"), _elsewhere("cli_report", "arguments"),
            help="the lecture as a browsable static site: chart, tables, claims, one page per model",
            description="Write a static site that opens from file:// with no network: the interactive complexity "
                        "chart, the comparison table, the lecture's claims, a page per model (card, diagram, "
                        "per-layer table, receptive field, memory, recipe) and a page per family.")
    command("compress", _elsewhere("cli_compress", "compress_run"), _elsewhere("cli_compress", "compress_arguments"),
            help="Deep Compression: prune, share weights, Huffman-code into a small file",
            description="Compress a model as Deep Compression does (Han, Mao & Dally 2016): magnitude pruning per "
                        "layer, weight sharing by k-means, relative sparse indices and Huffman coding, into a "
                        "versioned, checksummed file; optionally retrain with the masks held and fine-tune the "
                        "centroids. Prints the size after each stage.")
    command("decompress", _elsewhere("cli_compress", "decompress_run"),
            _elsewhere("cli_compress", "decompress_arguments"),
            help="a compressed file back to a dense checkpoint",
            description="Decode a file written by `cnnzoo compress` into a cnnzoo checkpoint of the dense model, "
                        "whose outputs equal the compressed model's exactly.")
    command("experiment", _elsewhere("cli_experiment", "run"), _elsewhere("cli_experiment", "arguments"),
            help="the lecture's experiments reproduced: degradation, stochastic depth, ensembles, fractal columns",
            description="Run one of the lecture's experiments as a set of ordinary, resumable training runs, and "
                        "summarise it: a figure in the paper's style, a table with mean and standard deviation "
                        "over seeds, results.json, and whether the paper's effect appears.")
    command("predict", _elsewhere("cli_predict", "run"), _elsewhere("cli_predict", "arguments"),
            help="classify images with a model's pretrained weights or a checkpoint",
            description="Classify images (files or folders) with a registered model's pretrained weights or a "
                        "training checkpoint, using the weights' own preprocessing: top-k classes with "
                        "probabilities.")
    return parser


def _elsewhere(module: str, name: str):
    """A subcommand's function kept in a module of its own (cli_bench.py, ...), imported only when it is used:
    `cnnzoo --help` and the other commands never pay for its imports."""
    def call(arg):
        import importlib

        return getattr(importlib.import_module(f"cnnzoo.{module}"), name)(arg)
    return call


def _list_arguments(p) -> None:
    p.add_argument("pattern", nargs="?", help="shell-style name pattern, e.g. 'resnet*'")
    p.add_argument("--dataset", choices=sorted(DATASET_CLASSES), help="only models for this dataset")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


def _info_arguments(p) -> None:
    p.add_argument("name", help="a registered model name (see `cnnzoo list`), a checkpoint file, or a file written "
                                "by `cnnzoo compress`")
    p.add_argument("--format", choices=["text", "json"], default="text")


def _summary_arguments(p) -> None:
    p.add_argument("name", help="a registered model name (see `cnnzoo list`) or a checkpoint file")
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


def _claims_arguments(p) -> None:
    p.add_argument("--format", choices=["table", "json"], default="table")


def _compare_arguments(p) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="model names or shell-style patterns, e.g. 'resnet*' (default: every model)")
    p.add_argument("--dataset", choices=sorted(DATASET_CLASSES), help="only models for this dataset")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--plot", metavar="FILE", help="also write the complexity chart to FILE.png or FILE.svg")
    p.add_argument("--all", action="store_true",
                   help="chart every ImageNet model with a reported error (default: the lecture's chart's models); "
                        "needs --plot, not NAMES")
    p.add_argument("--metric", choices=["top1", "top5"],
                   help="the chart's accuracy: 100 - the reported top-1 (default) or top-5 error; needs --plot")


def _train_arguments(p) -> None:
    from dataclasses import MISSING, fields

    from cnnzoo.train.trainer import TrainConfig

    types = {"epochs": _count(1), "batch_size": _count(1), "lr": _positive_float, "momentum": _fraction,
             "weight_decay": _non_negative_float, "seed": _count(0, 2**63 - 1), "workers": _count(0),
             "save_every": _count(0), "save_minutes": _non_negative_float, "val_split": _fraction,
             "max_steps": _count(1), "threads": _count(1, 1024)}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.name == "model":
            p.add_argument("model", help=help_text)
        elif f.name == "recipe":
            p.add_argument(flag, choices=RECIPE_KINDS, default=UNSET, help=help_text + " (default: paper)")
        elif f.name == "nesterov":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=UNSET, help=help_text)
        elif f.name == "settings":
            p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help=help_text)
        elif f.default is False:
            p.add_argument(flag, action="store_true", default=UNSET, help=help_text)
        else:  # UNSET tells a flag left out from one given with its default value (--resume compares the latter)
            p.add_argument(flag, type=types.get(f.name, str), default=UNSET, required=f.default is MISSING,
                           help=help_text, metavar=f.name.upper())


def _eval_arguments(p) -> None:
    from cnnzoo.train.evaluate import TTA_MODES

    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoint files written by cnnzoo train")
    p.add_argument("--data", required=True, help="dataset, as for cnnzoo train")
    p.add_argument("--tta", choices=TTA_MODES, default="none",
                   help="test-time augmentation: flip (image and mirror) or ten-crop (AlexNet's 10 patches); a "
                        "warning says when the run did not train with that augmentation")
    p.add_argument("--batch-size", type=_count(1), default=256, metavar="N")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-root", default=None, help="where datasets live")
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    p.add_argument("--format", choices=["table", "json"], default="table")


def _recipes_arguments(p) -> None:
    p.add_argument("name", nargs="?", help="a registered model name (default: one line per family and dataset)")
    p.add_argument("--recipe", choices=RECIPE_KINDS, default="paper",
                   help="paper: the recipe its paper states; fast: cnnzoo's short schedule for a CPU demo "
                        "(default: paper)")
    p.add_argument("--format", choices=["table", "json"], default="table")


RECIPE_KINDS = ["paper", "fast"]


def _input_size(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"\s*(\d+)x(\d+)x(\d+)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected CxHxW, e.g. 3x224x224, got {text!r}")
    size = tuple(int(v) for v in match.groups())
    if min(size) < 1:
        raise argparse.ArgumentTypeError(f"channels, height and width must be at least 1, got {text!r}")
    return size


def _count(minimum: int, maximum: int | None = None):
    if maximum is None:
        return _number(f"an integer of at least {minimum}", lambda v: v >= minimum, convert=int)
    return _number(f"an integer from {minimum} to {maximum}", lambda v: minimum <= v <= maximum, convert=int)


class _Unset:
    """The default of a train flag: tells a flag left out from one given with the default's value."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def _number(kind: str, ok, convert=float):
    """An argparse type: `convert` the text and check it with `ok`; else say what was expected."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
        return value
    return parse


_positive_float = _number("a positive number", lambda v: v > 0)
_non_negative_float = _number("a number of at least 0", lambda v: v >= 0)
_fraction = _number("a number in [0, 1)", lambda v: 0 <= v < 1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with _remember_interrupts() as interrupted:
        try:  # train's and eval's flags import torch: a Ctrl-C may come while the parser is built
            args = build_parser(argv).parse_args(argv)
        except SystemExit as done:  # --help, --version, or a usage error already printed as one line
            return done.code if isinstance(done.code, int) else 2
        except BaseException:
            if interrupted():  # whatever error the import made of the KeyboardInterrupt (see below)
                print(" ".join(["cnnzoo", *[a for a in argv if not a.startswith("-")][:1]]) + ": interrupted",
                      file=sys.stderr)
                return 130
            raise
        if interrupted():  # a KeyboardInterrupt some import swallowed
            print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
            return 130
        try:
            return args.run(args) or 0
        except BaseException as err:
            if interrupted() and not isinstance(err, (SystemExit, _training_failure())):
                # Ctrl-C during start-up: an import can turn the KeyboardInterrupt into another error (Python
                # wraps exceptions raised in a class body's __set_name__), so the flag, not the type, decides
                print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
                return 130
            return _failure(args, err)


@contextmanager
def _remember_interrupts():
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered; yields a function that tells."""
    import signal
    import threading

    seen = []
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: False
        return

    def handler(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    # An import may swallow the KeyboardInterrupt (a bare `except:` around an optional import): the record
    # stays, and the trainer, which installs its own handler later, reads it here and stops at its first step.
    handler.seen = seen
    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(seen)
    finally:
        if signal.getsignal(signal.SIGINT) is handler:  # not if a stopped run chose to ignore late signals
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _failure(args, error: BaseException) -> int:
    """The exit status for an error of a subcommand, after printing it as one line."""
    try:
        raise error
    except _training_failure() as err:
        print(f"cnnzoo {args.command}: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, KeyError, ImportError) as err:  # ImportError: an optional extra is missing
        print(f"cnnzoo {args.command}: error: {_in_cli_terms(args.command, err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnzoo list | head`
        sys.stderr.close()
    except OSError as err:  # a missing file, a folder that cannot be written, a full disk
        print(f"cnnzoo {args.command}: error: {_in_cli_terms(args.command, err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during training, or one outside it
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _in_cli_terms(command: str, err: BaseException) -> str:
    """A library error's message, its advice given in this interface's terms (flags, not Python arguments).

    Errors with structured fields are worded here from those fields; the library words them for Python callers."""
    from cnnzoo.registry import UnknownModelError

    if isinstance(err, UnknownModelError):
        hint = f"did you mean {', '.join(err.suggestions)}?" if err.suggestions else "`cnnzoo list` shows every name"
        return f"unknown model {err.name!r}; {hint}"
    folder = sys.modules.get("cnnzoo.data.folder")  # not loaded: no image was decoded, so no BadImageError
    if folder is not None and isinstance(err, folder.BadImageError):
        skip = (", or pass --skip-bad-images to skip undecodable files (listed in the run folder's "
                "skipped_images.txt)" if command == "train" else f" (cnnzoo {command} does not skip files)")
        return f"cannot decode {err.path}: {err.reason}; replace or delete the file{skip}"
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    # datasets.py words a missing file's advice for both interfaces; here only the flag applies. (A structured
    # error there, like UnknownModelError, would make this one exact replacement unnecessary.)
    return str(err).replace(" (load_dataset(..., download=True))", "")


def _training_failure():
    """TrainingDiverged, or nothing when no training ran (its module not loaded: no import for an error)."""
    health = sys.modules.get("cnnzoo.train.health")
    return health.TrainingDiverged if health is not None else ()


def _meta_build(name: str, options: dict):
    """The model's architecture on the meta device: shapes only, no memory, no initialisation."""
    from cnnzoo.analysis.counting import meta_model

    return meta_model(name, **options)


def _list(args) -> None:
    from cnnzoo.analysis.counting import registered_params

    names = cnnzoo.list_models(args.pattern, dataset=args.dataset)
    if not names:
        raise ValueError(f"no model matches pattern {args.pattern!r}"
                         + (f" and dataset {args.dataset}" if args.dataset else ""))
    params = registered_params(names)  # count_params(create_model(name)), cached for this source and torch
    rows = []
    for name in names:
        card = cnnzoo.model_card(name)
        rows.append({
            "name": name,
            "family": card.family,
            "year": card.year,
            "dataset": card.dataset,
            "input": "x".join(map(str, card.input_size)),
            "params": params[name],
            "paper_params": None if card.params is None else round(card.params),
            "torchvision": card.torchvision,
        })
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(_csv(rows), end="")
    else:
        from rich.table import Table

        table = Table(title=plural(len(rows), "model"))
        for column, justify in [("name", "left"), ("family", "left"), ("year", "right"), ("dataset", "left"),
                                ("input", "left"), ("params", "right"), ("paper", "right"), ("torchvision", "left")]:
            table.add_column(column, justify=justify)
        for r in rows:
            table.add_row(r["name"], r["family"], str(r["year"]), r["dataset"], r["input"], f"{r['params']:,}",
                          _reported(cnnzoo.model_card(r["name"])) or "-", r["torchvision"] or "")
        _console().print(table)


def _is_compressed(text: str) -> bool:
    """Whether an argument names a file written by `cnnzoo compress` (by its magic bytes)."""
    import os

    from cnnzoo.compress.codec import MAGIC

    try:
        with open(text, "rb") as f:
            return os.path.isfile(text) and f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _from_checkpoint(text: str):
    """(model name, create_model options, checkpoint summary) for a checkpoint argument, or None for a name."""
    from cnnzoo.train.checkpoint import is_checkpoint_path, load_checkpoint

    if not is_checkpoint_path(text):
        return None
    payload = load_checkpoint(text)
    history = payload.get("history") or []
    recipe = payload.get("recipe") or {}
    position = payload.get("position") or [len(history), 0]  # (epoch, next batch): where training would go on
    best = payload.get("best")
    summary = {
        "file": text, "model": payload["model"], "model_options": payload["model_options"],
        "data": (payload.get("config") or {}).get("data"), "recipe": recipe.get("name"),
        "epochs_done": int(position[0]), "epochs_planned": recipe.get("epochs"),
        "batches_into_next_epoch": int(position[1]), "step": payload.get("step"), "best_val_top1_err": best,
        "last_epoch": history[-1] if history else None,
        "is_best": bool(history) and best is not None and history[-1].get("val_top1_err") == best,
    }
    return payload["model"], payload["model_options"], summary


def _snapshot(trained: dict) -> str:
    """When in its run a checkpoint was taken: "the snapshot after epoch 20 of 30 (900 steps), ..."."""
    done, planned, into = trained["epochs_done"], trained["epochs_planned"], trained["batches_into_next_epoch"]
    steps = plural(trained["step"], "step") if trained["step"] is not None else "steps unknown"
    of = f" of {planned}" if planned else ""
    if into:
        when = f"the snapshot {plural(into, 'batch', 'batches')} into epoch {done + 1}{of} ({steps})"
    elif planned and done >= planned:
        when = f"the end of training: all {plural(done, 'epoch')} ({steps})"
    elif done == 0:
        when = f"the snapshot before the first epoch{of} ended ({steps})"
    else:
        when = f"the snapshot after epoch {done}{of} ({steps})"
    if trained["is_best"] and not into:
        when += ", the run's best validation error" if planned and done >= planned else \
            ", the best validation error up to then"
    return when


def _info(args) -> None:
    from dataclasses import asdict

    import torch

    if _is_compressed(args.name):
        from cnnzoo.cli_compress import print_info

        return print_info(args.name, args.format)

    from cnnzoo.checks import input_range
    from cnnzoo.registry import model_options

    source = _from_checkpoint(args.name)
    name, options_given, trained = source if source else (args.name, {}, None)
    card = cnnzoo.model_card(name)
    model = _meta_build(card.name, options_given)
    model.eval()
    out = model(torch.empty(1, *card.input_size, device="meta"))
    options = {k: (None if p.default is p.empty else p.default) for k, p in model_options(card.name).items()}
    info = asdict(card)
    info["paper"]["citation"] = card.paper.cite()
    (hmin, hmax), (wmin, wmax) = input_range(model, 0), input_range(model, 1)
    info["computed"] = {"params": cnnzoo.count_params(model), "output_shape": list(out.shape),
                        "min_input": [hmin, wmin], "max_input": None if hmax is None or wmax is None else [hmax, wmax]}
    info["options"] = options
    from cnnzoo.weights import CONVERTIBLE, RELEASED_AS, list_weights

    weights = list_weights(card.name)
    info["weights"] = [{**{k: v for k, v in asdict(w).items() if k != "categories"}, "classes": len(w.categories)}
                       for w in weights]
    if trained is not None:
        info["checkpoint"] = {**trained, "snapshot": _snapshot(trained)}
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
        return
    lines = [
        f"[bold]{card.name}[/bold]  ({card.family}, {card.paper.short})",
        f"paper        {card.paper.cite()}",
        f"url          {card.url}",
        f"dataset      {card.dataset}, {plural(card.num_classes, 'class', 'classes')}, native input "
        f"{'x'.join(map(str, card.input_size))}",
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
    for i, w in enumerate(weights):
        lines.append(("weights      " if i == 0 else "             ") + w.describe()
                     + (" (default: pretrained=True)" if i == 0 else ""))
    if not weights:
        lines.append("weights      none to download" + (
            "; pretrained=PATH converts the authors' released original (see README, Pretrained weights)"
            if card.name in CONVERTIBLE else
            f"; the authors' released weights fit {RELEASED_AS[card.name][0]} (see README, Pretrained weights)"
            if card.name in RELEASED_AS else ""))
    lines.append("options      " + (", ".join(f"{k}={v!r}" for k, v in options.items()) or "none")
                 + " (plus num_classes, in_chans)")
    if trained is not None:
        last = trained["last_epoch"] or {}
        lines.append(f"checkpoint   {trained['file']}: trained on {trained['data']} with the {trained['recipe']} "
                     f"recipe; {_snapshot(trained)}; options {trained['model_options']}"
                     + (f"; last val top-1 error {last['val_top1_err']:.2f}%" if last else "")
                     + (f", best {trained['best_val_top1_err']:.2f}%" if trained["best_val_top1_err"] is not None
                        else ""))
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

    table = Table(title=f"{plural(len(rows), 'claim')} of the lecture, recomputed", show_lines=True)
    for column in ("claim", "lecture", "computed", "verdict"):
        table.add_column(column)
    for r in rows:
        verdict = r.verdict + (f": {r.explanation}" if r.explanation else "")
        table.add_row(r.claim, r.lecture, r.computed, verdict)
    _console().print(table)


def _summary(args) -> None:
    from cnnzoo.analysis import formats
    from cnnzoo.analysis.profile import ProfileError, SizeError

    def flag(argument, value=None):  # a SizeError's advice in this interface's terms: --batch 8, --input 3x64x64
        shown = "" if value is None else " " + ("x".join(map(str, value)) if argument == "input" else str(value))
        return {"batch": "--batch", "input": "--input"}[argument] + shown

    if args.measure and args.mode != "eval":  # the library's own refusal would advise mode='eval'
        raise ValueError("--measure runs an inference pass, so it needs --mode eval (the default)")
    try:
        source = _from_checkpoint(args.name)
        name, options = source[:2] if source is not None else (args.name, {})
        channels = options.get("in_chans", cnnzoo.model_card(name).input_size[0])
        if args.input is not None and args.input[0] != channels:  # the model's own check would advise in_chans=
            raise ValueError(f"{name} takes {channels} input channel(s), got {flag('input', args.input)}; use "
                             f"{flag('input', (channels, *args.input[1:]))}")
        target = args.name
        if source is not None:  # the checkpoint's architecture and options (its weights do not change the figures)
            target = cnnzoo.create_model(name, **options) if args.measure else _meta_build(name, options)
        result = cnnzoo.profile(target, input_size=args.input, batch_size=args.batch, mode=args.mode,
                                measure=args.measure)
        error = None
    except SizeError as err:
        raise ValueError(err.worded(flag)) from None
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
    from cnnzoo.analysis.compare import LECTURE_SELECTION, PLOT_DATASET, chart_points, compare, plot

    metric = args.metric or "top1"
    if args.plot is None and (args.all or args.metric is not None):
        raise ValueError(f"{'--all' if args.all else '--metric'} chooses what the chart shows: give it with "
                         "--plot FILE.png")
    if args.all and args.names:
        raise ValueError("--all charts every ImageNet model: give either NAMES or --all")
    if args.plot is not None:
        _check_plot_target(args.plot)  # before computing (the whole zoo takes a while), not after
    rows = compare(args.names or None, dataset=args.dataset)
    if args.plot is not None:  # before printing, so a failed plot prints nothing but its error
        if args.names:
            charted, chosen = rows, "the models named"
        elif args.all:
            charted, chosen = [r for r in rows if r.dataset == PLOT_DATASET], "every ImageNet model"
        else:
            charted = [r for r in rows if r.name in LECTURE_SELECTION]
            chosen = "the lecture's chart's models (--all for every ImageNet model)"
        if not charted:
            raise ValueError(f"nothing to plot: none of {chosen} is among the rows"
                             + (f" for --dataset {args.dataset}" if args.dataset else ""))
        left_off = plot(charted, args.plot, metric=metric)
        not_papers = [p.name for p in chart_points(charted, metric=metric) if not p.paper_figure]
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif args.format == "csv":
        flat = [{**r.to_dict(), "input_size": "x".join(map(str, r.input_size))} for r in rows]
        print(_csv(flat), end="")
    else:
        from rich.table import Table

        table = Table(title=f"{plural(len(rows), 'model')} at their native inputs, batch 1 (sorted by year, "
                            f"then MACs)")
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
        words = {"top1": "top-1", "top5": "top-5"}[metric]
        shown = plural(len(charted) - len(left_off), "ImageNet model")
        note = f"wrote {args.plot}: {shown} with a reported {words} error, of {chosen}"
        if not_papers:
            note += f"; not the paper's figure (hollow, source in the footnote): {', '.join(not_papers)}"
        if left_off:
            note += f"; left off ({len(left_off)}, other dataset or no {words} error): {', '.join(left_off)}"
        print(note, file=sys.stderr)


def _check_plot_target(path: str) -> None:
    """What `plot` would refuse after the rows are computed, refused before: the file type, a missing matplotlib
    (the plot extra), a folder that does not exist."""
    import os

    from cnnzoo.analysis.compare import PLOT_FORMATS, PlotUnavailable

    if not path.lower().endswith(PLOT_FORMATS):
        raise ValueError(f"cannot plot to {path!r}: expected a .png or .svg file name")
    try:
        import matplotlib.figure  # noqa: F401
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib: pip install 'cnnzoo[plot]'") from None
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path!r}: directory {directory!r} does not exist")


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


# --- training ---------------------------------------------------------------------------------------------------
def _train(args) -> int:
    from dataclasses import fields

    from cnnzoo.train.trainer import STOP_STATUS, TrainConfig, train

    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    explicit = {name for name, value in given.items() if value is not UNSET and name != "settings"}
    if given["settings"]:
        explicit.add("settings")
    values = {name: value for name, value in given.items() if value is not UNSET}
    values["settings"] = tuple(values["settings"])
    config = TrainConfig(**values)
    result = train(config, console=_console(), explicit=explicit)  # a BadImageError is worded by _in_cli_terms
    if result.stopped in STOP_STATUS:  # saved and said so; the process ends now, whatever signals follow
        import signal

        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
    return STOP_STATUS.get(result.stopped, 0)


def _eval(args) -> None:
    from cnnzoo.train.ensemble import evaluate_checkpoints

    report = evaluate_checkpoints(args.checkpoints, args.data, tta=args.tta, batch_size=args.batch_size,
                                  device=args.device, data_root=args.data_root, download=args.download)
    if args.format == "json":
        print(json.dumps(report, indent=2))
        _warn_unseen_tta(args.tta, report["members"])
        return
    from rich.table import Table

    table = Table(title=f"{args.data} test split, {plural(report['images'], 'image')}, test-time augmentation: "
                        f"{args.tta}")
    for column, justify in (("checkpoint", "left"), ("model", "left"), ("top-1 error", "right"),
                            ("top-5 error", "right")):
        table.add_column(column, justify=justify)
    for row in report["members"]:
        table.add_row(row["checkpoint"], row["model"], f"{row['top1_err']:.2f}%", f"{row['top5_err']:.2f}%")
    if report.get("ensemble"):
        e = report["ensemble"]
        table.add_row(f"ensemble of {len(report['members'])}", "", f"{e['top1_err']:.2f}%", f"{e['top5_err']:.2f}%")
    _console().print(table)
    _warn_unseen_tta(args.tta, report["members"])


def _warn_unseen_tta(tta: str, members: list[dict]) -> None:
    """One line on stderr when the test-time augmentation shows views a run's training never showed it."""
    unseen = [m for m in members if m["tta_unseen"]]
    if not unseen:
        return
    views = " and ".join(dict.fromkeys(v for m in unseen for v in m["tta_unseen"]))
    runs = "; ".join(f"{m['checkpoint']} ({', '.join(m['trained_augmentation']) or 'no augmentation'})"
                     for m in unseen)
    print(f"cnnzoo eval: warning: --tta {tta} shows {views}, which training never did for {runs} (the run's "
          f"augmentation); the error may be higher than without --tta", file=sys.stderr)


def _recipes(args) -> None:
    from cnnzoo.train.recipes import list_recipes, recipe_for

    if args.name:
        recipe = recipe_for(args.name, args.recipe)
        data = recipe.to_dict()
        if args.format == "json":
            print(json.dumps(data, indent=2))
            return
        console = _console()
        console.print(f"[bold]{cnnzoo.model_card(args.name).name}[/bold]: the {args.recipe} recipe "
                      f"({recipe.family}, {recipe.dataset})", highlight=False)
        for key, value in data.items():
            if key in ("name", "family", "dataset", "notes") or value is None or value == [] or \
                    (key == "label_smoothing" and not value):
                continue
            if key == "schedule":
                value = recipe.schedule.in_words()
            elif key == "warmup_iters" and not value:
                continue
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            console.print(f"  {key:<18} {shown}", highlight=False, markup=False)
        for note in data.get("notes") or ():
            console.print(f"  - {note}", highlight=False, markup=False)
        return
    rows = list_recipes()
    if args.format == "json":
        print(json.dumps([{"family": f, "dataset": d, **r.to_dict()} for f, d, r in rows], indent=2))
        return
    from rich.table import Table

    table = Table(title="the papers' training recipes (cnnzoo recipes NAME for one in full)")
    for column in ("family", "dataset", "optimizer", "lr", "batch", "epochs", "schedule", "weight decay",
                   "augmentation", "source"):
        table.add_column(column)
    for family, dataset, r in rows:
        table.add_row(family, dataset, r.optimizer + (" (Nesterov)" if r.nesterov else ""), f"{r.lr:g}",
                      str(r.batch_size), str(r.epochs), r.schedule.in_words(), f"{r.weight_decay:g}",
                      ", ".join(r.augmentation) or "-", r.source)
    _console().print(table)


if __name__ == "__main__":
    sys.exit(main())
