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

SIGINT and SIGTERM finish the current step, save last.pt and return with `stopped` set (the CLI exits 130 or
143). A loss that is not finite stops the run before the step is applied, naming the step; last.pt stays the
last good checkpoint.
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

from cnnzoo.train.checkpoint import (atomic_write_text, load_checkpoint, load_model_state, save_checkpoint)
from cnnzoo.train.distributed import Distributed
from cnnzoo.train.evaluate import predict, topk_correct

__all__ = ["TrainConfig", "train", "TrainingDiverged", "RunResult", "resolve_device", "RESUME_KEEPS"]


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
    quiet: bool = _opt("no progress bar and no per-epoch lines", False)

    def overrides(self) -> dict:
        """The recipe fields this config sets explicitly."""
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "nesterov")
                if getattr(self, k) is not None}


# Settings that may differ when resuming (they do not change what is computed, or they are where to compute it).
RESUME_KEEPS = ("out", "resume", "device", "data_root", "download", "workers", "save_every", "save_minutes",
                "max_steps", "quiet")


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number; the message names the step and the last good checkpoint."""


@dataclass
class RunResult:
    out: Path
    epochs_done: int
    step: int
    history: list[dict]
    stopped: str | None = None  # "SIGINT", "SIGTERM" or "max_steps" when the run ended early
    best_top1_err: float | None = None
    test: dict | None = None  # with a held-out validation split: the test split's errors after the last epoch


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
    """SIGINT/SIGTERM set a flag; the loop saves and returns at the next step boundary."""

    def __init__(self):
        self.signal: str | None = None

    @contextmanager
    def installed(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.signal is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.signal = signal.Signals(signum).name

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def train(config: TrainConfig, console=None) -> RunResult:
    """Train `config.model` on `config.data` with its recipe; see the module docstring."""
    from cnnzoo.registry import create_model, model_card
    from cnnzoo.train.recipes import recipe_for
    from cnnzoo.train.schedule import LRSchedule

    device = resolve_device(config.device)
    ddp = Distributed.from_env(device.type)
    device = ddp.device(device)
    out = Path(config.out) if config.out else Path("runs") / f"{config.model}-{config.data.replace(':', '-').replace('/', '_')}-s{config.seed}"

    # --- everything is validated before the run folder is touched -------------------------------------------
    resumed = None
    if config.resume:
        if not config.out:
            raise ValueError("--resume needs --out DIR, the folder of the run to continue")
        last = out / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"nothing to resume in {out}: no last.pt there")
        resumed = load_checkpoint(last)
        config = _resumed_config(config, resumed["config"], out)
    elif (out / "last.pt").exists():
        raise ValueError(f"{out} holds a run already; pass --resume to continue it, or choose another --out")
    card = model_card(config.model)
    recipe = apply_settings(recipe_for(card.name, config.recipe).override(**config.overrides()), config.settings)
    if recipe.batch_size % ddp.world_size:
        raise ValueError(f"batch size {recipe.batch_size} does not split evenly over {ddp.world_size} processes")
    train_data, test_data, loaders = _data(config, card, recipe, device, ddp)
    train_loader, val_loader, test_loader = loaders
    num_classes = len(train_data.classes)
    model_options = {"num_classes": num_classes, **_model_options(card.name, recipe)}

    torch.manual_seed(config.seed)  # the model's initialisation, then its own random draws
    model = create_model(card.name, **model_options)
    if resumed is not None:
        if resumed["model"] != card.name or resumed["model_options"] != model_options:
            raise ValueError(f"{out / 'last.pt'} holds {resumed['model']} with {resumed['model_options']}, "
                             f"but this run builds {card.name} with {model_options}")
        load_model_state(model, resumed["model_state"], card.name, out / "last.pt")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, recipe)
    steps_per_epoch = len(train_loader)
    schedule = LRSchedule(recipe, steps_per_epoch)
    start_epoch, start_batch, step = 0, 0, 0
    running = {"loss": 0.0, "top1": 0, "top5": 0, "seen": 0}
    history: list[dict] = []
    best = None
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
        start_epoch, start_batch = resumed["position"]
        step, history, best = resumed["step"], list(resumed["history"]), resumed["best"]
        running = dict(resumed["running"])
        torch.set_rng_state(resumed["rng"]["cpu"])
        if device.type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"], device)
    net = model
    if config.compile:
        net = torch.compile(net)
    if ddp.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    main = ddp.is_main
    log = _Console(console, quiet=config.quiet or not main)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if resumed is None:
            atomic_write_text(out / "config.json", json.dumps(_config_record(config, recipe, card, model_options,
                                                                            train_data, ddp), indent=2) + "\n")
    writer = _tensorboard(out) if main else None
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if config.amp and device.type == "cuda" else None
    if scaler is not None and resumed is not None and resumed.get("scaler"):
        scaler.load_state_dict(resumed["scaler"])

    def payload(position) -> dict:
        return {
            "model": card.name, "model_options": model_options, "model_state": model.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "position": list(position),
            "step": step, "running": dict(running), "history": history, "best": best,
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "elapsed": time.perf_counter() - clock,
            "config": asdict(config), "recipe": recipe.to_dict(), "classes": list(train_data.classes),
            "data": {"mean": list(train_data.mean), "std": list(train_data.std),
                     "input_size": list(card.input_size)},
        }

    last_save = [time.perf_counter()]

    def save(position, name: str = "last.pt") -> None:
        if main:
            save_checkpoint(out / name, payload(position))
        last_save[0] = time.perf_counter()

    def save_due() -> bool:
        if config.save_every and step % config.save_every == 0:
            return True
        # by time: each process decides alone; saving involves no collective (only rank 0 writes)
        return bool(config.save_minutes) and time.perf_counter() - last_save[0] >= 60 * config.save_minutes

    stop = _Stop()
    stopped = None
    clock = time.perf_counter() - (resumed.get("elapsed", 0.0) if resumed is not None else 0.0)
    log.start(config, recipe, card, train_data, test_data, device, ddp, out, resumed is not None)
    with stop.installed():
        for epoch in range(start_epoch, recipe.epochs):
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                running = {"loss": 0.0, "top1": 0, "top5": 0, "seen": 0}
            train_loader.set_position(epoch, first)
            net.train()
            began, images = time.perf_counter(), 0
            with log.progress(epoch, recipe.epochs, steps_per_epoch, first) as bar:
                for batch, (x, y) in enumerate(train_loader, start=first):
                    lr = schedule.lr(epoch, batch)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    with torch.autocast(device.type, dtype=amp_dtype) if config.amp else nullcontext():
                        output = net(x)
                        loss = _loss(output, y, recipe)
                    value = loss.item()
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"the loss became {value} at epoch {epoch + 1}, batch {batch + 1} (step {step + 1}) "
                            f"with learning rate {lr:g}; the step was not applied. The last good checkpoint is "
                            f"{out / 'last.pt'}" + ("" if (out / "last.pt").exists() else " (none written yet)")
                            + "; try a lower --lr")
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()
                    step += 1
                    logits = output[0] if isinstance(output, tuple) else output
                    top1, top5 = topk_correct(logits.detach(), y)
                    running["loss"] += value * y.shape[0]
                    running["top1"] += top1
                    running["top5"] += top5
                    running["seen"] += y.shape[0]
                    images += y.shape[0] * ddp.world_size
                    bar.update(loss=value, acc=top1 / y.shape[0], lr=lr,
                               speed=images / max(time.perf_counter() - began, 1e-9))
                    position = (epoch, batch + 1) if batch + 1 < steps_per_epoch else (epoch + 1, 0)
                    if ddp.any(stop.signal is not None, device):
                        stopped = stop.signal or "signal"
                    elif config.max_steps is not None and step >= config.max_steps:
                        stopped = "max_steps"
                    if stopped:
                        if position[1] != 0:  # mid-epoch; an epoch end is saved below with its row
                            save(position)
                            break
                    elif position[1] != 0 and save_due():
                        save(position)
            if stopped and position[1] != 0:
                break
            seconds = time.perf_counter() - began
            totals = ddp.sum([running["loss"], running["top1"], running["top5"], running["seen"]], device)
            probs, labels = predict(net, val_loader, amp=config.amp)
            val = _gather_errors(probs, labels, ddp, device)
            row = {
                "epoch": epoch + 1, "step": step, "lr": schedule.lr(epoch, steps_per_epoch - 1),
                "train_loss": totals[0] / totals[3], "train_top1_err": 100 * (1 - totals[1] / totals[3]),
                "val_top1_err": 100 * val[0], "val_top5_err": 100 * val[1],
                "seconds": round(seconds, 3), "images_per_s": round(images / max(seconds, 1e-9), 1),
                "elapsed": round(time.perf_counter() - clock, 3),
            }
            schedule.end_epoch(row)
            history.append(row)
            improved = best is None or row["val_top1_err"] < best
            if improved:
                best = row["val_top1_err"]
            if main:
                _write_metrics(out / "metrics.csv", history)
                if improved:
                    save((epoch + 1, 0), "best.pt")
                save((epoch + 1, 0))
                if writer is not None:
                    for key, value in row.items():
                        if key not in ("epoch", "step"):
                            writer.add_scalar(key, value, epoch + 1)
                    writer.flush()
            log.epoch(row, recipe.epochs)
            if stopped:
                break
    test = None
    if config.val_split and not stopped and history:  # the held-out images chose best.pt; the test split judges
        probs, labels = predict(net, test_loader, amp=config.amp)
        top1, top5 = _gather_errors(probs, labels, ddp, device)
        test = {"epoch": len(history), "test_top1_err": 100 * top1, "test_top5_err": 100 * top5}
    if main:
        _plot_curves(out / "curves.png", history)
        if test is not None:
            atomic_write_text(out / "test.json", json.dumps(test, indent=2) + "\n")
    if writer is not None:
        writer.close()
    result = RunResult(out=out, epochs_done=len(history), step=step, history=history, stopped=stopped,
                       best_top1_err=best, test=test)
    log.finish(result)
    ddp.barrier()
    ddp.close()
    return result


# --- pieces ---------------------------------------------------------------------------------------------------
def _resumed_config(given: TrainConfig, stored: dict, out: Path) -> TrainConfig:
    """The stored run's config, with the settings that may change on a resume taken from the command line."""
    defaults = TrainConfig(model=given.model, data=given.data)
    differs = [f.name for f in fields(TrainConfig) if f.name not in RESUME_KEEPS
               and getattr(given, f.name) != getattr(defaults, f.name) and getattr(given, f.name) != stored.get(f.name)]
    if given.model != stored["model"] or given.data != stored["data"]:
        differs = ["model" if given.model != stored["model"] else "data", *differs]
    if differs:
        raise ValueError(f"--resume continues the run in {out} as it was configured (see its config.json); "
                         f"these settings differ: {', '.join(dict.fromkeys(differs))}")
    config = TrainConfig(**{k: v for k, v in stored.items() if k in {f.name for f in fields(TrainConfig)}})
    for key in RESUME_KEEPS:
        setattr(config, key, getattr(given, key))
    return config


def apply_settings(recipe, settings):
    """The recipe with KEY=VALUE changes: numbers, true/false, none, comma-separated lists for the list fields,
    `schedule.FIELD=...` for the schedule's fields. The recipe validates names and values."""
    changes: dict = {}
    schedule: dict = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, e.g. dropout=0.3 or schedule.kind=cosine; got {item!r}")
        target, name = (schedule, key[len("schedule."):]) if key.startswith("schedule.") else (changes, key)
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


def _model_options(name: str, recipe) -> dict:
    """The recipe's settings that are options of the model (dropout, drop-path, survival probability)."""
    from cnnzoo.registry import model_options

    accepted = model_options(name)
    return {k: v for k, v in recipe.model_options().items() if k in accepted}


def _data(config, card, recipe, device, ddp):
    from cnnzoo.data import Augment, fit, fit_mode, hold_out, load_dataset, make_loader

    root = config.data_root
    train_data = load_dataset(config.data, "train", root=root, download=config.download)
    test_data = load_dataset(config.data, "test", root=root, download=config.download)
    if len(train_data.classes) < 2:
        raise ValueError(f"{config.data} has {len(train_data.classes)} class; training needs at least 2")
    val_data = None
    if config.val_split:
        train_data, val_data = hold_out(train_data, config.val_split)
    mode = fit_mode(train_data, card.input_size)
    train_data = fit(train_data, card.input_size, mode=mode)
    test_data = fit(test_data, card.input_size, mode=mode)
    if recipe.batch_size > len(train_data):
        raise ValueError(f"batch size {recipe.batch_size} is larger than {config.data}'s training set "
                         f"({len(train_data):,} images); pass a smaller --batch-size")
    augment = Augment.from_names(recipe.augmentation, size=card.input_size[1:]) if recipe.augmentation else None
    per_process = recipe.batch_size // ddp.world_size
    common = dict(device=device, channels_last=config.channels_last, rank=ddp.rank, world_size=ddp.world_size,
                  num_workers=config.workers, seed=config.seed)
    train_loader = make_loader(train_data, per_process, train=True, augment=augment, **common)
    test_loader = make_loader(test_data, max(per_process, 256), train=False, augment=None, drop_last=False, **common)
    val_loader = test_loader if val_data is None else make_loader(
        fit(val_data, card.input_size, mode=mode), max(per_process, 256), train=False, augment=None, drop_last=False,
        **common)
    return train_data, test_data, (train_loader, val_loader, test_loader)


def _optimizer(model: nn.Module, recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
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


def _config_record(config, recipe, card, model_options, train_data, ddp) -> dict:
    import platform

    import cnnzoo

    return {
        "config": asdict(config), "recipe": recipe.to_dict(), "model_options": model_options,
        "paper": card.paper.cite(), "classes": list(train_data.classes),
        "command": " ".join(sys.argv), "world_size": ddp.world_size,
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

    def start(self, config, recipe, card, train_data, test_data, device, ddp, out, resumed):
        if self.quiet:
            return
        what = "resuming" if resumed else "training"
        procs = f", {ddp.world_size} processes" if ddp.enabled else ""
        self.console.print(
            f"{what} {card.name} on {config.data} ({len(train_data):,} train / {len(test_data):,} "
            f"test images, {len(train_data.classes)} classes) with the {recipe.name} recipe: {recipe.epochs} "
            f"epochs, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr:g}; {device}{procs}; run folder {out}",
            highlight=False)

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
        if result.stopped in ("SIGINT", "SIGTERM", "signal"):
            self.console.print(f"stopped by {result.stopped} at step {result.step}; saved {result.out / 'last.pt'}; "
                               f"continue with --resume --out {result.out}", highlight=False)
        elif result.stopped == "max_steps":
            self.console.print(f"stopped after {result.step} steps (--max-steps); saved {result.out / 'last.pt'}",
                               highlight=False)
        else:
            best = f"; best val top-1 error {result.best_top1_err:.2f}%" if result.best_top1_err is not None else ""
            test = (f"; test top-1 error {result.test['test_top1_err']:.2f}%, top-5 {result.test['test_top5_err']:.2f}%"
                    f" (last epoch)" if result.test else "")
            self.console.print(f"done: {result.epochs_done} epochs, {result.step} steps{best}{test}; {result.out}",
                               highlight=False)
