"""How fast `cnnzoo.profile` is against torchinfo's summary, on every registered model, in one run.

    pip install -e '.[bench]'          # torchinfo, for the comparison only
    python benchmarks/profile_speed.py                      # every model at batch 1, then a few at batch 64
    python benchmarks/profile_speed.py 'resnet*' --large-batch 256 --large vgg16 resnet50

Both tools are timed on the same models at their native inputs, each given the same model already built (the
ratio compares like with like). Ours is also timed as `cnnzoo summary` uses it: by name, building the model on
the meta device included (that column gives the whole-zoo total). Each figure is the best of `--repeat` runs, after
one warm-up call of each tool. The goals: the whole zoo at batch 1 in under 10 s, each model at least 10x faster
than torchinfo at batch 1 and 224x224, and far faster at large batches, where the real run grows and ours must not.
Ctrl-C or SIGTERM stops it at once with the totals of the rows measured so far, marked partial (exit status 130 or
143).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
import warnings

import torch

import cnnzoo
from stopping import Stop, Stopped


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def time_models(name: str, batch: int, repeat: int, torchinfo) -> tuple[float, float, float | None, str]:
    """(ours by name, ours on the built model, torchinfo on the built model or None, note)."""
    card = cnnzoo.model_card(name)
    by_name = best_time(lambda: cnnzoo.profile(name, batch_size=batch), repeat)
    model = cnnzoo.create_model(name).eval()
    built = best_time(lambda: cnnzoo.profile(model, batch_size=batch), repeat)
    if torchinfo is None:
        return by_name, built, None, ""
    size = (batch, *card.input_size)
    try:
        theirs = best_time(lambda: torchinfo.summary(model, input_size=size, verbose=0, device="cpu"), repeat)
    except Exception as err:  # noqa: BLE001  (a model torchinfo cannot summarise is reported, not fatal)
        return by_name, built, None, f"torchinfo failed: {type(err).__name__}"
    return by_name, built, theirs, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", default=["*"], help="model names or shell patterns (default: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    parser.add_argument("--large", nargs="*", default=["alexnet", "vgg16", "googlenet", "resnet50", "densenet121"],
                        help="models also timed at --large-batch")
    parser.add_argument("--large-batch", type=int, default=64, help="the large batch (default 64)")
    args = parser.parse_args()
    try:
        import torchinfo
    except ImportError:
        torchinfo = None
        print("torchinfo is not installed (pip install -e '.[bench]'): timing cnnzoo.profile alone",
              file=sys.stderr)
    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(True)
    names = [n for n in cnnzoo.list_models() if any(fnmatch.fnmatch(n, p) for p in args.patterns)]
    if not names:
        print(f"no model matches {args.patterns}", file=sys.stderr)
        return 2
    stop = Stop()
    rows = []  # (name, batch, ours by name, ours on the built model, torchinfo)
    large = [n for n in args.large if n in names]
    try:
        measure(names, large, args, torchinfo, rows)
    except Stopped:
        pass
    stop.done()
    if stop.partial:
        print(stop.banner(f"{len(rows)} of {len(names) + len(large)} rows measured; the totals below are theirs"))
    if rows:
        report(rows, args.large_batch, partial=stop.partial)
    return stop.status


def measure(names: list[str], large: list[str], args, torchinfo, rows: list) -> None:
    """Time each model (at batch 1, then the `large` ones at --large-batch), print its row, append it to `rows`."""
    time_models("resnet20", 1, 1, torchinfo)  # warm-up: imports and first-call set-up of both tools
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f", torchinfo {torchinfo.__version__}" if torchinfo else ""))
    print(f"{'model':<28} {'input':>11} {'batch':>5} {'by name ms':>10} {'cnnzoo ms':>10} {'torchinfo ms':>12} "
          f"{'ratio':>7}")
    for batch, group in [(1, names), (args.large_batch, large)]:
        for name in group:
            by_name, ours, theirs, note = time_models(name, batch, args.repeat, torchinfo)
            rows.append((name, batch, by_name, ours, theirs))
            size = "x".join(map(str, cnnzoo.model_card(name).input_size))
            ratio = f"{theirs / ours:6.1f}x" if theirs else ""
            shown = f"{theirs * 1e3:12.1f}" if theirs else f"{'-':>12}"
            print(f"{name:<28} {size:>11} {batch:>5} {by_name * 1e3:10.1f} {ours * 1e3:10.1f} {shown} {ratio:>7} "
                  f"{note}", flush=True)


def report(rows: list, large_batch: int, partial: bool) -> None:
    """The totals and ratios over `rows` (`partial`: a stop came first, they are not the whole selection)."""
    at_one = [r for r in rows if r[1] == 1]
    total = sum(r[2] for r in at_one)
    scope = f"the {len(at_one)} models measured at batch 1" if partial else \
        f"whole selection at batch 1 ({len(at_one)} models)"
    print(f"\n{scope}: cnnzoo {total:.2f} s by name" + ("" if partial else " (goal for the zoo < 10 s)"), end="")
    timed = [r for r in at_one if r[4]]
    if timed:
        print(f", torchinfo {sum(r[4] for r in timed):.2f} s on the {len(timed)} it summarised")
        imagenet = [r for r in timed if cnnzoo.model_card(r[0]).input_size[1] >= 224]
        if imagenet:
            worst = min(imagenet, key=lambda r: r[4] / r[3])
            print(f"batch 1, 224x224 and up: slowest ratio {worst[4] / worst[3]:.1f}x ({worst[0]}; goal >= 10x), "
                  f"median {sorted(r[4] / r[3] for r in imagenet)[len(imagenet) // 2]:.1f}x")
        large = [r for r in rows if r[1] != 1 and r[4]]
        if large:
            print(f"batch {large_batch}: ratios " + ", ".join(f"{r[0]} {r[4] / r[3]:.0f}x" for r in large))
    else:
        print()


if __name__ == "__main__":
    sys.exit(main())
