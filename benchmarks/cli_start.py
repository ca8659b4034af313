"""Start-up time of the `cnnzoo` command against `python -c "import torch"`, measured in the same run.

    python benchmarks/cli_start.py                  # 7 repetitions, one `list` with a stale table
    python benchmarks/cli_start.py --reps 11 --cold 3

Each repetition runs every command once, in turn (so a change in the machine's load touches them all alike); the
median wall time of each is reported with its ratio to the torch import. Goals:
`cnnzoo --help` within 0.3 s of the torch import alone, `cnnzoo list` (the whole zoo) under 1.5x the torch import.
`list` is timed as a fresh install runs it (an empty cache folder: the counts come from the table shipped in the
package) and, `--cold` times, with the table made stale as by an edit to a model's source and an empty cache, which
builds every model on the meta device (what a developer meets once after each such edit). The goal is judged on the
fresh install.
Ctrl-C or SIGTERM stops it at once with the medians of the repetitions done so far, marked partial (exit status
130 or 143).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stopping import Stop, Stopped


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


STALE_TABLE_LIST = """
import sys
from pathlib import Path
import cnnzoo.analysis.counting as counting
from cnnzoo.__main__ import main
counting.TABLE_FILE = Path("/nonexistent/params_table.json")
sys.argv = ["cnnzoo", "list"]
sys.exit(main())
"""


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each warm command (default 7)")
    parser.add_argument("--cold", type=int, default=1, help="repetitions of `list` with a stale table and an empty cache (default 1)")
    args = parser.parse_args()
    python = sys.executable
    exe = str(Path(python).with_name("cnnzoo"))
    commands = {
        "python -c 'import torch'": [python, "-c", "import torch"],
        "cnnzoo --help": [exe, "--help"],
        "cnnzoo list --help": [exe, "list", "--help"],
        "cnnzoo list": [exe, "list"],
    }
    stop = Stop()
    times: dict[str, list[float]] = {label: [] for label in commands}
    cold: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as fresh:
            env = {**os.environ, "CNNZOO_CACHE": fresh}  # stays empty: the shipped table answers `list`
            timed(commands["cnnzoo list"], env)  # fills the OS's file cache for every command
            for _ in range(args.reps):
                for label, argv in commands.items():
                    times[label].append(timed(argv, env))
            stale = [python, "-c", STALE_TABLE_LIST]
            for _ in range(args.cold):
                with tempfile.TemporaryDirectory() as empty:
                    cold.append(timed(stale, {**os.environ, "CNNZOO_CACHE": empty}))
    except Stopped:
        pass
    stop.done()
    reps = min(len(values) for values in times.values())  # whole repetitions only: each touches every command
    times = {label: values[:reps] for label, values in times.items()}
    if stop.partial:
        print(stop.banner(f"{reps} of {args.reps} repetitions and {len(cold)} of {args.cold} stale-table lists done"))
    if not reps:
        return stop.status
    if cold:
        times["list, table stale"] = cold
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.2f}; "
          f"Python {platform.python_version()}; {reps} repetitions")
    base = statistics.median(times["python -c 'import torch'"])
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'x torch':>8} {'- torch s':>10}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:<28} {median:9.3f} {min(values):7.3f} {max(values):7.3f} {median / base:8.2f} "
              f"{median - base:+10.3f}")
    help_over = statistics.median(times["cnnzoo --help"]) - base
    list_ratio = statistics.median(times["cnnzoo list"]) / base
    print(f"goal: --help within 0.3 s of the torch import: {help_over:+.3f} s -> "
          f"{'met' if help_over <= 0.3 else 'MISSED'}")
    print(f"goal: list under 1.5x the torch import: {list_ratio:.2f}x -> {'met' if list_ratio < 1.5 else 'MISSED'}")
    return stop.status


if __name__ == "__main__":
    sys.exit(main())
