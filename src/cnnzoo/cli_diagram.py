"""`cnnzoo diagram`: its flags and its printing; the drawing is `cnnzoo.report.diagram.diagram`."""

from __future__ import annotations

from cnnzoo.cli import _input_size

EPILOG = """examples:
  cnnzoo diagram resnet34 --out resnet34.svg
  cnnzoo diagram googlenet --out googlenet.png --annotate shape,params,rf
  cnnzoo diagram resnet152 --out resnet152.svg --depth 2
  cnnzoo diagram runs/lenet5/best.pt --out lenet5.pdf

The figure is drawn from the profiler's trace of the real model (meta device: no memory, no arithmetic): a
layer is a box labelled as the papers label it, with its output shape; parallel branches sit side by side;
shortcuts are arcs on the right (identity solid, projection dotted); repeated units collapse into one drawn
in full and marked "x N". SVG needs nothing more; PNG and PDF need `pip install 'cnnzoo[plot]'`."""


def _depth(text: str):
    if text == "max":
        return "max"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"expected a positive level or 'max', got {text!r}")
    return value


def _annotations(text: str) -> tuple[str, ...]:
    import argparse

    from cnnzoo.report.diagram import ANNOTATIONS

    chosen = tuple(a.strip() for a in text.split(",") if a.strip())
    wrong = [a for a in chosen if a not in ANNOTATIONS]
    if wrong:
        raise argparse.ArgumentTypeError(f"unknown annotation {wrong[0]!r}; choose from {','.join(ANNOTATIONS)}")
    return chosen


def arguments(p) -> None:
    p.epilog = EPILOG
    p.add_argument("name", help="a registered model name (see `cnnzoo list`) or a checkpoint file")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write: .svg, .png or .pdf")
    p.add_argument("--input", type=_input_size, metavar="CxHxW",
                   help="input size, e.g. 3x224x224 (default: the model's native input)")
    p.add_argument("--depth", type=_depth, default=None, metavar="N|max",
                   help="draw modules at nesting level N as single boxes; 'max' draws every layer alone, nothing "
                        "collapsed (default: the deepest level that fits one screen)")
    p.add_argument("--annotate", type=_annotations, default=("shape",), metavar="LIST",
                   help="comma-separated, beside each box: shape, params, macs, rf (default: shape)")


def run(args) -> int:
    import cnnzoo
    from cnnzoo.cli import _from_checkpoint, _meta_build
    from cnnzoo.report.diagram import FORMATS, diagram

    out = args.out
    if not out.lower().endswith(FORMATS):
        raise ValueError(f"--out must end in {', '.join(FORMATS)}, got {out!r}")
    source = _from_checkpoint(args.name)
    target = args.name
    if source is not None:
        target = _meta_build(source[0], source[1])
    else:
        cnnzoo.model_card(args.name)  # an unknown name: the registry's error, with the nearest names
    drawn = diagram(target, input_size=args.input, depth=args.depth, annotate=args.annotate)
    path = drawn.save(out)
    print(f"{path}: {drawn.name}, {drawn.blocks} top-level blocks, {drawn.width:.0f}x{drawn.height:.0f} px")
    return 0
