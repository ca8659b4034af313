"""Time to 98% test accuracy for LeNet-5 on the digits with the fast recipe (the goal: under 30 s on 2 CPU cores).

    pip install -e '.[digits]'
    python benchmarks/digits_time.py                 # seeds 0, 1 and 2

Runs `cnnzoo.train.train` as `cnnzoo train lenet5 --data digits --recipe fast` does and reads the metrics rows:
`elapsed` is the wall time since the run began, each epoch's evaluation included, so the time to 98% is the
elapsed time of the first epoch whose validation top-1 error is at most 2%. Data loading before the first step
(reading scikit-learn's file, resizing to 32x32) is timed too, as the whole call. Ctrl-C or SIGTERM stops it at
once with the seeds measured so far, marked partial (exit status 130 or 143); a seed stopped after it reached the
target still counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from stopping import Stop, Stopped


def report(seed: int, result, whole: float, target: float) -> float | None:
    """Print one seed's line; return its time to `target` in seconds (None: not reached)."""
    history, stopped = result.history, result.stopped
    if not history:
        print(f"seed {seed}: stopped by {stopped} in the first epoch, after {whole:.1f} s: no result")
        return None
    setup = whole - history[-1]["elapsed"]
    reached = next((r for r in history if 100 - r["val_top1_err"] >= target), None)
    final = 100 - history[-1]["val_top1_err"]
    epochs = f"{len(history)} epoch{'s' if len(history) > 1 else ''}, {whole:.1f} s"
    if reached is None:
        print(f"seed {seed}: stopped by {stopped} after {epochs}, before {target}% (last {final:.2f}%): no result"
              if stopped else f"seed {seed}: never reached {target}% (final {final:.2f}% after {epochs})")
        return None
    at = setup + reached["elapsed"]
    end = f"stopped by {stopped} after {epochs} (last {final:.2f}%)" if stopped else \
        f"final {final:.2f}% after {epochs}"
    print(f"seed {seed}: {target}% at epoch {reached['epoch']} after {at:.1f} s (set-up {setup:.1f} s); {end}",
          flush=True)
    return at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=98.0, help="test accuracy in percent (default 98)")
    args = parser.parse_args()
    stop = Stop()  # before the import: Ctrl-C while torch loads is a stop too
    times: dict[int, float | None] = {}  # seed: seconds to the target (None: never reached)
    try:
        from cnnzoo.train.trainer import TrainConfig, train

        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                result = train(TrainConfig(model="lenet5", data="digits", recipe="fast", seed=seed, out=out,
                                           quiet=True))
                whole = time.perf_counter() - start
            at = report(seed, result, whole, args.target)
            if not result.stopped or at is not None:  # a stopped seed counts only once it has reached the target
                times[seed] = at
            stop.check(result)
    except Stopped:
        pass
    stop.done()
    reached = [t for t in times.values() if t is not None]
    slowest = "never reached" if len(reached) < len(times) else f"{max(reached):.1f} s" if reached else "-"
    if stop.partial:
        print(stop.banner(f"{len(times)} of {len(args.seeds)} seeds measured; slowest of those: {slowest}"))
    else:
        print(f"slowest: {slowest} (goal < 30 s)")
    return stop.status


if __name__ == "__main__":
    sys.exit(main())
