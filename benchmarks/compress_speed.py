"""Compress and decompress the papers' nets and print the times and sizes against the goals (AlexNet: compress under
60 s, decompress under 10 s) and the papers' figures (Iandola et al. 2016, Table 2).

    .venv/bin/python benchmarks/compress_speed.py

Each net is its seeded initialisation at the paper's settings (`cnnzoo.compress.PAPER_SETTINGS`); the CPU and the
thread count are printed, since a shared core changes the absolute times.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

GOALS = {"compress": 60.0, "decompress": 10.0}
RUNS = [  # (label, model, bits override, paper's file in MB)
    ("AlexNet", "alexnet", None, 6.9),
    ("SqueezeNet 1.0, 8-bit", "squeezenet1_0", {"conv": 8}, 0.66),
    ("SqueezeNet 1.0, 6-bit", "squeezenet1_0", {"conv": 6}, 0.47),
    ("LeNet-5 (ours, LeCun's net)", "lenet5", None, None),
    ("LeNet-5 modern", "lenet5_modern", None, None),
]


def main() -> None:
    import torch

    from cnnzoo.compress import compress, decompress
    from cnnzoo.deploy.bench import environment

    env = environment(threads=torch.get_num_threads())
    print(f"{env['cpu']}, {env['threads']} threads, torch {env['torch']}")
    print(f"{'net':30} {'original MB':>11} {'file MB':>9} {'paper MB':>9} {'x smaller':>9} {'vs AlexNet':>10} "
          f"{'compress s':>10} {'decompress s':>12}")
    with tempfile.TemporaryDirectory(prefix="cnnzoo-compress-") as folder:
        for label, name, bits, paper in RUNS:
            path = Path(folder) / f"{name}.cnnz"
            start = time.perf_counter()
            result = compress(name, path, bits=bits)
            packed = time.perf_counter() - start
            start = time.perf_counter()
            decompress(path, Path(folder) / f"{name}.pt")
            unpacked = time.perf_counter() - start
            shown = f"{paper:9.2f}" if paper else f"{'-':>9}"
            print(f"{label:30} {result.sizes.original / 1e6:11.2f} {result.file_bytes / 1e6:9.3f} {shown} "
                  f"{result.ratio_to_original:9.1f} {result.ratio_to_alexnet:10.0f} {packed:10.1f} {unpacked:12.1f}")
            if name == "alexnet":
                verdict = all((packed <= GOALS["compress"], unpacked <= GOALS["decompress"]))
                print(f"{'':30} goals: compress under {GOALS['compress']:.0f} s, decompress under "
                      f"{GOALS['decompress']:.0f} s: {'met' if verdict else 'NOT met'}")


if __name__ == "__main__":
    main()
