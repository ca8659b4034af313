"""`cnnzoo compress` and `cnnzoo decompress`: their flags and printing; the work is `cnnzoo.compress`."""

from __future__ import annotations

import argparse
import json

from cnnzoo.cli import _count

EPILOG_COMPRESS = """examples:
  cnnzoo compress squeezenet1_0 --out squeezenet.cnnz --bits conv=6
  cnnzoo compress alexnet --out alexnet.cnnz
  cnnzoo compress runs/lenet5/best.pt --out lenet5.cnnz --finetune --data digits --epochs 4 --run-dir runs/lenet5-dc
  cnnzoo compress resnet18 --out r18.cnnz --density 0.3 --bits conv=5,fc=5
  cnnzoo compress squeezenet1_0 --weights IMAGENET1K_V1 --out squeezenet.cnnz --bits conv=6   (trained weights)

Deep Compression (Han, Mao & Dally, ICLR 2016): magnitude pruning per layer, weight sharing by k-means over the
surviving weights (linear initialisation), relative sparse indices and Huffman coding. Without --density the
paper's settings are used where a paper compressed the net (alexnet, lenet5, squeezenet1_0). With --finetune the
pruned net is retrained with its masks held, then its centroids are fine-tuned, as two resumable runs in
--run-dir. The table gives the size after each stage and the ratios to the original and to AlexNet's 240 MB."""

EPILOG_DECOMPRESS = """examples:
  cnnzoo decompress squeezenet.cnnz --out squeezenet.pt
  cnnzoo eval squeezenet.pt --data imagefolder:val

The checkpoint holds the dense model whose outputs equal the compressed (quantised) model's exactly."""


def _density(text: str):
    """0.3 | 0.84,0.38,... (one per layer, in order) | features.*=0.3,classifier.*=0.09"""
    try:
        if "=" in text:
            pairs = [part.split("=", 1) for part in text.split(",") if part]
            return {k.strip(): float(v) for k, v in pairs}
        values = [float(v) for v in text.split(",") if v]
        return values[0] if len(values) == 1 else values
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction of weights kept (0.3), one per layer (0.84,0.38,...) "
                                         f"or LAYER=FRACTION pairs (features.*=0.3,classifier.*=0.09), got {text!r}")


def _kinds(text: str) -> dict:
    try:
        pairs = [part.split("=", 1) for part in text.split(",") if part]
        out = {k.strip(): int(v) for k, v in pairs}
    except ValueError:
        out = None
    if not out or any(k not in ("conv", "fc") for k in out):
        raise argparse.ArgumentTypeError(f"expected KIND=BITS for kinds conv and fc, e.g. conv=8,fc=5, got {text!r}")
    return out


def compress_arguments(p) -> None:
    p.epilog = EPILOG_COMPRESS
    p.add_argument("name", help="a registered model name (its seeded initialisation) or a checkpoint file")
    p.add_argument("--out", required=True, metavar="FILE", help="the compressed file to write")
    p.add_argument("--density", type=_density, metavar="D",
                   help="fraction of weights kept: one number, one per layer in order, or LAYER=FRACTION pairs "
                        "(default: the paper's settings, where there are some)")
    p.add_argument("--bits", type=_kinds, metavar="KIND=B,...",
                   help="bits per weight by layer kind (default conv=8,fc=5, the paper's AlexNet)")
    p.add_argument("--index-bits", type=_kinds, metavar="KIND=B,...",
                   help="bits per relative index by layer kind (default conv=8,fc=5)")
    p.add_argument("--seed", type=int, default=0, help="seed of a registered model's initialisation (default 0)")
    p.add_argument("--weights", metavar="W",
                   help="compress a registered model's pretrained weights: a weights name (IMAGENET1K_V1), 'default', "
                        "or a file, as create_model(pretrained=...) takes them (default: its seeded initialisation)")
    p.add_argument("--finetune", action="store_true",
                   help="retrain with the masks held, then fine-tune the centroids (needs --data and --run-dir)")
    p.add_argument("--data", help="dataset for --finetune (as `cnnzoo train --data`)")
    p.add_argument("--epochs", type=_count(1), metavar="N", help="epochs of each fine-tuning run")
    p.add_argument("--recipe", choices=["paper", "fast"], default="fast", help="recipe of the fine-tuning runs")
    p.add_argument("--lr", type=float, help="learning rate of the fine-tuning runs (default: the recipe's)")
    p.add_argument("--run-dir", metavar="DIR", help="folder of the fine-tuning runs (prune/, centroids/)")
    p.add_argument("--resume", action="store_true", help="continue the fine-tuning runs in --run-dir")
    p.add_argument("--format", choices=["table", "json"], default="table")


def decompress_arguments(p) -> None:
    p.epilog = EPILOG_DECOMPRESS
    p.add_argument("file", help="a file written by `cnnzoo compress`")
    p.add_argument("--out", required=True, metavar="CHECKPOINT", help="the checkpoint (.pt) to write")


def compress_run(args) -> int:
    from cnnzoo.compress.pipeline import compress

    finetune = None
    if args.finetune:
        if not args.data or not args.run_dir:
            raise ValueError("--finetune needs --data (the dataset to retrain on) and --run-dir (the runs' folder)")
        finetune = _train_config(args)
    elif args.data or args.run_dir or args.epochs or args.resume:
        raise ValueError("--data, --run-dir, --epochs and --resume go with --finetune")
    weights = True if args.weights == "default" else args.weights
    result = compress(args.name, args.out, density=args.density, bits=args.bits, index_bits=args.index_bits,
                      finetune=finetune, seed=args.seed, pretrained=weights)
    if args.format == "json":
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_table(result)
    return 0


def _train_config(args):
    import cnnzoo
    from cnnzoo.train.checkpoint import is_checkpoint_path, load_checkpoint
    from cnnzoo.train.trainer import TrainConfig

    name = load_checkpoint(args.name)["model"] if is_checkpoint_path(args.name) else cnnzoo.model_card(args.name).name
    return TrainConfig(model=name, data=args.data, recipe=args.recipe, epochs=args.epochs, lr=args.lr,
                       out=args.run_dir, resume=args.resume, seed=args.seed, quiet=True)


def decompress_run(args) -> int:
    from cnnzoo.compress.pipeline import decompress

    path = decompress(args.file, args.out)
    print(f"{path}: the dense model of {args.file}")
    return 0


def print_info(path, format: str) -> None:
    """`cnnzoo info FILE` for a compressed file."""
    from cnnzoo.compress.pipeline import compressed_info

    info = compressed_info(path)
    if format == "json":
        print(json.dumps(info, indent=2, default=str))
        return
    layers = [t for t in info["tensors"] if "bits" in t]
    kept = sum(t["surviving"] for t in layers)
    weights = sum(_numel(t["shape"]) for t in layers)
    print(f"{info['file']}: cnnzoo compressed file, format version {info['version']}, {info['total_bytes']:,} bytes")
    print(f"model        {info['model']}" + (f" {info['model_options']}" if info["model_options"] else ""))
    print(f"compressed   {len(layers)} weight tensors: {kept:,} of {weights:,} weights kept "
          f"({kept / max(weights, 1):.1%}), bits {info['meta'].get('bits')}")
    print(f"stored as is {len(info['tensors']) - len(layers)} tensors (biases, batch norm, uncompressed layers)")
    print(f"sections     header {info['header_bytes']} B, records {info['json_bytes']:,} B, "
          f"data {info['sections_bytes']:,} B")
    print(f"weights      {info['meta'].get('weights', 'unknown')} of {info['meta'].get('source')}; fine-tuned: "
          f"{'yes' if info['meta'].get('finetuned') else 'no'}")


def _numel(shape) -> int:
    n = 1
    for v in shape:
        n *= v
    return n


def print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.model}: Deep Compression, stage by stage (sizes in kB, 1 kB = 1,000 bytes)")
    for column in ("layer", "params", "kept", "bits", "index", "original", "pruned", "quantised", "Huffman"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    kb = lambda n: f"{n / 1e3:,.1f}"  # noqa: E731
    for row in result.rows():
        table.add_row(row["layer"], f"{row['params']:,}", f"{row['density']:.0%}",
                      "" if row["bits"] is None else str(row["bits"]),
                      "" if row["index_bits"] is None else str(row["index_bits"] or ""),
                      kb(row["original"]), kb(row["pruned"]), kb(row["quantised"]), kb(row["huffman"]))
    console = Console(width=120)
    console.print(table)
    s = result.sizes
    console.print(f"file {result.path}: {result.file_bytes:,} bytes ({result.file_bytes / 1e6:.3f} MB; header and "
                  f"layer records {result.file_bytes - s.huffman:,}); {result.ratio_to_original:.1f}x smaller than "
                  f"the original {s.original / 1e6:.2f} MB, {result.ratio_to_alexnet:.0f}x smaller than AlexNet's "
                  f"240 MB; {result.seconds:.1f} s")
