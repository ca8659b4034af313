"""Training speed on a CPU another program keeps busy: the measured thread choice against torch's default.

    .venv/bin/python benchmarks/busy_cpu.py [--model lenet5] [--data digits] [--epochs 2] [--hogs 1]

Trains the same short run (`cnnzoo train MODEL --data DATA --recipe fast`) three ways, in one session:
idle with the thread count measured at start-up (the baseline), then with `--hogs` CPU-bound processes running
(pure Python loops, one core each), once with the measured choice and once pinned to torch's default (one thread
per core, what a run used before the choice was measured). It prints images/s of each and the ratios to the idle
run; the goal is at least 0.4x the idle speed with one core busy. Run it on a machine with nothing else running:
its baseline is the idle run. Ctrl-C or SIGTERM stops it at once with the rows measured so far, marked partial
(exit status 130 or 143).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stopping import Stop, Stopped

HOG = "try:\n    while True:\n        pass\nexcept KeyboardInterrupt:\n    pass\n"  # a group's Ctrl-C ends it quietly


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(args, out: Path, threads: int | None) -> tuple[float, str]:
    """Train once; (images/s over all epochs, the run's thread line)."""
    command = [sys.executable, "-m", "cnnzoo", "train", args.model, "--data", args.data, "--recipe", "fast",
               "--epochs", str(args.epochs), "--out", str(out)]
    if threads is not None:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"busy_cpu: training failed: {done.stderr.strip()}")
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    images = sum(float(r["images_per_s"]) * float(r["seconds"]) for r in rows)
    seconds = sum(float(r["seconds"]) for r in rows)
    record = json.loads((out / "config.json").read_text())
    return images / seconds, (record.get("threads") or {}).get("how", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=1, help="CPU-bound processes running beside the busy runs")
    args = parser.parse_args()
    import torch

    default = torch.get_num_threads()
    rows: list[tuple[str, float, str]] = []
    hogs: list[subprocess.Popen] = []
    stop = Stop()
    print(f"{cpu_name()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}, default {default} threads; "
          f"{args.model} on {args.data}, fast recipe, {args.epochs} epochs", flush=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            speed, how = run(args, Path(tmp) / "idle", None)
            rows.append(("idle, measured choice", speed, how))
            hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
            time.sleep(1.0)
            speed, how = run(args, Path(tmp) / "busy", None)
            rows.append((f"{args.hogs} core(s) busy, measured choice", speed, how))
            speed, how = run(args, Path(tmp) / "busy-default", default)
            rows.append((f"{args.hogs} core(s) busy, torch's default ({default})", speed, how))
    except Stopped:
        pass
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    stop.done()
    if stop.partial:
        print(stop.banner(f"{len(rows)} of 3 runs measured"), flush=True)
    base = rows[0][1] if rows else None
    print(f"{'run':<40} {'images/s':>10} {'x idle':>8}  threads")
    for name, speed, how in rows:
        print(f"{name:<40} {speed:>10,.0f} {speed / base:>8.2f}  {how}")
    return stop.status


if __name__ == "__main__":
    sys.exit(main())
