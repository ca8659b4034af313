"""Time to 98% test accuracy for LeNet-5 on the digits with the fast recipe (issue 7's goal: under 30 s here).

    pip install -e '.[digits]'
    python benchmarks/digits_time.py                 # seeds 0, 1 and 2

Runs `cnnzoo.train.train` as `cnnzoo train lenet5 --data digits --recipe fast` does and reads the metrics rows:
`elapsed` is the wall time since the run began, each epoch's evaluation included, so the time to 98% is the
elapsed time of the first epoch whose validation top-1 error is at most 2%. Data loading before the first step
(reading scikit-learn's file, resizing to 32x32) is timed too, as the whole call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from cnnzoo.train.trainer import TrainConfig, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=98.0, help="test accuracy in percent (default 98)")
    args = parser.parse_args()
    worst = 0.0
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = train(TrainConfig(model="lenet5", data="digits", recipe="fast", seed=seed, out=out, quiet=True))
            whole = time.perf_counter() - start
        setup = whole - result.history[-1]["elapsed"]
        reached = next((r for r in result.history if 100 - r["val_top1_err"] >= args.target), None)
        final = 100 - result.history[-1]["val_top1_err"]
        if reached is None:
            print(f"seed {seed}: never reached {args.target}% (final {final:.2f}%, {whole:.1f} s)")
            worst = float("inf")
            continue
        at = setup + reached["elapsed"]
        worst = max(worst, at)
        print(f"seed {seed}: {args.target}% at epoch {reached['epoch']} after {at:.1f} s "
              f"(set-up {setup:.1f} s); final {final:.2f}% after {len(result.history)} epochs, {whole:.1f} s")
    print(f"slowest: {worst:.1f} s (goal < 30 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
