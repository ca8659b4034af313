"""The trainer: one run folder, the paper's recipe, exact resume, clean stops.

    cnnzoo train lenet5 --data digits --recipe fast --out runs/lenet5

A run folder holds config.json (everything needed to reproduce the run), metrics.csv (one row per epoch),
last.pt and best.pt (checkpoints, written atomically), curves.png (with matplotlib) and TensorBoard event files
(with tensorboard installed).

Exact resume. Every source of randomness is either a pure function of (seed, epoch, batch) — the order of the
training set and each batch's augmentation, drawn by the loader — or the global RNG the model itself draws from
(dropout, stochastic depth, drop-path), whose state the checkpoint stores. A checkpoint also stores the
optimizer's state, the schedule's state, the position (epoch, next batch) and the epoch's running sums. So a
run stopped anywhere (Ctrl-C, SIGTERM, or SIGKILL, which loses only the steps since the last checkpoint)
continues with --resume and ends with the same weights, bit for bit on the same CPU, as a run never stopped.
Checkpoints are written at the end of every epoch, every `save_every` steps within one, and at the first step
boundary after `save_minutes` of training without a checkpoint (10 by default: a killed ImageNet-size epoch
loses minutes, not hours). When a checkpoint is written does not change what is computed.

Safety. The run folder is locked for the run (a second trainer on it is refused with the holder's pid), checked
writable before the first step, and cleared of a killed writer's temporary files (`cnnzoo.train.runfolder`).
SIGINT, SIGTERM and SIGHUP finish the current step, save last.pt and return with `stopped` set (the CLI exits
130, 143 or 129); a second signal does not abandon the save. The training loss is watched (`cnnzoo.train.health`):
a loss that is not finite, or one that has run far above its starting level for a whole window of steps, stops
the run before the step is applied, naming the step and the last good checkpoint. A checkpoint is written only
while the loss is healthy and only with finite weights and optimizer state, so a checkpoint is always one worth
resuming.

The code reads in phases: `_prepare` (validate and build everything; nothing is written), `_hold_folder` (lock
the folder), `_loop` (the training loop, on one screen), `_Saver` (checkpoints, metrics, what is known good).
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.train.checkpoint import (CheckpointError, atomic_write_text, load_checkpoint, load_model_state,
                                     nonfinite_tensors, save_checkpoint)
from cnnzoo.train.distributed import Distributed
from cnnzoo.train.evaluate import predict, topk_correct
from cnnzoo.train.health import Health, TrainingDiverged
from cnnzoo.train.runfolder import RunFolder, RunFolderError
from cnnzoo.train.threads import ThreadChoice, available_cores, cpu_candidates, measure_threads
from cnnzoo.words import plural

__all__ = ["TrainConfig", "Start", "train", "TrainingDiverged", "RunResult", "resolve_device", "RESUME_KEEPS",
           "STOP_STATUS"]


def _opt(help: str, default=None, **extra):
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """Everything that defines a run. Fields left None take the recipe's value; the CLI's flags are these fields."""

    model: str = _opt("a registered model name", MISSING)
    data: str = _opt("dataset: digits, mnist, fashion-mnist, cifar10, cifar100, imagefolder:PATH or fake", MISSING)
    recipe: str = _opt("paper (the paper's recipe) or fast (a short schedule for a CPU demo)", "paper")
    epochs: int | None = _opt("number of epochs (default: the recipe's)")
    batch_size: int | None = _opt("global batch size, split across processes (default: the recipe's)")
    lr: float | None = _opt("initial learning rate (default: the recipe's)")
    momentum: float | None = _opt("momentum (default: the recipe's)")
    weight_decay: float | None = _opt("L2 weight decay (default: the recipe's)")
    nesterov: bool | None = _opt("Nesterov momentum (default: the recipe's)")
    settings: tuple[str, ...] = _opt("any other recipe field, as KEY=VALUE (repeatable): dropout=0.3, warmup_iters=0, "
                                     "augmentation=crop_pad4,flip, schedule.kind=cosine, schedule.milestones=0.5,0.75",
                                     ())
    out: str | None = _opt("run folder (default: runs/MODEL-DATA-SEED)")
    resume: bool = _opt("continue the run in --out from its last checkpoint", False)
    seed: int = _opt("seed of every random draw of the run", 0)
    device: str = _opt("auto, cpu, cuda or cuda:N", "auto")
    amp: bool = _opt("automatic mixed precision (float16 on CUDA, bfloat16 on CPU)", False)
    channels_last: bool = _opt("channels-last memory format for the model and the batches", False)
    compile: bool = _opt("torch.compile the model", False)
    data_root: str | None = _opt("where datasets live (default: $CNNZOO_DATA or ~/.cache/cnnzoo/data)")
    download: bool = _opt("download the dataset if it is missing", False)
    workers: int = _opt("loader processes for folder datasets", 4)
    val_split: float = _opt("hold out this fraction of the training split to validate on each epoch (and to pick "
                            "best.pt); the test split is then evaluated once, at the end (0: validate on the test "
                            "split)", 0.0)
    save_every: int = _opt("also checkpoint every N steps within an epoch (0: by time only)", 0)
    save_minutes: float = _opt("also checkpoint after this many minutes without one (0: never by time)", 10.0)
    max_steps: int | None = _opt("stop (and save) after this many steps in all; --resume continues")
    threads: int | None = _opt("CPU threads (default: the fastest of a few counts, measured at start-up; a resumed "
                               "run keeps the count it began with)")
    skip_bad_images: bool = _opt("image folders: skip files that cannot be decoded (listed in the run folder's "
                                 "skipped_images.txt) instead of stopping", False)
    quiet: bool = _opt("no progress bar and no per-epoch lines", False)

    def overrides(self) -> dict:
        """The recipe fields this config sets explicitly."""
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov")
                if getattr(self, k) is not None}


@dataclass
class Start:
    """What a new run starts from instead of its fresh initialisation, and what it holds fixed while it trains
    (Deep Compression's retraining, `cnnzoo.compress`).

    Args:
        state: the weights to start from (a state_dict of the run's model, e.g. a checkpoint's model_state).
        masks: {weight name: bool tensor}: pruned weights (False) are set to zero and held there
            (`cnnzoo.compress.prune.MaskedTraining`).
        shared: {weight name: cnnzoo.compress.quantize.Shared}: these weights are tied to their codebooks, and the
            codebooks are trained instead (`cnnzoo.compress.quantize.SharedTraining`); their pruned entries stay 0.
        source: a few words for config.json ("pruning stage 2 of 3").

    The masks and codebooks go into every checkpoint (its "compression" entry), so --resume needs no Start: a
    resumed run rebuilds them from last.pt.
    """

    state: dict | None = None
    masks: dict | None = None
    shared: dict | None = None
    source: str = "given weights"


# Settings that may differ when resuming (they do not change what is computed, or they are where to compute it).
RESUME_KEEPS = ("out", "resume", "device", "data_root", "download", "workers", "save_every", "save_minutes",
                "max_steps", "quiet", "skip_bad_images", "threads")


@dataclass
class RunResult:
    out: Path
    epochs_done: int
    step: int
    history: list[dict]
    stopped: str | None = None  # "SIGINT", "SIGTERM", "SIGHUP" or "max_steps" when the run ended early
    best_top1_err: float | None = None
    test: dict | None = None  # with a held-out validation split: the test split's errors after the last epoch
    saved_step: int | None = None  # the step last.pt holds (None: none written)


# exit status of `cnnzoo train` for a run stopped by a signal: 128 + the signal's number, as a shell reports it
STOP_STATUS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this machine has no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


class _Stop:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) set a flag; the loop saves and returns at the next step.

    Once a stop is under way, further signals do not abandon it: only a second Ctrl-C pressed a second or more
    after the first, outside a save, stops at once (losing the steps since the last checkpoint). A save itself
    runs with the signals held back (`quiet`), so nothing interrupts a checkpoint halfway.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signal: str | None = None
        self._first = 0.0
        self._active = False

    @contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        if getattr(previous[signal.SIGINT], "seen", None):  # a Ctrl-C the caller's handler saw during start-up
            self.signal, self._first = "SIGINT", time.monotonic()

        def handler(signum, frame):
            name = signal.Signals(signum).name
            if self.signal is None:
                self.signal, self._first = name, time.monotonic()
            elif name == self.signal == "SIGINT" and time.monotonic() - self._first >= 1.0:
                raise KeyboardInterrupt  # a deliberate second Ctrl-C

        for s in previous:
            signal.signal(s, handler)
        self._active = True
        try:
            yield self
        finally:
            self._active = False
            for s, h in previous.items():
                signal.signal(s, h)

    @contextmanager
    def quiet(self):
        """Hold the stop signals back for the duration (they are delivered, and set the flag, afterwards)."""
        if not self._active:
            yield
            return
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@dataclass
class _Progress:
    """Where the run is, and what it has learnt so far: what a checkpoint stores besides the tensors."""

    epoch: int = 0  # the epoch being trained
    batch: int = 0  # the next batch of that epoch
    step: int = 0  # optimizer steps taken
    running: dict = field(default_factory=lambda: dict(_NO_SUMS))  # this epoch's sums so far
    history: list = field(default_factory=list)  # one row per finished epoch
    best: float | None = None  # the lowest validation top-1 error so far


_NO_SUMS = {"loss": 0.0, "top1": 0, "top5": 0, "seen": 0}


@dataclass
class _Run:
    """Everything the loop needs; built and validated by `_prepare` before anything is written."""

    config: TrainConfig
    card: object
    recipe: object
    out: Path
    device: torch.device
    ddp: Distributed
    train_data: object
    test_data: object
    train_loader: object
    val_loader: object
    test_loader: object
    model_options: dict
    model: nn.Module
    net: nn.Module  # the model as trained: compiled and/or wrapped for data parallelism
    optimizer: torch.optim.Optimizer
    schedule: object
    scaler: object
    health: Health
    progress: _Progress
    resumed: dict | None
    threads: ThreadChoice | None = None
    holds: list = field(default_factory=list)  # what keeps pruned weights at 0 and shared weights tied (Start)
    started: dict | None = None  # what a Start gave, for config.json
    clock: float = 0.0  # perf_counter at the run's (virtual) start: elapsed time carries across resumes

    @property
    def main(self) -> bool:
        return self.ddp.is_main


def train(config: TrainConfig, console=None, *, explicit: set[str] | None = None,
          start: Start | None = None) -> RunResult:
    """Train `config.model` on `config.data` with its recipe; see the module docstring.

    Args:
        explicit: the config fields the user set (the CLI passes the flags given). On --resume each must agree
            with the stored run; without it, every field that differs from its default is taken as set.
        start: weights to start from and masks or codebooks to hold (`Start`); only for a new run (a resumed
            run takes them from its checkpoint).
    """
    threads_before = torch.get_num_threads()
    try:
        return _train(config, console, explicit, start)
    finally:
        torch.set_num_threads(threads_before)  # the run's choice is the run's, not the caller's


def _train(config: TrainConfig, console, explicit, start) -> RunResult:
    run = _prepare(config, explicit, start)
    log = _Console(console, quiet=run.config.quiet or not run.main)
    with _hold_folder(run) as folder:
        if run.main and run.resumed is None:
            atomic_write_text(run.out / "config.json", json.dumps(_config_record(run), indent=2) + "\n")
        saver = _Saver(run)
        stop = _Stop()
        writer = _tensorboard(run.out) if run.main else None
        with stop.installed():
            log.start(run, folder)
            stopped = _loop(run, stop, saver, log, writer)
        test = _final_test(run) if run.config.val_split and not stopped and run.progress.history else None
        if run.main:
            _plot_curves(run.out / "curves.png", run.progress.history)
            if test is not None:
                atomic_write_text(run.out / "test.json", json.dumps(test, indent=2) + "\n")
            saver.write_skipped()
        if writer is not None:
            writer.close()
    p = run.progress
    result = RunResult(out=run.out, epochs_done=len(p.history), step=p.step, history=p.history, stopped=stopped,
                       best_top1_err=p.best, test=test, saved_step=saver.good[0] if saver.good else None)
    log.finish(result)
    run.ddp.barrier()
    run.ddp.close()
    return result


# --- the loop: what a reader must see whole ---------------------------------------------------------------------
def _loop(run: _Run, stop: _Stop, saver: _Saver, log: _Console, writer) -> str | None:
    """Train to the recipe's last epoch; return why the run stopped early (a signal, max_steps) or None."""
    p, steps_per_epoch = run.progress, len(run.train_loader)
    stopped = None
    for epoch in range(p.epoch, run.recipe.epochs):
        if p.batch == 0:
            p.running = dict(_NO_SUMS)
        run.train_loader.set_position(epoch, p.batch)
        run.net.train()
        began, images = time.perf_counter(), 0
        with log.progress(epoch, run.recipe.epochs, steps_per_epoch, p.batch) as bar:
            for batch, (x, y) in enumerate(run.train_loader, start=p.batch):  # never empty, skipped files or not
                lr = run.schedule.lr(epoch, batch)
                loss, top1, top5 = _step(run, x, y, lr, where=f"epoch {epoch + 1}, batch {batch + 1} "
                                                              f"(step {p.step + 1}) with learning rate {lr:g}",
                                         saver=saver)
                p.step += 1
                for key, value in (("loss", loss * len(y)), ("top1", top1), ("top5", top5), ("seen", len(y))):
                    p.running[key] += value
                images += len(y) * run.ddp.world_size
                bar.update(loss=loss, acc=top1 / len(y), lr=lr, speed=images / max(time.perf_counter() - began, 1e-9))
                p.epoch, p.batch = (epoch, batch + 1) if batch + 1 < steps_per_epoch else (epoch + 1, 0)
                stopped = _stop_reason(run, stop)
                if p.batch != 0 and (stopped or saver.due()):  # an epoch's end is saved below, with its row
                    saver.save(stop)
                if stopped and p.batch != 0:
                    return stopped
        row = _end_epoch(run, epoch, time.perf_counter() - began, images)
        saver.end_epoch(row, stop)
        if writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    writer.add_scalar(key, value, epoch + 1)
            writer.flush()
        log.epoch(row, run.recipe.epochs)
        if stopped:
            return stopped
    return None


def _step(run: _Run, x, y, lr: float, where: str, saver: _Saver) -> tuple[float, int, int]:
    """One optimizer step; the loss is checked (finite, not run away) before the step is applied."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(run.device.type, dtype=_amp_dtype(run.device)) if run.config.amp else nullcontext():
        output = run.net(x)
        loss = _loss(output, y, run.recipe)
    value = loss.item()
    if run.ddp.enabled:  # every process judges the same number, so all stop at the same step
        value = run.ddp.sum([value], run.device)[0] / run.ddp.world_size
    run.health.check(value, where, saver.advice())
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        _after_backward(run)
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        _after_backward(run)
        run.optimizer.step()
    for hold in run.holds:
        hold.after_step()  # pruned weights back to 0, shared weights to codebook[label]
    logits = output[0] if isinstance(output, tuple) else output
    top1, top5 = topk_correct(logits.detach(), y)
    return value, top1, top5


def _after_backward(run: _Run) -> None:
    for hold in run.holds:
        hold.after_backward()  # shared weights: their gradients summed into their centroids'


def _stop_reason(run: _Run, stop: _Stop) -> str | None:
    if run.ddp.any(stop.signal is not None, run.device):
        return stop.signal or "signal"
    if run.config.max_steps is not None and run.progress.step >= run.config.max_steps:
        return "max_steps"
    return None


def _end_epoch(run: _Run, epoch: int, seconds: float, images: int) -> dict:
    """The epoch's row of metrics.csv: training sums over all processes, then the validation split's errors."""
    p = run.progress
    totals = run.ddp.sum([p.running["loss"], p.running["top1"], p.running["top5"], p.running["seen"]], run.device)
    seen = max(totals[3], 1)
    probs, labels = predict(run.net, run.val_loader, amp=run.config.amp)
    val = _gather_errors(probs, labels, run.ddp, run.device)
    row = {
        "epoch": epoch + 1, "step": p.step, "lr": run.schedule.lr(epoch, len(run.train_loader) - 1),
        "train_loss": totals[0] / seen, "train_top1_err": 100 * (1 - totals[1] / seen),
        "val_top1_err": 100 * val[0], "val_top5_err": 100 * val[1],
        "seconds": round(seconds, 3), "images_per_s": round(images / max(seconds, 1e-9), 1),
        "elapsed": round(time.perf_counter() - run.clock, 3),
    }
    run.schedule.end_epoch(row)
    p.history.append(row)
    return row


def _final_test(run: _Run) -> dict:
    """With a held-out validation split: the test split, evaluated once after the last epoch."""
    probs, labels = predict(run.net, run.test_loader, amp=run.config.amp)
    top1, top5 = _gather_errors(probs, labels, run.ddp, run.device)
    return {"epoch": len(run.progress.history), "test_top1_err": 100 * top1, "test_top5_err": 100 * top5}


# --- saving -------------------------------------------------------------------------------------------------------
class _Saver:
    """Checkpoints (rank 0 writes), each known to be good before it is written.

    A checkpoint is written only while the run is healthy (`Health.healthy`: no runaway loss in the current
    window) and only if every weight and optimizer value is finite; otherwise the save is deferred (unhealthy)
    or the run stops (non-finite). So the checkpoint a failure message names is always one worth resuming.
    """

    def __init__(self, run: _Run):
        self.run = run
        self.last_save = time.perf_counter()
        self.good = None  # (step, epoch) of the last checkpoint known good: written by this run or resumed from
        if run.resumed is not None:
            self.good = (run.resumed["step"], run.resumed["position"][0])

    def advice(self) -> str:
        last = self.run.out / "last.pt"
        if self.good is None:
            kept = "No checkpoint was written before it"
        else:
            kept = f"The last good checkpoint is {last} (step {self.good[0]}, {plural(self.good[1], 'epoch')} done)"
        return f"{kept}; try a lower --lr"

    def due(self) -> bool:
        config, p = self.run.config, self.run.progress
        if config.save_every and p.step % config.save_every == 0:
            return True
        # by time: each process decides alone; saving involves no collective (only rank 0 writes)
        return bool(config.save_minutes) and time.perf_counter() - self.last_save >= 60 * config.save_minutes

    def save(self, stop: _Stop, name: str = "last.pt", force: bool = False) -> bool:
        """Write a checkpoint if the run is healthy (or `force`d at the end); return whether it was written."""
        run = self.run
        if not (force or run.health.healthy):
            return False  # deferred: a runaway loss is in the window; the next healthy save catches up
        if run.main:
            payload = self._payload()
            bad = (nonfinite_tensors(payload["model_state"]) + nonfinite_tensors(payload["optimizer"]["state"])
                   + nonfinite_tensors(payload.get("compression") or {}, "compression"))
            if bad:
                raise TrainingDiverged(
                    f"the weights became NaN or inf by step {run.progress.step} (in {', '.join(bad[:2])}"
                    f"{f' and {len(bad) - 2} more' if len(bad) > 2 else ''}) although the loss was finite; "
                    f"nothing was saved. {self.advice()}")
            with stop.quiet():
                save_checkpoint(run.out / name, payload)
                if name == "last.pt":
                    self.write_skipped()
        if name == "last.pt":
            self.good = (run.progress.step, len(run.progress.history))
        self.last_save = time.perf_counter()
        return True

    def end_epoch(self, row: dict, stop: _Stop) -> None:
        run, p = self.run, self.run.progress
        improved = p.best is None or row["val_top1_err"] < p.best
        if improved:
            p.best = row["val_top1_err"]
        if run.main:
            _write_metrics(run.out / "metrics.csv", p.history)
        last = p.epoch >= run.recipe.epochs
        if improved and run.health.healthy:
            self.save(stop, "best.pt")
        self.save(stop, force=last)

    def write_skipped(self) -> None:
        skipped = getattr(self.run.train_loader, "skipped", None)
        if self.run.main and skipped:
            atomic_write_text(self.run.out / "skipped_images.txt", "".join(f"{path}\n" for path in skipped))

    def _payload(self) -> dict:
        run, p = self.run, self.run.progress
        device = run.device
        return {
            "model": run.card.name, "model_options": run.model_options, "model_state": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "schedule": run.schedule.state_dict(),
            "position": [p.epoch, p.batch], "step": p.step, "running": dict(p.running), "history": p.history,
            "best": p.best, "health": run.health.state_dict(),
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "elapsed": time.perf_counter() - run.clock,
            "config": asdict(run.config), "recipe": run.recipe.to_dict(), "classes": list(run.train_data.classes),
            "data": {"mean": list(run.train_data.mean), "std": list(run.train_data.std),
                     "input_size": list(run.card.input_size)},
            "skipped_images": list(getattr(run.train_loader, "skipped", None) or []),
            "threads": run.threads.threads if run.threads is not None else None,
            **({"compression": _holds_state(run.holds)} if run.holds else {}),
        }


@contextmanager
def _hold_folder(run: _Run):
    """The run folder, locked by rank 0; every process learns whether that worked (no one waits forever)."""
    folder, failure = RunFolder(run.out, owner=run.main), None
    try:
        folder.__enter__()
    except BaseException as err:  # noqa: B036 (re-raised below, after the other processes know)
        failure = err
    if run.ddp.any(failure is not None, run.device):
        raise failure if failure is not None else RunFolderError(f"rank 0 could not take the run folder {run.out}")
    try:
        yield folder
    except BaseException as err:
        folder.__exit__(type(err), err, err.__traceback__)
        raise
    folder.__exit__(None, None, None)


# --- set-up: everything validated before the run folder is touched -----------------------------------------------
def _prepare(config: TrainConfig, explicit: set[str] | None, start: Start | None = None) -> _Run:
    from cnnzoo.registry import create_model, model_card
    from cnnzoo.train.recipes import recipe_for
    from cnnzoo.train.schedule import LRSchedule

    _check_config(config)
    if start is not None and not isinstance(start, Start):
        raise ValueError(f"start must be a cnnzoo.train.trainer.Start, got {type(start).__name__}")
    if start is not None and config.resume:
        raise ValueError("start= is for a new run; a resumed run continues from its last.pt, which holds its "
                         "weights, masks and codebooks (pass start=None with resume)")
    device = resolve_device(config.device)
    ddp = Distributed.from_env(device.type)
    device = ddp.device(device)
    out = Path(config.out) if config.out else Path("runs") / (
        f"{config.model}-{config.data.replace(':', '-').replace('/', '_')}-s{config.seed}")
    RunFolder.refuse_if_held(out)  # first, before anything slow (every process: none is left waiting for rank 0)
    resumed = None
    if config.resume:
        if not config.out:
            raise ValueError("--resume needs --out DIR, the folder of the run to continue")
        last = out / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"nothing to resume in {out}: no last.pt there")
        resumed = load_checkpoint(last)
        config = _resumed_config(config, resumed["config"], out, explicit)
    elif (out / "last.pt").exists():
        raise ValueError(f"{out} holds a run already; pass --resume to continue it, or choose another --out")
    card = model_card(config.model)
    recipe = apply_settings(recipe_for(card.name, config.recipe).override(**config.overrides()), config.settings)
    if recipe.batch_size % ddp.world_size:
        raise ValueError(f"batch size {recipe.batch_size} does not split evenly over {ddp.world_size} processes")
    model_options = {"num_classes": None, **_model_options(card.name, recipe, config.settings)}
    train_data, test_data, (train_loader, val_loader, test_loader) = _data(config, card, recipe, device, ddp)
    model_options["num_classes"] = len(train_data.classes)

    torch.manual_seed(config.seed)  # the model's initialisation, then its own random draws
    model = create_model(card.name, **model_options)
    if resumed is not None:
        if resumed["model"] != card.name or resumed["model_options"] != model_options:
            raise ValueError(f"{out / 'last.pt'} holds {resumed['model']} with {resumed['model_options']}, "
                             f"but this run builds {card.name} with {model_options}")
        load_model_state(model, resumed["model_state"], card.name, out / "last.pt")
    elif start is not None and start.state is not None:
        load_model_state(model, start.state, card.name, f"start.state ({start.source})")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    holds = _holds(model, resumed.get("compression") if resumed is not None else _start_record(start),
                   out / "last.pt" if resumed is not None else "start")
    optimizer = _optimizer(model, recipe, holds)
    schedule = LRSchedule(recipe, len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None
    health = Health(len(train_data.classes), window=min(50, max(10, len(train_loader))))
    progress = _Progress()
    if resumed is not None:
        _restore(resumed, optimizer, schedule, scaler, health, progress, train_loader, device, out)
    net = torch.compile(model) if config.compile else model
    if ddp.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    run = _Run(config=config, card=card, recipe=recipe, out=out, device=device, ddp=ddp, train_data=train_data,
               test_data=test_data, train_loader=train_loader, val_loader=val_loader, test_loader=test_loader,
               model_options=model_options, model=model, net=net, optimizer=optimizer, schedule=schedule,
               scaler=scaler, health=health, progress=progress, resumed=resumed, holds=holds,
               started=None if start is None else {
                   "source": start.source, "weights": start.state is not None,
                   "masked": sorted(start.masks or {}), "shared": sorted(start.shared or {})})
    run.threads = _choose_threads(run)
    torch.set_num_threads(run.threads.threads)
    run.clock = time.perf_counter() - (resumed.get("elapsed", 0.0) if resumed is not None else 0.0)
    return run


def _start_record(start: Start | None) -> dict | None:
    """A Start's masks and codebooks in the form a checkpoint's "compression" entry has."""
    if start is None or (not start.masks and not start.shared):
        return None
    shared = {}
    for name, entry in (start.shared or {}).items():
        if not hasattr(entry, "state"):
            raise ValueError(f"start.shared[{name!r}] must be a cnnzoo.compress.quantize.Shared, got "
                             f"{type(entry).__name__}")
        shared[name] = entry.state()
    return {"masks": dict(start.masks or {}), "shared": shared}


def _holds(model: nn.Module, record: dict | None, source) -> list:
    """What keeps the pruned weights at zero and the shared weights tied to their codebooks while training.

    Masks of shared layers are carried by their labels (code 0 is zero), so only the other masks get hooks."""
    if not record:
        return []
    from cnnzoo.compress.prune import MaskedTraining  # the mechanisms live with the rest of Deep Compression
    from cnnzoo.compress.quantize import SharedTraining, shared_from_state

    if not isinstance(record, dict) or not isinstance(record.get("masks", {}), dict) or not isinstance(
            record.get("shared", {}), dict):
        raise CheckpointError(f"{source}: its compression entry is malformed; expected {{'masks': {{name: bool "
                              f"tensor}}, 'shared': {{name: codebook, labels, mask, kind, bits}}}}")
    holds = []
    shared = shared_from_state(record.get("shared") or {})
    masks = {k: v for k, v in (record.get("masks") or {}).items() if k not in shared}
    if masks:
        holds.append(MaskedTraining(model, masks))
    if shared:
        holds.append(SharedTraining(model, shared))
    return holds


def _holds_state(holds: list) -> dict:
    state = {"masks": {}, "shared": {}}
    for hold in holds:
        state.update({k: {**state.get(k, {}), **v} for k, v in hold.state_dict().items()})
    return state


def _choose_threads(run: _Run) -> ThreadChoice:
    """Pinned, kept from the run's start, shared among processes, or measured (`cnnzoo.train.threads`)."""
    import copy
    import os

    config, stored = run.config, (run.resumed or {}).get("threads")
    if config.threads is not None:
        return ThreadChoice(config.threads, "--threads")
    if stored is not None:
        return ThreadChoice(stored, "as the run began, so the resume is bit-exact; --threads N to change")
    if run.device.type != "cpu":
        return ThreadChoice(torch.get_num_threads(), "torch's default; the model runs on the GPU")
    if run.ddp.enabled:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", run.ddp.world_size))
        return ThreadChoice(max(1, available_cores() // local), f"the cores shared by {local} processes")
    candidates = cpu_candidates()
    if len(candidates) == 1:
        return ThreadChoice(candidates[0], "one core available")
    p = run.progress
    run.train_loader.set_position(p.epoch, p.batch)
    x, y = next(iter(run.train_loader))
    run.train_loader.set_position(p.epoch, p.batch)
    if not len(y):
        return ThreadChoice(candidates[0], "torch's default")
    probe = copy.deepcopy(run.model).train()

    def step():  # a real training step's work, applied to nothing
        with torch.autocast("cpu", dtype=torch.bfloat16) if config.amp else nullcontext():
            loss = _loss(probe(x), y, run.recipe)
        loss.backward()
        probe.zero_grad(set_to_none=True)

    rng = torch.get_rng_state()  # dropout and stochastic depth draw in the probe; the run must not notice
    try:
        return measure_threads(step, candidates)
    finally:
        torch.set_rng_state(rng)


def _restore(resumed, optimizer, schedule, scaler, health, progress, train_loader, device, out) -> None:
    """The checkpoint's optimizer, schedule, health, position and RNG; a malformed part is named, not traced."""
    try:
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
        health.load_state_dict(resumed.get("health") or {})
        if scaler is not None and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        progress.epoch, progress.batch = resumed["position"]
        progress.step, progress.history, progress.best = resumed["step"], list(resumed["history"]), resumed["best"]
        progress.running = {**_NO_SUMS, **resumed["running"]}
        torch.set_rng_state(resumed["rng"]["cpu"])
        if device.type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], device)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"{out / 'last.pt'} cannot be resumed: its training state does not fit this run "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else 'missing'})"
                              ) from None
    if hasattr(train_loader, "skipped"):
        train_loader.skipped = list(resumed.get("skipped_images") or [])


def _amp_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.bfloat16


# --- pieces ---------------------------------------------------------------------------------------------------
_MAX_SEED = 2**63 - 1


def _check_config(config: TrainConfig) -> None:
    """Types and ranges of the config's own fields (the recipe checks its fields; the CLI's flags check theirs
    earlier, with the flag names), so the Python API fails as clearly as the CLI."""
    def whole(name, low, high=None, optional=False):
        value = getattr(config, name)
        if value is None and optional:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"of at least {low}"
            raise ValueError(f"{name} must be an integer {span}, got {value!r}")

    for name in ("model", "data", "recipe", "device"):
        if not isinstance(getattr(config, name), str):
            raise ValueError(f"{name} must be a string, got {getattr(config, name)!r}")
    whole("seed", 0, _MAX_SEED)
    whole("epochs", 1, optional=True)
    whole("batch_size", 1, optional=True)
    whole("max_steps", 1, optional=True)
    whole("threads", 1, optional=True)
    whole("workers", 0)
    whole("save_every", 0)
    for name, low, high in (("val_split", 0.0, 1.0), ("save_minutes", 0.0, math.inf)):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value < high:
            raise ValueError(f"{name} must be a number in [{low:g}, {high:g}), got {value!r}")
    if isinstance(config.settings, str) or not all(isinstance(s, str) for s in config.settings):
        raise ValueError(f"settings must be a sequence of 'KEY=VALUE' strings, got {config.settings!r}")


def _resumed_config(given: TrainConfig, stored: dict, out: Path, explicit: set[str] | None) -> TrainConfig:
    """The stored run's config, with the settings that may change on a resume taken from the command line.

    Every setting the user gave (`explicit`; without it, every one that differs from its default) must agree
    with the stored run's: `--recipe paper` on a fast run is refused even though paper is the default.
    """
    names = {f.name for f in fields(TrainConfig)}
    if explicit is None:
        defaults = TrainConfig(model=given.model, data=given.data)
        explicit = {n for n in names if getattr(given, n) != getattr(defaults, n)}

    def same(a, b):
        return tuple(a) == tuple(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b

    differs = [n for n in ("model", "data") if getattr(given, n) != stored.get(n)]
    differs += sorted(n for n in explicit & names if n not in RESUME_KEEPS and n not in ("model", "data")
                      and not same(getattr(given, n), stored.get(n)))
    if differs:
        shown = ", ".join(f"{n} ({getattr(given, n)!r} given, {stored.get(n)!r} in the run)" for n in differs)
        raise ValueError(f"--resume continues the run in {out} as it was configured (see its config.json); "
                         f"these settings differ: {shown}")
    config = TrainConfig(**{k: (tuple(v) if k == "settings" else v) for k, v in stored.items() if k in names})
    for key in RESUME_KEEPS:
        setattr(config, key, getattr(given, key))
    return config


# Recipe fields that describe the recipe rather than set it: --set does not change them.
_NOT_SETTABLE = ("name", "family", "dataset", "init", "source", "assumed", "notes")


def apply_settings(recipe, settings):
    """The recipe with KEY=VALUE changes: numbers, true/false, none, comma-separated lists for the list fields,
    `schedule.FIELD=...` for the schedule's fields. The recipe validates names and values."""
    from cnnzoo.train.recipes import Schedule

    changes: dict = {}
    schedule: dict = {}
    settable = [f.name for f in fields(recipe) if f.name not in _NOT_SETTABLE]
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, e.g. dropout=0.3 or schedule.kind=cosine; got {item!r}")
        target, name = (schedule, key[len("schedule."):]) if key.startswith("schedule.") else (changes, key)
        known = [f.name for f in fields(Schedule)] if target is schedule else settable
        if name not in known:
            prefix = "schedule." if target is schedule else ""
            raise ValueError(f"--set {key}: no such setting; settable: "
                             + ", ".join(prefix + k for k in known if k != "schedule")
                             + ("" if target is schedule else ", schedule.FIELD"))
        current = getattr(recipe.schedule if target is schedule else recipe, name, None)
        target[name] = _setting(text.strip(), as_list=isinstance(current, tuple))
    if schedule:
        changes["schedule"] = schedule
    return recipe.override(**changes) if changes else recipe


def _setting(text: str, as_list: bool):
    def scalar(part: str):
        low = part.lower()
        if low in ("none", "null"):
            return None
        if low in ("true", "false"):
            return low == "true"
        for kind in (int, float):
            try:
                return kind(part)
            except ValueError:
                pass
        return part
    if as_list:
        return tuple(scalar(p.strip()) for p in text.split(",") if p.strip())
    return scalar(text)


def _model_options(name: str, recipe, settings=()) -> dict:
    """The recipe's settings that are options of the model (dropout, drop-path, survival probability).

    A recipe's own value for an option the model lacks is left out (a family recipe serves several nets); one the
    user set with --set is refused, naming the options the model has."""
    from cnnzoo.registry import model_options

    accepted = model_options(name)
    given = {s.partition("=")[0].strip().replace("-", "_") for s in settings}
    refused = sorted(k for k in recipe.model_options() if k in given and k not in accepted)
    if refused:
        own = f"its options are: {', '.join(sorted(accepted))}" if accepted else "it has no options of its own"
        raise ValueError(f"{name} has no option {', '.join(refused)} (given with --set); {own}")
    return {k: v for k, v in recipe.model_options().items() if k in accepted}


def _data(config, card, recipe, device, ddp):
    from cnnzoo.data import Augment, fit, fit_mode, hold_out, load_dataset, make_loader

    root = config.data_root
    train_data = load_dataset(config.data, "train", root=root, download=config.download)
    test_data = load_dataset(config.data, "test", root=root, download=config.download)
    if len(train_data.classes) < 2:
        raise ValueError(f"{config.data} has {plural(len(train_data.classes), 'class', 'classes')}; training needs "
                         f"at least 2")
    val_data = None
    if config.val_split:
        train_data, val_data = hold_out(train_data, config.val_split)
    if recipe.batch_size > len(train_data):
        raise ValueError(f"batch size {recipe.batch_size} is larger than {config.data}'s training set "
                         f"({plural(len(train_data), 'image')}); pass a smaller --batch-size")
    augment = Augment.from_names(recipe.augmentation, size=card.input_size[1:]) if recipe.augmentation else None
    mode = fit_mode(train_data, card.input_size)
    train_data = fit(train_data, card.input_size, mode=mode, augment=augment)  # a folder loads at what it needs
    test_data = fit(test_data, card.input_size, mode=mode, augment=augment)
    per_process = recipe.batch_size // ddp.world_size
    common = dict(device=device, channels_last=config.channels_last, rank=ddp.rank, world_size=ddp.world_size,
                  num_workers=config.workers, seed=config.seed)
    if not hasattr(train_data, "images"):  # an image folder: decoded while training
        common["skip_bad_images"] = config.skip_bad_images
    train_loader = make_loader(train_data, per_process, train=True, augment=augment, **common)
    test_loader = make_loader(test_data, max(per_process, 256), train=False, augment=None, drop_last=False, **common)
    val_loader = test_loader if val_data is None else make_loader(
        fit(val_data, card.input_size, mode=mode, augment=augment), max(per_process, 256), train=False, augment=None, drop_last=False,
        **common)
    return train_data, test_data, (train_loader, val_loader, test_loader)


def _optimizer(model: nn.Module, recipe, holds=()) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters; shared weights give way to their codebooks."""
    tied = set().union(*(hold.trained_weights() for hold in holds))
    params = [p for n, p in model.named_parameters() if p.requires_grad and n not in tied]
    params += [p for hold in holds for p in hold.parameters()]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=recipe.lr, alpha=recipe.rmsprop_decay, eps=recipe.rmsprop_eps,
                                   momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _loss(output, target, recipe):
    from cnnzoo.models.googlenet import googlenet_loss

    smoothing = getattr(recipe, "label_smoothing", 0.0) or 0.0
    if isinstance(output, tuple):
        weight = recipe.aux_loss_weight if recipe.aux_loss_weight is not None else 0.3
        return googlenet_loss(output, target, aux_weight=weight, label_smoothing=smoothing)
    return F.cross_entropy(output, target, label_smoothing=smoothing)


def _gather_errors(probs, labels, ddp: Distributed, device) -> tuple[float, float]:
    top1, top5 = topk_correct(probs, labels)
    total = ddp.sum([top1, top5, labels.numel()], device)
    return 1 - total[0] / total[2], 1 - total[1] / total[2]


# seconds and images/s: this epoch's training; elapsed: wall time since the run began (across resumes), evaluation
# included.
METRIC_FIELDS = ("epoch", "step", "lr", "train_loss", "train_top1_err", "val_top1_err", "val_top5_err", "seconds",
                 "images_per_s", "elapsed")


def _write_metrics(path: Path, history: list[dict]) -> None:
    """The whole table, rewritten atomically: rows past a resumed checkpoint cannot linger."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _config_record(run: _Run) -> dict:
    import platform

    import cnnzoo

    return {
        "config": asdict(run.config), "recipe": run.recipe.to_dict(), "model_options": run.model_options,
        "paper": run.card.paper.cite(), "classes": list(run.train_data.classes),
        "command": " ".join(sys.argv), "world_size": run.ddp.world_size,
        "threads": {"count": run.threads.threads, "how": run.threads.describe()} if run.threads else None,
        "start": run.started,
        "versions": {"cnnzoo": cnnzoo.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional `tensorboard` extra is not installed
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _plot_curves(path: Path, history: list[dict]) -> None:
    """Loss and error per epoch, written atomically; skipped without matplotlib (the `plot` extra)."""
    if not history:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in history], label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend()
    for key, label in (("train_top1_err", "training top-1"), ("val_top1_err", "validation top-1"),
                       ("val_top5_err", "validation top-5")):
        right.plot(epochs, [r[key] for r in history], label=label)
    right.set_xlabel("epoch")
    right.set_ylabel("error (%)")
    right.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    from cnnzoo.train.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, buffer.getbuffer())


class _Bar:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def update(self, *, loss, acc, lr, speed):
        if self.progress is not None:
            self.progress.update(self.task, advance=1,
                                 stats=f"loss {loss:.4f}  acc {100 * acc:5.1f}%  lr {lr:.3g}  {speed:,.0f} img/s")


class _Console:
    """The run's screen: a rich progress bar per epoch (on a terminal) and one line per epoch."""

    def __init__(self, console, quiet: bool):
        from rich.console import Console

        self.quiet = quiet
        self.console = console or Console()
        self.bars = not quiet and self.console.is_terminal

    def start(self, run: _Run, folder: RunFolder):
        if self.quiet:
            return
        what = "resuming" if run.resumed is not None else "training"
        procs = f", {run.ddp.world_size} processes" if run.ddp.enabled else ""
        recipe = run.recipe
        self.console.print(
            f"{what} {run.card.name} on {run.config.data} ({len(run.train_data):,} train / {len(run.test_data):,} "
            f"test images, {plural(len(run.train_data.classes), 'class', 'classes')}) with the {recipe.name} recipe: "
            f"{plural(recipe.epochs, 'epoch')}, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr:g}; {run.device}{procs}, "
            f"{run.threads.describe()}; run folder {run.out}", highlight=False)
        if folder.removed_tmp:
            self.console.print(f"removed {plural(len(folder.removed_tmp), 'temporary file')} an interrupted write left in "
                               f"{run.out}", highlight=False)

    @contextmanager
    def progress(self, epoch, epochs, total, done):
        if not self.bars:
            yield _Bar(None, None)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[stats]}"))
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task("train", total=total, completed=done, stats="")
            yield _Bar(progress, task)

    def epoch(self, row, epochs):
        if self.quiet:
            return
        self.console.print(
            f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  train err {row['train_top1_err']:5.2f}%  "
            f"val top-1 {row['val_top1_err']:5.2f}%  top-5 {row['val_top5_err']:5.2f}%  lr {row['lr']:.3g}  "
            f"{row['images_per_s']:,.0f} img/s  {row['seconds']:.1f} s", highlight=False)

    def finish(self, result: RunResult):
        if self.quiet:
            return
        if result.stopped in ("SIGINT", "SIGTERM", "SIGHUP", "signal"):
            saved = (f"saved {result.out / 'last.pt'}" if result.saved_step == result.step else
                     f"not saved (the loss is running away); {result.out / 'last.pt'} holds step {result.saved_step}"
                     if result.saved_step is not None else "nothing saved yet (the loss is running away)")
            self.console.print(f"stopped by {result.stopped} at step {result.step}; {saved}; "
                               f"continue with --resume --out {result.out}", highlight=False)
        elif result.stopped == "max_steps":
            self.console.print(f"stopped after {plural(result.step, 'step')} (--max-steps); saved {result.out / 'last.pt'}",
                               highlight=False)
        else:
            best = f"; best val top-1 error {result.best_top1_err:.2f}%" if result.best_top1_err is not None else ""
            test = (f"; test top-1 error {result.test['test_top1_err']:.2f}%, top-5 {result.test['test_top5_err']:.2f}%"
                    f" (last epoch)" if result.test else "")
            self.console.print(f"done: {plural(result.epochs_done, 'epoch')}, {plural(result.step, 'step')}{best}{test}; {result.out}",
                               highlight=False)
