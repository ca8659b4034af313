"""Training throughput of `cnnzoo train` against the conventional pipeline, on the same machine, in one run.

    python benchmarks/train_speed.py                       # resnet20 and resnet56, batch 128, 32x32 inputs
    python benchmarks/train_speed.py --models resnet20 --images 20480 --amp

Both sides train the same model from the same initialisation with the same optimizer (SGD, momentum 0.9,
weight decay 1e-4, lr 0.1) on the same CIFAR-10-format data: random images written to a temporary folder in the
real on-disk format (the content does not change the speed).

- conventional: a `torch.utils.data.Dataset` that turns each image into a PIL image and applies torchvision's
  RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and Normalize, batched by a DataLoader (timed with
  0 and with 2 worker processes; the faster counts), and a float32 model in the default memory format.
- cnnzoo: `cnnzoo.train.train` itself for one epoch (the images/s of its metrics row): the data in memory as
  uint8, crops and flips on whole batches; bfloat16 autocast with --amp, channels_last with --channels-last.

Throughput is images per second over a whole epoch, the first steps included on both sides. The goal is at least
1.5x for resnet20 and resnet56. Ctrl-C or SIGTERM stops it at once with the figures measured so far, marked partial
(exit status 130 or 143).
"""

from __future__ import annotations

import argparse
import pickle
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import cnnzoo
from stopping import Stop, Stopped


def write_cifar(root: Path, images: int, seed: int = 0) -> None:
    """A CIFAR-10 folder in the real format (five training batches and a test batch) with random pixels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per = images // 5
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        n = per if i < 5 else 1000
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [f"{k}.png".encode() for k in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class{k}".encode() for k in range(10)], b"num_cases_per_batch": per}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def ignore_stop_signals(worker_id: int) -> None:
    """In a DataLoader worker: leave Ctrl-C and SIGTERM, which reach the whole process group, to the benchmark,
    which shuts its workers down (torch's worker would die of a SIGTERM not sent by its parent, and the benchmark
    would then report that death instead of the figures it has)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def conventional(name: str, root: Path, batch: int, workers: int, seed: int) -> float:
    import torchvision.transforms as T
    from PIL import Image

    from cnnzoo.data import load_dataset

    data = load_dataset("cifar10", "train", root=root)
    arrays = data.images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as torchvision's CIFAR10 keeps them
    labels = data.labels.tolist()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(data.mean, data.std)])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(arrays[i])), labels[i]

    torch.manual_seed(seed)
    model = cnnzoo.create_model(name, num_classes=10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(Images(), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=False,
                                         worker_init_fn=ignore_stop_signals)
    start, seen = time.perf_counter(), 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += y.numel()
    return seen / (time.perf_counter() - start)


def ours(name: str, root: Path, batch: int, amp: bool, channels_last: bool, seed: int, out: Path,
         stop: Stop) -> float:
    from cnnzoo.train.trainer import TrainConfig, train

    config = TrainConfig(model=name, data="cifar10", data_root=str(root), epochs=1, batch_size=batch, lr=0.1,
                         momentum=0.9, weight_decay=1e-4, channels_last=channels_last, amp=amp, seed=seed, out=str(out),
                         quiet=True)
    result = train(config)
    stop.check(result)  # train() takes the signals itself: a stopped run's epoch is not a figure
    return result.history[-1]["images_per_s"]


def line(name: str, base: dict[int, float], fast: float | None) -> str:
    """One model's figures; those not measured (the run was stopped first) are shown as -."""
    best_w = max(base, key=base.get) if base else None
    shown = ", ".join(f"{w} workers {v:.0f}" for w, v in base.items()) or "none measured"
    conventional = f"{base[best_w]:.0f} img/s" if base else "-"
    ratio = f"{fast / base[best_w]:.2f}x" if base and fast else "-"
    return (f"{name}: conventional {conventional} ({shown}); cnnzoo {f'{fast:.0f} img/s' if fast else '-'}; "
            f"ratio {ratio} (goal >= 1.5x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--images", type=int, default=10240, help="training images (default 10240)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--amp", action="store_true", help="cnnzoo side with bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="cnnzoo side in channels_last")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.images} images of 3x32x32; cnnzoo side: "
          + (", ".join(n for n, on in (("bfloat16 autocast", args.amp), ("channels_last", args.channels_last)) if on)
             or "float32"))
    stop = Stop()
    done, name, base, fast = 0, None, {}, None  # models finished; the current one's figures so far
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_cifar(root, args.images)
            for name in args.models:
                base, fast = {}, None
                for w in args.workers:
                    base[w] = conventional(name, root, args.batch, w, seed=0)
                fast = ours(name, root, args.batch, args.amp, args.channels_last, seed=0, out=root / f"run-{name}",
                            stop=stop)
                print(line(name, base, fast), flush=True)
                done += 1
    except Stopped:
        pass
    stop.done()
    if stop.partial:
        print(stop.banner(f"{done} of {len(args.models)} models measured"))
        if name is not None and done < len(args.models):
            print("  unfinished " + line(name, base, fast))
    return stop.status


if __name__ == "__main__":
    sys.exit(main())
