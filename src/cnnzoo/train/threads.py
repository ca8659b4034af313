"""How many CPU threads a run uses: a choice the trainer makes, measures and states, not a default it inherits.

PyTorch's default is one thread per physical core. When another program keeps one of those cores busy, every
parallel region of every layer waits for the thread that shares a core with it, and a net of small layers
(LeNet-5 on 32x32 digits: hundreds of tiny regions a step) can slow down 50x or more. So before the first step
the trainer times a few real training steps (forward and backward on a copy of the model, the global RNG put
back afterwards, nothing applied) with each candidate count and keeps the fastest. The candidates are torch's
default, the cores that are free now (the affinity mask less the other runnable tasks in /proc/loadavg) and 1.

Thread counts change the order of floating-point sums, so a run is bit-for-bit reproducible for a given seed
*and* thread count: the count is recorded with the run, a resumed run keeps it, and `--threads N` pins it.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch

__all__ = ["ThreadChoice", "cpu_candidates", "free_cores", "measure_threads"]


class ThreadChoice:
    """The count chosen, and how (for the run's first line)."""

    def __init__(self, threads: int, reason: str, timings: dict[int, float] | None = None):
        self.threads, self.reason, self.timings = threads, reason, timings or {}

    def describe(self) -> str:
        noun = "thread" if self.threads == 1 else "threads"
        if not self.timings:
            return f"{self.threads} CPU {noun} ({self.reason})"
        shown = ", ".join(f"{n}: {1000 * t:.1f} ms" for n, t in sorted(self.timings.items()))
        return f"{self.threads} CPU {noun} ({self.reason}; a step took {shown}; --threads N to pin)"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _others_running() -> int:
    """Runnable tasks on the machine besides this one, now (the 4th field of /proc/loadavg: running/total)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(0, running - 1)


def free_cores() -> int:
    """The cores this process may use that no other runnable task holds now (at least 1): the thread count for a
    short job that cannot afford to measure, such as one prediction."""
    return max(1, available_cores() - _others_running())


def cpu_candidates() -> list[int]:
    cores = available_cores()
    return sorted({max(1, min(torch.get_num_threads(), cores)), free_cores(), 1}, reverse=True)


def measure_threads(step: Callable[[], None], candidates: list[int], budget: float = 2.0) -> ThreadChoice:
    """Time `step` under each candidate thread count, alternating (a load that changes meanwhile hits every
    candidate alike), for about `budget` seconds; the fastest median wins, ties going to more threads."""
    before = torch.get_num_threads()
    timings: dict[int, list[float]] = {n: [] for n in candidates}
    try:
        for n in candidates:  # warm-up: first calls allocate and pick kernels
            torch.set_num_threads(n)
            step()
        began = time.perf_counter()
        rounds = 0
        while rounds < 2 or (rounds < 8 and time.perf_counter() - began < budget):
            for n in candidates:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                step()
                timings[n].append(time.perf_counter() - t0)
            rounds += 1
            if rounds == 1 and time.perf_counter() - began > budget:  # a heavy step: one round tells enough
                break
    finally:
        torch.set_num_threads(before)
    medians = {n: statistics.median(ts) for n, ts in timings.items()}
    best = min(medians, key=lambda n: (medians[n] / 1.05 if n == max(candidates) else medians[n], -n))
    return ThreadChoice(best, "measured at start-up", medians)
