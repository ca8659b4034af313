"""An experiment as a set of ordinary training runs: one run folder each, reused when finished, resumed when not.

    out/experiment.json        what the experiment is (name, data, scale, seeds, epochs, the runs): checked on --resume
    out/runs/<arm>-s<seed>/    one `cnnzoo train` run folder per (arm, seed): config.json, metrics.csv, last.pt, ...

A run is finished when its last.pt holds the last epoch (position [epochs, 0]); such a run is read, never
retrained. A run folder with a last.pt short of that is continued with the trainer's exact resume
(`TrainConfig(resume=True)`); an empty or missing folder starts a new run.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cnnzoo.train.checkpoint import CheckpointError, atomic_write_text, load_checkpoint

__all__ = ["RunSpec", "Plan", "RunOutcome", "ExperimentStopped", "run_plan", "read_metrics", "data_settings"]


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment: an arm (what is compared) trained from one seed."""

    arm: str  # the label the figure and table use: "plain56", "stochastic depth"
    model: str  # a registered model name
    seed: int
    settings: tuple[str, ...] = ()  # recipe changes, KEY=VALUE as `cnnzoo train --set`

    @property
    def folder(self) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_.]+', '-', self.arm).strip('-')}-s{self.seed}"


@dataclass
class Plan:
    """What an experiment trains, at which scale, and what the scale shrank compared with the paper."""

    experiment: str
    data: str
    scale: str  # "small" or "paper"
    seeds: int
    epochs: int  # every run's epochs
    recipe: str  # "paper" or "fast" (the trainer's recipe kinds)
    runs: list[RunSpec]
    shrunk: list[str] = field(default_factory=list)  # in words: "epochs 164 -> 6", "depths 20/56 kept"
    options: dict = field(default_factory=dict)  # the experiment's own settings (ensemble size, ...)

    def record(self) -> dict:
        return {"experiment": self.experiment, "data": self.data, "scale": self.scale, "seeds": self.seeds,
                "epochs": self.epochs, "recipe": self.recipe, "options": self.options,
                "runs": [asdict(r) for r in self.runs]}


@dataclass
class RunOutcome:
    spec: RunSpec
    folder: Path
    status: str  # "reused" (finished before), "resumed" or "trained"
    history: list[dict]  # metrics.csv's rows, numbers parsed


def read_metrics(path: Path) -> list[dict]:
    """A run's metrics.csv as a list of rows with float values (epoch and step as ints)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (int(v) if k in ("epoch", "step") else float(v)) for k, v in row.items()} for row in rows]


def _state(folder: Path, epochs: int) -> str:
    """"finished", "interrupted" (a last.pt short of the last epoch) or "new"."""
    last = folder / "last.pt"
    if not last.is_file():
        return "new"
    try:
        position = load_checkpoint(last)["position"]
    except CheckpointError as err:
        raise CheckpointError(f"{last} cannot be resumed or reused ({err}); delete {folder} to train that run "
                              f"again") from None
    return "finished" if list(position) == [epochs, 0] and (folder / "metrics.csv").is_file() else "interrupted"


def _check_same(out: Path, record: dict) -> None:
    stored = json.loads((out / "experiment.json").read_text())
    differs = [k for k in ("experiment", "data", "scale", "seeds", "epochs", "recipe", "options")
               if stored.get(k) != record[k]]
    if differs:
        shown = ", ".join(f"{k} ({record[k]!r} given, {stored.get(k)!r} in {out})" for k in differs)
        raise ValueError(f"--resume continues the experiment in {out} as it was started (see its experiment.json); "
                         f"these settings differ: {shown}")


def run_plan(plan: Plan, out: Path, *, resume: bool = False, train_options: dict | None = None,
             progress=print, extra: dict | None = None, jobs: int = 1) -> list[RunOutcome]:
    """Train (or reuse, or resume) every run of `plan` under `out`, `jobs` at a time.

    Args:
        train_options: TrainConfig fields every run gets (device, threads, data_root, batch_size, ...).
        progress: called with one line per run ("run 3/12: plain56, seed 1: training").
        extra: more entries for experiment.json, not compared on resume (the thread count).
        jobs: runs trained at once, each in a process of its own (`_train_in_parallel`); a run's result does not
            depend on it, only the wall time does.
    """
    from cnnzoo.train.trainer import TrainConfig

    out = Path(out)
    record = plan.record()
    if (out / "experiment.json").is_file():
        if not resume:
            raise ValueError(f"{out} holds an experiment already; pass --resume to continue it (finished runs are "
                             f"reused), or choose another --out")
        _check_same(out, record)
        record = {**json.loads((out / "experiment.json").read_text()), **(extra or {})}
    else:
        out.mkdir(parents=True, exist_ok=True)
        record = {**record, **(extra or {})}
    atomic_write_text(out / "experiment.json", json.dumps(record, indent=2) + "\n")
    states, pending = [], []
    for i, spec in enumerate(plan.runs, start=1):
        folder = out / "runs" / spec.folder
        state = _state(folder, plan.epochs)
        states.append(state)
        if state != "finished":
            config = TrainConfig(model=spec.model, data=plan.data, recipe=plan.recipe, epochs=plan.epochs,
                                 settings=spec.settings, seed=spec.seed, out=str(folder),
                                 resume=state == "interrupted", quiet=True, **(train_options or {}))
            pending.append((i, config))

    def say(i: int, what: str) -> None:
        spec = plan.runs[i - 1]
        progress(f"run {i}/{len(plan.runs)}: {spec.arm}, seed {spec.seed} ({spec.model}): {what}")

    for i, state in enumerate(states, start=1):
        if state == "finished":
            say(i, "finished before, reused")
    if jobs > 1 and len(pending) > 1:
        _train_in_parallel(pending, jobs, say, len(plan.runs))
    else:
        for i, config in pending:
            say(i, "resuming" if config.resume else "training")
            _check_finished(i, len(plan.runs), config.out, _train_one(config))
    return [RunOutcome(spec, out / "runs" / spec.folder,
                       {"finished": "reused", "interrupted": "resumed", "new": "trained"}[state],
                       read_metrics(out / "runs" / spec.folder / "metrics.csv"))
            for spec, state in zip(plan.runs, states)]


def _train_one(config) -> tuple[str | None, int]:
    """Train one run; (why it stopped early or None, its optimizer steps)."""
    from cnnzoo.train.trainer import train

    result = train(config)
    return result.stopped, result.step


def _check_finished(i: int, total: int, folder: str, outcome: tuple[str | None, int]) -> None:
    stopped, step = outcome
    if stopped is not None:
        raise ExperimentStopped(f"run {i}/{total} ({folder}) stopped early ({stopped}) after {step} steps; continue "
                                f"the experiment with --resume", stopped)


def _train_in_parallel(pending: list, jobs: int, say, total: int) -> None:
    """Train the pending runs `jobs` at a time, each in a spawned worker process, handed out one by one.

    A stop signal (SIGINT, SIGTERM, SIGHUP) hands out no more runs and is passed on to the workers, whose
    trainers save and stop at their next step, as a single run does: the experiment resumes from there. A run that
    fails stops the others the same way, then its error is raised here.
    """
    import multiprocessing
    import signal

    context = multiprocessing.get_context("spawn")  # a fork would inherit torch's OpenMP threads, and can hang
    tasks, results = context.Queue(), context.Queue()
    workers = [context.Process(target=_worker, args=(tasks, results), daemon=True)
               for _ in range(min(jobs, len(pending)))]
    queue, running = list(pending), 0
    stop: list[str] = []  # the first signal's name, or the failure
    failure = None

    def hand_out() -> None:
        nonlocal running
        while queue and running < len(workers) and not stop:
            i, config = queue.pop(0)
            say(i, ("resuming" if config.resume else "training") + f" ({len(workers)} runs at a time)")
            tasks.put((i, config))
            running += 1

    def halt(signum, frame) -> None:
        if not stop:
            stop.append(signal.Signals(signum).name)
            for w in workers:
                if w.is_alive():
                    os.kill(w.pid, signal.SIGTERM)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for s in previous:
            signal.signal(s, halt)
        for w in workers:
            w.start()
        hand_out()
        stopped = None
        while running:
            i, outcome, error = results.get()
            running -= 1
            if error is not None and failure is None:
                failure = f"run {i}/{total} ({dict(pending)[i].out}) failed: {error}"
                halt(signal.SIGTERM, None)
            elif outcome is not None and outcome[0] is not None and stopped is None:
                stopped = (i, dict(pending)[i].out, outcome)
            hand_out()
    finally:
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.join(timeout=60)
            if w.is_alive():  # not expected: a worker stuck past its run; it holds no unsaved state of ours
                w.kill()
        for q in (tasks, results):
            q.close()
            q.join_thread()
        for s, h in previous.items():
            signal.signal(s, h)
    if failure is not None:
        raise RuntimeError(failure)
    if stopped is not None:
        _check_finished(stopped[0], total, stopped[1], stopped[2])
    if stop:  # a signal arrived while no run was training (between hand-outs): stop as a run would
        raise ExperimentStopped(f"stopped by {stop[0]} before every run was trained; continue the experiment with "
                                f"--resume", stop[0])


def _worker(tasks, results) -> None:
    """A worker process: trains the runs it is handed until it is handed None.

    A stop signal is noted by `_noted`; the trainer, installing its own handlers for a run, sees the note (the
    `seen` attribute it looks for on the handler it replaces) and saves and stops at its first step, so a signal
    that arrives while a run is being set up is not lost. A run handed out after a signal is not started.
    """
    import signal

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _noted)
    while (task := tasks.get()) is not None:
        i, config = task
        if _noted.seen:
            results.put((i, (_noted.seen, 0), None))
            continue
        try:
            results.put((i, _train_one(config), None))
        except BaseException as err:  # noqa: BLE001 - reported to the parent, which stops the experiment
            results.put((i, None, f"{type(err).__name__}: {err}"))


def _noted(signum, frame) -> None:
    _noted.seen = _noted.seen or _signal_name(signum)


_noted.seen = None


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


class ExperimentStopped(RuntimeError):
    """A run stopped before its last epoch (a signal, or max_steps): the experiment stops with it."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def data_settings(data: str, scale: str) -> tuple[tuple[str, ...], list[str]]:
    """Recipe changes the data asks for at the small scale, and the words that say so.

    The digits are 8x8 images resized to 32x32: a mirrored digit is another symbol (or none), and a 4-pixel shift is
    a whole pixel of the original, so they train with shifts of up to 2 pixels and no flips (as `cnnzoo train`'s fast
    recipe does for LeNet-5 on them). Their 1,442 training images make only 11 steps an epoch at batch 128; batch 32
    makes 45, so that a few epochs are enough optimizer steps to train at all."""
    if scale == "small" and data == "digits":
        return ("augmentation=crop_pad2", "batch_size=32"), [
            "augmentation crop_pad2 instead of crop_pad4 + flip, and batch 32 (the digits: 8x8 images, 1,442 of them)"]
    return (), []


def scaled(data: str, scale: str, seeds: int, epochs: int | None, small_epochs: int,
           paper_epochs: int) -> tuple[tuple[str, ...], list[str], int, str]:
    """Where every experiment's plan starts: the arguments checked, the data's recipe settings and the words that
    say so (`data_settings`), the epochs (given, else the scale's), and the recipe ("fast" at the small scale)."""
    check_common(data, scale, seeds, epochs)
    settings, shrunk = data_settings(data, scale)
    small = scale == "small"
    return settings, shrunk, epochs or (small_epochs if small else paper_epochs), "fast" if small else "paper"


def check_common(data: str, scale: str, seeds: int, epochs: int | None) -> None:
    if not isinstance(data, str) or not data:
        raise ValueError(f"data must be a dataset name such as 'digits' or 'cifar10', got {data!r}")
    if scale not in ("small", "paper"):
        raise ValueError(f"scale must be 'small' or 'paper', got {scale!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number of at least 1, got {seeds!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a whole number of at least 1 (or None for the scale's), got {epochs!r}")


def for_test(path, data: str, *, device: str = "auto", data_root: str | None = None):
    """(checkpoint, model in eval mode, test loader) for evaluating a run's checkpoint on `data`'s test split,
    prepared as the run was trained (its input size, its training set's mean and std), in a fixed order."""
    import dataclasses

    from cnnzoo.data import fit, fit_mode, load_dataset, make_loader
    from cnnzoo.train.checkpoint import model_from_checkpoint
    from cnnzoo.train.trainer import resolve_device

    target = resolve_device(device)
    payload = load_checkpoint(path)
    model = model_from_checkpoint(payload, device=target)
    size = tuple(payload["data"]["input_size"])
    test = load_dataset(data, "test", root=data_root)
    fitted = fit(test, size, mode=fit_mode(test, size))
    fitted = dataclasses.replace(fitted, mean=tuple(payload["data"]["mean"]), std=tuple(payload["data"]["std"]))
    loader = make_loader(fitted, 256, train=False, augment=None, seed=0, device=target, drop_last=False)
    loader.set_position(0, 0)
    return payload, model, loader
