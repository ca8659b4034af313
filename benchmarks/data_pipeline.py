"""Speed of the in-memory loader: ms per batch and images/s of pure loading (index, augment, normalise).

    python benchmarks/data_pipeline.py [--device cuda] [--batch 128] [--augment crop_pad4,flip]

Uses a CIFAR-sized random dataset (50,000 x 3x32x32 uint8), so it needs no download. On CUDA the figure is
taken with synchronisation after every epoch (the loader itself never synchronises). Ctrl-C or SIGTERM stops it
at once with the epochs timed so far, marked partial (exit status 130 or 143).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from cnnzoo.data import Augment, BatchLoader, ImageData
from stopping import Stop, Stopped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--augment", default="crop_pad4,flip", help="comma-separated names, or '' for none")
    parser.add_argument("--out", type=int, default=None, help="output size of resizing augmentations")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.images,), generator=g)
    data = ImageData(images, labels, tuple(map(str, range(10))), name="random", split="train",
                     mean=(0.5,) * 3, std=(0.25,) * 3)
    names = [n for n in args.augment.split(",") if n]
    augment = Augment.from_names(names, size=args.out) if names else None
    loader = BatchLoader(data, args.batch, train=True, augment=augment, seed=0, device=args.device)
    sync = torch.cuda.synchronize if loader.device.type == "cuda" else (lambda: None)

    stop = Stop()
    per_batch, x = [], None
    try:
        for x, _ in loader:  # warm-up epoch
            pass
        for _ in range(args.epochs):
            sync()
            start = time.perf_counter()
            for x, _ in loader:
                pass
            sync()
            per_batch.append((time.perf_counter() - start) / len(loader))
    except Stopped:
        pass
    stop.done()
    if stop.partial:
        print(stop.banner(f"{len(per_batch)} of {args.epochs} timed epochs done"))
    if not per_batch:
        return stop.status
    ms = statistics.median(per_batch) * 1e3
    print(f"device {loader.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch "
          f"{args.batch}, {args.size}x{args.size} -> {tuple(x.shape[-2:])}, augment {names or 'none'}")
    print(f"{ms:.3f} ms/batch (median of {len(per_batch)} epochs of {len(loader)} batches), "
          f"{args.batch / ms * 1e3:,.0f} images/s")
    return stop.status


if __name__ == "__main__":
    sys.exit(main())
