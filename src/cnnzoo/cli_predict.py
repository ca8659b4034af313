"""`cnnzoo predict`: classify images with a model's pretrained weights or a training checkpoint.

The weights bring their own preprocessing and class names (`cnnzoo.weights.Weights`): torchvision's transforms and
ImageNet categories for a twin, Caffe's BGR 0..255 input for the MSRA ResNets, a checkpoint's dataset statistics
and class names. Folders are read recursively and streamed in batches; a file that cannot be decoded is listed
and skipped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from cnnzoo.cli import _count

EPILOG = """examples:
  cnnzoo predict resnet50_v1_5 cat.jpg
  cnnzoo predict resnet50_v1_5 photos/ --weights IMAGENET1K_V1 --topk 3 --tta flip
  cnnzoo predict resnet50 cat.jpg --weights R-50.pkl          (He et al.'s original, from Detectron's file)
  cnnzoo predict runs/resnet20/best.pt test_images/ --format json

A model name uses its default pretrained weights (torchvision's, downloaded once into torch.hub's cache) unless
--weights names others: a weights name (`cnnzoo info NAME` lists them), a URL or a file. A checkpoint uses its own
weights and its dataset's class names. Exit status 0 when at least one image was classified, 1 when none could be
decoded, 2 for a usage error."""


def arguments(p) -> None:
    p.epilog = EPILOG
    p.add_argument("model", metavar="NAME|CHECKPOINT",
                   help="a registered model name (with pretrained weights) or a checkpoint written by `cnnzoo train`")
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR", help="image files, or folders read recursively")
    p.add_argument("--weights", metavar="W",
                   help="for a model name: a weights name (e.g. IMAGENET1K_V1), a URL or a weights file "
                        "(default: the model's default weights)")
    p.add_argument("--topk", type=_count(1), default=5, metavar="K", help="classes shown per image (default 5)")
    p.add_argument("--tta", choices=["flip", "ten-crop"],
                   help="test-time augmentation: average the centre crop with its mirror image, or ten crops "
                        "(corners and centre, and their mirror images)")
    p.add_argument("--batch", type=_count(1), default=16, metavar="N", help="images per forward pass (default 16)")
    p.add_argument("--threads", type=_count(1), metavar="N",
                   help="CPU threads (default: the cores no other program is running on now; torch's default of "
                        "every core runs many times slower while another program keeps one busy)")
    p.add_argument("--format", choices=["table", "json"], default="table")


def run(args) -> int:
    import torch

    from cnnzoo.train.threads import free_cores

    before = torch.get_num_threads()
    torch.set_num_threads(args.threads or free_cores())
    try:
        return _classify(args)
    finally:
        torch.set_num_threads(before)  # the caller's count again (the CLI called from Python, as the tests do)


def _classify(args) -> int:
    import torch

    from cnnzoo.data.folder import BadImageError, read_image

    files = _image_files(args.images)
    # channels-last: oneDNN's convolutions take it directly (ResNet-50 at batch 1: ~2x faster here than NCHW)
    model = _model(args.model, args.weights).to(memory_format=torch.channels_last)
    weights = model.pretrained_weights
    classes = weights.categories or tuple(str(i) for i in range(weights.num_classes))
    topk = min(args.topk, len(classes))
    results, skipped = [], []
    with _progress(len(files), args.format == "table") as advance, torch.inference_mode():
        for start in range(0, len(files), args.batch):
            chunk = files[start:start + args.batch]
            views, kept = [], []
            for path in chunk:
                try:  # the trainer's image reader: every Pillow mode, alpha over white, one-line errors
                    image = read_image(str(path), weights.preprocess.channels)
                    views.append(weights.preprocess.views(image, args.tta))
                    kept.append(path)
                except BadImageError as err:
                    skipped.append({"image": str(path), "reason": f"cannot decode: {err.reason}"})
                except ValueError as err:  # an image too small for the crop
                    skipped.append({"image": str(path), "reason": str(err)})
            if kept:
                per_image = views[0].shape[0]
                x = torch.cat(views).contiguous(memory_format=torch.channels_last)
                probs = model(x).softmax(dim=1).view(len(kept), per_image, -1).mean(dim=1)
                top = probs.topk(topk, dim=1)
                for path, p, i in zip(kept, top.values.tolist(), top.indices.tolist()):
                    results.append({"image": str(path), "top": [{"class": classes[c], "index": c, "probability": q}
                                                                for q, c in zip(p, i)]})
            advance(len(chunk))
    if args.format == "json":
        print(json.dumps({"model": weights.model, "weights": weights.name, "preprocess": asdict(weights.preprocess),
                          "tta": args.tta, "predictions": results, "skipped": skipped}, indent=2))
    else:
        _print_table(results, weights, args.tta)
        for item in skipped:
            print(f"cnnzoo predict: skipped {item['image']}: {item['reason']}", file=sys.stderr)
    return 0 if results else 1


def _model(source: str, weights: str | None):
    from cnnzoo.registry import create_model, list_models
    from cnnzoo.train.checkpoint import is_checkpoint_path, load_checkpoint

    if is_checkpoint_path(source) and source.lower() not in list_models():
        if weights is not None:
            raise ValueError("--weights is for a model name; a checkpoint brings its own weights")
        name = load_checkpoint(source)["model"]
        return create_model(name, pretrained=source).eval()
    return create_model(source, pretrained=weights if weights is not None else True).eval()


def _image_files(arguments: list[str]) -> list[Path]:
    from cnnzoo.data.folder import IMAGE_EXTENSIONS

    files = []
    for text in arguments:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"no image files in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no image or folder at {path}")
    return files


class _progress:
    """A rich progress bar on stderr for more than one batch's worth of images; nothing for a few."""

    def __init__(self, total: int, shown: bool):
        self.total, self.shown, self.bar = total, shown and total > 16, None

    def __enter__(self):
        if not self.shown:
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.start()
        task = self.bar.add_task("classifying", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _print_table(results: list[dict], weights, tta: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"{weights.model}, {weights.name} weights" + (f", {tta} test-time augmentation" if tta else "")
    table = Table(title=title)
    table.add_column("image", overflow="fold")  # a path is folded over lines, never cut short
    for column, justify in (("rank", "right"), ("class", "left"), ("probability", "right")):
        table.add_column(column, justify=justify)
    for result in results:
        for rank, item in enumerate(result["top"], start=1):
            table.add_row(result["image"] if rank == 1 else "", str(rank), item["class"],
                          f"{100 * item['probability']:.2f}%", end_section=rank == len(result["top"]))
    Console().print(table)
