"""Speed and memory on this machine, measured: `plan` the configurations, `run_bench` times them one by one.

A configuration is one model at one batch size on one execution path:
- `eager`: the model in eval mode under `torch.inference_mode`, NCHW (contiguous), float32 (with
  `dtype="bfloat16"`: the model and input converted to bfloat16);
- `fast`: `cnnzoo.deploy.optimize(model)` (batch norm folded, channels-last; `dtype="bfloat16"` passes
  `dtype=torch.bfloat16`, which the CPU may decline: the row's dtype and notes say what ran);
- `compile`: `optimize(model, compile=True)` (its first calls compile, inside the warm-up);
- `onnxruntime`: `cnnzoo.deploy.onnx.ort_runner` (float32, CPU).
In `mode="train"` a repeat is a training step (forward, cross-entropy on random labels, backward, SGD step) on
the eager path; other paths give a row that says so.

Timing: warm-up calls (at least one; two when they are quick, and two for `compile`), then timed repeats until
both `min_time` seconds and `min_repeats` calls are reached; a CUDA device is synchronised after every call.
The row gives the median latency, its 10th and 90th percentiles and images/s = batch / median.

Isolation and memory: on the CPU every configuration runs in a process of its own, forked from a server
process that has imported torch and never started a thread pool (a fork of a process that has used OpenMP hangs
at its first parallel region, so the caller itself is never forked). The server builds each model once, on one
thread (where no parallel region starts), and every configuration of that model is forked from it with the
weights already in place: building, not timing, was most of a short configuration's time. The child builds the
path (the fast path's copy, the ONNX Runtime session), gives freed memory back (malloc_trim) and resets its peak
RSS (`/proc/self/clear_refs`), then runs; `peak_memory_bytes` is its highest RSS (VmHWM) less what its RSS would
have been before the model was built (its starting RSS less the anonymous memory the build added to the server):
weights, what the path keeps, input, activations, workspaces, and a training step's gradients and momentum. A
child that dies (out of memory, a crash) gives a row with the reason. On CUDA the configurations run in this
process, one after the other (a fresh CUDA context each would cost more than the run), and the peak is
`torch.cuda.max_memory_allocated` less what was allocated before the model was built.

Throughput against the machine: `flops_per_image` comes from the profiler (`cnnzoo.profile`, the model's one
trace: the forward's FLOPs in inference, `train_flops` in training, the same for every path, so GFLOP/s compare
paths doing the same work); `gflops` = flops_per_image x images/s; `ceiling_fraction` divides it by
`matmul_ceiling`, the best GFLOP/s of a large square matrix product measured in the same run for the same
dtype, device and threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import os
import pickle
import platform
import signal
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

__all__ = ["PATHS", "MODES", "DTYPES", "BenchConfig", "BenchRow", "plan", "run_bench", "environment",
           "matmul_ceiling", "ceilings", "resolve_models", "torchvision_ratios", "default_threads", "TRAIN_EAGER_ONLY"]

PATHS = ("eager", "fast", "compile", "onnxruntime")
MODES = ("infer", "train")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TORCHVISION = "torchvision:"  # the source prefix of a torchvision model timed beside its twin
TRAIN_EAGER_ONLY = "train mode runs the eager path only"
MEMORY_FORMATS = {"eager": "contiguous", "fast": "channels_last", "compile": "channels_last",
                  "onnxruntime": "onnxruntime's own"}


@dataclass(frozen=True)
class BenchConfig:
    """One measurement: a model (registered name, checkpoint file or `torchvision:<builder>`) at one batch size,
    mode, path, dtype, thread count and device. `label` is what the tables call it."""

    source: str
    label: str
    input_size: tuple[int, int, int]
    num_classes: int
    batch: int
    mode: str = "infer"
    path: str = "eager"
    dtype: str = "float32"
    threads: int = 1
    device: str = "cpu"
    flops_per_image: int | None = None
    twin_of: str | None = None  # a torchvision model: the label of the cnnzoo model it is timed beside
    top1_err: float | None = None  # as the model's card reports it (for the accuracy figure)
    dataset: str | None = None


@dataclass(frozen=True)
class BenchRow:
    """What one configuration measured; `status` is "ok" or why it could not run."""

    model: str
    batch: int
    mode: str
    path: str
    dtype: str  # what ran (the fast path keeps float32 where the CPU has no native bfloat16)
    memory_format: str
    threads: int
    device: str
    status: str
    images_per_s: float | None = None
    latency_ms: float | None = None  # median of the timed repeats
    latency_p10_ms: float | None = None
    latency_p90_ms: float | None = None
    repeats: int = 0
    peak_memory_bytes: int | None = None  # peak less the memory before the model was built
    flops_per_image: int | None = None
    gflops: float | None = None  # achieved: flops_per_image x images/s / 1e9
    ceiling_fraction: float | None = None  # gflops / the matmul ceiling of this dtype, device and threads
    vs_torchvision: float | None = None  # images/s of this model / its torchvision twin's (filled by pairing)
    twin_of: str | None = None
    top1_err: float | None = None
    dataset: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d


# --- the plan -----------------------------------------------------------------------------------------------------
def resolve_models(specs: Iterable[str]) -> list[str]:
    """Registered names, patterns (as `cnnzoo list` takes them) and checkpoint files, expanded, in order, once each."""
    from cnnzoo.registry import list_models, model_card
    from cnnzoo.train.checkpoint import is_checkpoint_path

    out: list[str] = []
    for spec in specs:
        if is_checkpoint_path(spec):
            found = [spec]
        elif any(c in spec for c in "*?["):
            found = list_models(spec)
            if not found:
                raise ValueError(f"no model matches pattern {spec!r} (`cnnzoo list` shows every name)")
        else:
            found = [model_card(spec).name]  # an unknown name raises with the nearest names
        out.extend(f for f in found if f not in out)
    if not out:
        raise ValueError("no model given: name one or more models, patterns or checkpoint files")
    return out


def plan(models: Iterable[str], *, batches: Iterable[int] = (1,), mode: str = "infer",
         paths: Iterable[str] = ("eager",), dtype: str = "float32", threads: int | None = None,
         device: str = "cpu", vs_torchvision: bool = False,
         input_size: tuple[int, int, int] | None = None) -> list[BenchConfig]:
    """Every configuration, model by model (then batch, then path); with `vs_torchvision`, a model that has a
    torchvision twin is followed at each batch and path by that twin (`torchvision:<builder>`). `input_size`
    (C, H, W) replaces each model's native input (a net that refuses it gives a row saying why)."""
    batches, paths = list(batches), list(paths)
    _validate(batches, mode, paths, dtype, threads, device)
    if input_size is not None and (len(input_size) != 3 or any(isinstance(v, bool) or not isinstance(v, int)
                                                               or v < 1 for v in input_size)):
        raise ValueError(f"input_size must be (C, H, W) of positive integers, got {input_size!r}")
    threads = threads or default_threads()
    configs = []
    for source in resolve_models(models):
        base, twin = _describe(source, mode, input_size)
        for batch in batches:
            for path in paths:
                config = BenchConfig(**base, batch=batch, mode=mode, path=path, dtype=dtype, threads=threads,
                                     device=device)
                configs.append(config)
                if vs_torchvision and twin is not None:
                    configs.append(dataclasses.replace(config, source=TORCHVISION + twin, label=f"torchvision.{twin}",
                                                       twin_of=config.label, top1_err=None))
    return configs


def _validate(batches, mode, paths, dtype, threads, device) -> None:
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ValueError(f"batches must be positive integers, got {batches!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    unknown = [p for p in paths if p not in PATHS]
    if not paths or unknown:
        raise ValueError(f"unknown path {unknown[0] if unknown else ''!r}; expected some of {', '.join(PATHS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device here")


def default_threads() -> int:
    """The cores free now: those this process may run on (its affinity mask) less the other runnable tasks. A
    thread on a core that other work keeps busy makes every parallel region wait for it (a net of small layers
    slows down many times over), so the default leaves busy cores out; `threads=` pins the count."""
    return free_cores()[0]


def free_cores() -> tuple[int, str]:
    """(cores free now, how that was found), from the affinity mask and /proc/loadavg's running tasks."""
    from cnnzoo.train.threads import available_cores

    cores = available_cores()
    try:
        with open("/proc/loadavg") as f:
            others = max(0, int(f.read().split()[3].split("/")[0]) - 1)
    except (OSError, ValueError, IndexError):
        return cores, f"the {cores} cores this process may use"
    free = max(1, cores - others)
    return free, f"the free cores when the run began: {cores} usable, {min(others, cores)} busy with other work"


def _describe(source: str, mode: str, input_size) -> tuple[dict, str | None]:
    """A source's fields for its configurations (input size, classes, FLOPs per image from the profiler) and its
    torchvision twin's builder, if it has one."""
    from cnnzoo.analysis.counting import meta_model
    from cnnzoo.analysis.profile import profile
    from cnnzoo.registry import model_card
    from cnnzoo.train.checkpoint import is_checkpoint_path, load_checkpoint

    if is_checkpoint_path(source):
        payload = load_checkpoint(source)
        name, options = payload["model"], dict(payload["model_options"])
        label = f"{name} ({os.path.basename(source)})"
    else:
        name, options, label = source, {}, source
    card = model_card(name)
    c, h, w = card.input_size
    size = tuple(input_size) if input_size is not None else (options.get("in_chans", c), h, w)
    net = meta_model(name, **options)
    try:
        traced = profile(net, input_size=size, batch_size=1, mode="eval" if mode == "infer" else "train")
        flops = traced.flops if mode == "infer" else traced.train_flops
    except Exception:  # a net the profiler cannot follow is still timed; its GFLOP/s stay unknown
        flops = None
    base = dict(source=source, label=label, input_size=size,
                num_classes=options.get("num_classes", card.num_classes), flops_per_image=flops,
                top1_err=card.top1_err if source == name else None, dataset=card.dataset)  # a checkpoint's own
    # accuracy is not its paper's
    twin = card.torchvision if not options else None  # options change the architecture: no twin then
    return base, twin


# --- running ------------------------------------------------------------------------------------------------------
def run_bench(configs: Iterable[BenchConfig], *, min_time: float = 0.25, min_repeats: int = 3,
              isolate: bool | None = None) -> Iterator[BenchRow]:
    """Measure each configuration, yielding its row as soon as it is done (rows of failures included).

    Args:
        min_time: seconds of timed repeats, at least, per configuration.
        min_repeats: timed repeats, at least.
        isolate: run each configuration in a process of its own (default: on the CPU, where fork exists).
    """
    configs = list(configs)
    if isinstance(min_time, bool) or not isinstance(min_time, (int, float)) or not min_time >= 0:
        raise ValueError(f"min_time must be a number of seconds >= 0, got {min_time!r}")
    if isinstance(min_repeats, bool) or not isinstance(min_repeats, int) or min_repeats < 1:
        raise ValueError(f"min_repeats must be a positive integer, got {min_repeats!r}")
    if isolate is None:
        isolate = _can_fork() and all(c.device == "cpu" for c in configs)
    for config in configs:
        reason = _refusal(config)
        if reason is not None:
            yield _failed(config, reason)
            continue
        if (config.dtype, config.device, config.threads) not in _CEILINGS:
            try:  # measured here, in the same run, before the first configuration of its dtype
                matmul_ceiling(config.dtype, config.device, config.threads, seconds=min(0.5, max(0.1, min_time)),
                               isolate=isolate)
            except RuntimeError:
                _CEILINGS[(config.dtype, config.device, config.threads)] = None
        task = (config, float(min_time), min_repeats)
        result = _in_child(_measure, task) if isolate else _in_process(task)
        yield _row(config, result)


def _refusal(config: BenchConfig) -> str | None:
    """Why a configuration cannot run at all, known before running it; None when it can."""
    if config.mode == "train" and config.path != "eager":
        return TRAIN_EAGER_ONLY
    if config.path == "onnxruntime" and config.device != "cpu":
        return "the onnxruntime path runs on the CPU only (--device cpu)"
    if config.path == "onnxruntime" and config.dtype != "float32":
        return "the onnxruntime path runs float32 only"
    return None


def _failed(config: BenchConfig, reason: str) -> BenchRow:
    return _row(config, {"status": reason})


def _row(config: BenchConfig, result: dict) -> BenchRow:
    ceiling = _CEILINGS.get((config.dtype, config.device, config.threads))
    fields = dict(model=config.label, batch=config.batch, mode=config.mode, path=config.path,
                  dtype=result.get("dtype", config.dtype), threads=config.threads, device=config.device,
                  memory_format=result.get("memory_format", MEMORY_FORMATS[config.path]),
                  flops_per_image=config.flops_per_image, twin_of=config.twin_of, top1_err=config.top1_err,
                  dataset=config.dataset, status=result["status"], notes=tuple(result.get("notes", ())))
    times = result.get("times")
    if result["status"] == "ok" and times:
        median = statistics.median(times)
        p10, p90 = (statistics.quantiles(times, n=10, method="inclusive")[i] for i in (0, 8)) \
            if len(times) > 1 else (median, median)
        fields.update(images_per_s=config.batch / median, latency_ms=1e3 * median, latency_p10_ms=1e3 * p10,
                      latency_p90_ms=1e3 * p90, repeats=len(times), peak_memory_bytes=result.get("peak"))
        if fields["flops_per_image"] is not None:
            fields["gflops"] = fields["flops_per_image"] * fields["images_per_s"] / 1e9
            if ceiling:
                fields["ceiling_fraction"] = fields["gflops"] / ceiling
    return BenchRow(**fields)


# --- isolation ----------------------------------------------------------------------------------------------------
def _can_fork() -> bool:
    return hasattr(os, "fork") and os.path.exists("/proc/self/status")


class _Server:
    """A Python process that has imported torch and this module and computes nothing: it forks a fresh child for
    every task, so no child inherits a thread pool from a process that used it (a fork of such a process hangs
    at its first parallel region). Messages are pickles, each after its length, over the server's stdin and
    stdout; the server answers a task with the child's pid, then with the child's result or how it died."""

    def __init__(self):
        import subprocess
        import sys

        import cnnzoo

        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.abspath(cnnzoo.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen([sys.executable, "-c", "from cnnzoo.deploy.bench import _serve; _serve()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def call(self, target, task) -> dict:
        pid, done = None, False
        try:
            _send(self.process.stdin, (target, task))
            _, pid = _receive(self.process.stdout)
            _, result = _receive(self.process.stdout)
            done = True
            return result
        finally:
            if not done:  # interrupted (or the server failed): the child goes, and the server with its half-read
                if pid is not None:  # conversation; the next task starts a new one
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.close()

    def close(self) -> None:
        global _SERVER
        if _SERVER is self:
            _SERVER = None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self.process.kill()
        self.process.wait()


_SERVER: _Server | None = None


def _in_child(target, task) -> dict:
    """`target(task)` in a fresh process of its own; its result, or a status saying how that process failed."""
    global _SERVER
    if _SERVER is None or _SERVER.process.poll() is not None:
        _SERVER = _Server()
    try:
        return _SERVER.call(target, task)
    except (EOFError, OSError) as err:
        return {"status": f"the measuring server process failed ({type(err).__name__}: {err})"}


def _send(stream, message) -> None:
    data = pickle.dumps(message)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the measuring server process ended")
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the measuring server process ended mid-message")
    return pickle.loads(data)


def _serve() -> None:
    """The server's loop (see `_Server`): until its stdin closes, fork a child per task and report on it."""
    import sys

    for s in (signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C reaches the whole group; the parent decides
        signal.signal(s, signal.SIG_IGN)
    channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but messages on the channel
    # the objects made so far (torch's and cnnzoo's modules, classes, functions) are shared with every child; a
    # child's garbage collections would otherwise walk them all, writing to their pages (a copy of each page per
    # child) and taking 0.15-0.2 s each time
    gc.freeze()
    while True:
        try:
            target, task = _receive(channel_in)
        except EOFError:
            return
        if target is _measure:
            _hold(task[0])
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(target, task, write_end)  # never returns
        os.close(write_end)
        _send(channel_out, ("pid", pid))
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        result = pickle.loads(data) if data else {"status": _death(status)}
        _send(channel_out, ("result", result))


@dataclass
class _Held:
    """The model the server built for the configurations it is measuring: its source, the model (None when the
    build failed there: each child then builds it and reports why it fails) and the anonymous memory the build
    added to the server (its weights and objects: a child starts with these pages mapped, as if it had built it)."""
    source: str
    model: torch.nn.Module | None
    size: int | None


_HELD: _Held | None = None


def _hold(config: BenchConfig) -> None:
    """In the server: have `config`'s model built, once for all its configurations (CPU ones; a model built here
    on one thread starts no thread pool, so the children forked from here stay sound)."""
    global _HELD
    if config.device != "cpu":
        return
    if _HELD is not None and _HELD.source == config.source:
        _settle_input_check(_HELD.model, config)
        return
    gc.unfreeze()  # the last model goes with its objects
    _HELD = None
    gc.collect()
    _trim()
    before, size, model = None, None, None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _import_builders(config.source)  # torchvision's code is not its model's memory
        with contextlib.suppress(OSError):
            before = _status_bytes("RssAnon")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _build(config.source)
    except Exception:  # each child builds it again and says why it fails
        model = None
    finally:
        torch.set_num_threads(threads)
    if model is not None and before is not None:
        with contextlib.suppress(OSError):
            size = max(0, _status_bytes("RssAnon") - before)
    _HELD = _Held(config.source, model, size)
    _settle_input_check(model, config)
    gc.freeze()


def _settle_input_check(model: torch.nn.Module | None, config: BenchConfig) -> None:
    """In the server: let the model's input check judge the configuration's input size now. At a size other than
    the native one its first call runs the model on the meta device, which imports torch's shape machinery (some
    170 MB of Python code, once per process); done in a child, that would count as the model's memory. The
    check keeps its answer, which every child inherits; a size that does not fit is left for the child to report."""
    from cnnzoo.checks import input_check

    check = input_check(model) if model is not None else None
    if check is None:
        return
    was_training, threads = model.training, torch.get_num_threads()
    torch.set_num_threads(1)  # shapes only, but no thread pool may start here whatever the meta kernels do
    try:
        model.train(config.mode == "train")  # the check's answer is per mode (batch norm's batch rule)
        with contextlib.suppress(Exception):
            check(model, (torch.empty(2, *config.input_size, device="meta"),))
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)


def _take_held(source: str) -> tuple[torch.nn.Module | None, int | None]:
    """In a child: the server's model of `source` and its memory, if it built one; this process's reference is
    then the model's only one, so a path that copies the model frees it."""
    global _HELD
    held, _HELD = _HELD, None
    if held is None or held.source != source or held.model is None:
        return None, None
    return held.model, held.size


def _child(target, task, write_end: int) -> None:
    code = 0
    try:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        _die_with_parent()
        quiet = os.open(os.devnull, os.O_WRONLY)  # torch's C++ warnings would land in the parent's table
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        try:
            result = target(task)
        except MemoryError:
            result = {"status": "out of memory"}
        except Exception as err:  # any failure of the configuration is its row's reason
            result = {"status": _reason(err)}
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(pickle.dumps(result))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the server) ends."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        hint = " (out of memory? the kernel's OOM killer sends it)" if name == "SIGKILL" else ""
        return f"the process measuring it died of {name}{hint}"
    return f"the process measuring it exited with status {os.waitstatus_to_exitcode(status)} before reporting"


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(err, torch.OutOfMemoryError) or "out of memory" in first.lower():
        return f"out of memory: {first}"
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _in_process(task) -> dict:
    try:
        return _measure(task)
    except MemoryError:
        return {"status": "out of memory"}
    except Exception as err:
        return {"status": _reason(err)}
    finally:
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


# --- one measurement (in the child) -------------------------------------------------------------------------------
def _measure(task) -> dict:
    config, min_time, min_repeats = task
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    _import_libraries(config)
    model, size = _take_held(config.source)  # built by the server (this process is its fork), or None
    built = "here" if model is None else "server"
    memory = _Memory(device, built=size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what optimize declines it also says in its notes, which the row keeps
        if model is not None:
            model = model.to(device)
        else:
            model = _build(config.source).to(device)
        call, ran = _prepare(model, config, device)
        del model  # the path holds what it needs
        memory.ready()
        times = _time(call, device, min_time, min_repeats, warm=2 if config.path == "compile" else 1)
    return {"status": "ok", "times": times, "peak": memory.peak(), "built": built, **ran}


def _import_libraries(config: BenchConfig) -> None:
    """Import what the configuration's path needs before the memory baseline: a library's code is not the
    model's memory (the exporter's and compiler's are not even part of a deployment)."""
    import importlib

    names = {"onnxruntime": ["onnxruntime", "onnx", "onnxscript", "torch.onnx", "cnnzoo.deploy.onnx"],
             "compile": ["torch._dynamo", "torch._inductor.compile_fx"]}.get(config.path, [])
    _import_builders(config.source)
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _import_builders(source: str) -> None:
    """Import the library that builds `source` (torchvision for its own models), before the memory baseline."""
    if source.startswith(TORCHVISION):
        with contextlib.suppress(ImportError):
            import torchvision  # noqa: F401


def _build(source: str) -> torch.nn.Module:
    """The model, from the same seed every time: an untrained net's values can change its speed (a very deep one
    overflows in eval mode; subnormal or non-finite arithmetic is slow on a CPU), so every configuration of a model,
    built here or in the server, times the same weights."""
    from cnnzoo.registry import create_model
    from cnnzoo.train.checkpoint import is_checkpoint_path, model_from_checkpoint

    torch.manual_seed(0)
    if source.startswith(TORCHVISION):
        import torchvision

        builder = getattr(torchvision.models, source[len(TORCHVISION):])
        extra = {"init_weights": True} if "init_weights" in builder.__code__.co_varnames else {}
        return builder(weights=None, **extra)
    if is_checkpoint_path(source):
        return model_from_checkpoint(source)
    return create_model(source)


def _prepare(model, config: BenchConfig, device):
    """The call one repeat makes, and what actually ran (dtype, memory format, notes)."""
    x = torch.randn(config.batch, *config.input_size, device=device)
    ran = {"dtype": config.dtype, "memory_format": MEMORY_FORMATS[config.path]}
    low = DTYPES[config.dtype] if config.dtype != "float32" else None
    if config.mode == "train":
        return _train_step(model, x, config, low), ran
    if config.path == "eager":
        model.eval()
        if low is not None:
            model, x = model.to(low), x.to(low)

        def call():
            with torch.inference_mode():
                return model(x)
        return call, ran
    if config.path in ("fast", "compile"):
        from cnnzoo.deploy.optimize import optimize

        fast = optimize(model.eval(), dtype=low, compile=config.path == "compile")
        del model
        ran.update(dtype=str(fast.dtype).removeprefix("torch."), notes=fast.notes)
        return (lambda: fast(x)), ran
    from cnnzoo.deploy.onnx import ort_runner

    run = ort_runner(model.eval(), x, threads=config.threads)
    del model
    ran["notes"] = ("the peak includes what the ONNX export leaves in the process; a process that only loads "
                    "the .onnx file holds less",)
    return (lambda: run(x)), ran


def _train_step(model, x, config: BenchConfig, low):
    from cnnzoo.models.googlenet import googlenet_loss

    model.train()
    y = torch.randint(config.num_classes, (config.batch,), device=x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = (lambda: torch.autocast(x.device.type, dtype=low)) if low is not None else contextlib.nullcontext

    def call():
        with autocast():
            loss = googlenet_loss(model(x), y)  # plain cross-entropy, plus auxiliary heads where a net has them
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return call


def _time(call, device, min_time: float, min_repeats: int, warm: int) -> list[float]:
    """Warm-up (at least `warm` calls; two when a call is quick), then timed calls until both `min_time` and
    `min_repeats` are reached. Seconds per call."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    began, done = time.perf_counter(), 0
    while done < warm or (done < 2 and time.perf_counter() - began < min_time / 4):
        call()
        sync()
        done += 1
    times: list[float] = []
    while len(times) < min_repeats or sum(times) < min_time:
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return times


class _Memory:
    """Peak memory above what the process held before the model was built: RSS on the CPU (the peak reset once
    the model and its path are ready, so a path's one-off preparation, an ONNX export, is not counted, while
    everything it keeps is), the caching allocator's peak on CUDA."""

    def __init__(self, device, *, built: int | None = None):
        """`built`: the memory of a model that this process started with (the server built it), which the peak
        counts as it counts a model built here."""
        self.device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            return
        try:
            self.base = _status_bytes("VmRSS") - (built or 0)
        except OSError:
            self.base = None

    def ready(self) -> None:
        """The model and its path are built: freed preparation memory goes back to the system, the peak restarts."""
        if self.device.type == "cuda" or self.base is None:
            return
        gc.collect()
        _trim()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the peak RSS (VmHWM) starts again from the current RSS
        except OSError:
            self.base = None

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.base is None:
            return None
        return max(0, _status_bytes("VmHWM") - self.base)


def _trim() -> None:
    """Give freed memory back to the system (glibc keeps it in the process otherwise)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


# --- the machine --------------------------------------------------------------------------------------------------
_CEILINGS: dict[tuple[str, str, int], float | None] = {}


def ceilings() -> dict[tuple[str, str, int], float | None]:
    """The matmul ceilings measured so far in this process: (dtype, device, threads) -> GFLOP/s (None: failed)."""
    return dict(_CEILINGS)


def matmul_ceiling(dtype: str = "float32", device: str = "cpu", threads: int | None = None, *,
                   seconds: float = 0.5, isolate: bool | None = None) -> float:
    """GFLOP/s of a large square matrix product (2 n^3 FLOPs) in `dtype` on `device` with `threads`: the best of
    repeats for about `seconds`, n doubled from 256 until one product takes 20 ms (at most 4096 on a CPU, 16384
    on CUDA). Measured once per process and reused (the rows' `ceiling_fraction`)."""
    threads = threads or default_threads()
    key = (dtype, device, threads)
    if key not in _CEILINGS:
        if isolate is None:
            isolate = _can_fork() and device == "cpu"
        task = (dtype, device, threads, seconds)
        result = _in_child(_matmul, task) if isolate else _matmul(task)
        if result.get("status") != "ok":
            raise RuntimeError(f"the matmul ceiling could not be measured: {result['status']}")
        _CEILINGS[key] = result["gflops"]
    return _CEILINGS[key]


def _matmul(task) -> dict:
    dtype, device, threads, seconds = task
    torch.set_num_threads(threads)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    largest = 16384 if dev.type == "cuda" else 4096
    n = 256
    while True:
        a = torch.randn(n, n, device=dev).to(DTYPES[dtype])
        b = torch.randn(n, n, device=dev).to(DTYPES[dtype])
        a @ b
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if time.perf_counter() - t0 >= 0.02 or n >= largest:
            break
        n *= 2
    best, began = float("inf"), time.perf_counter()
    while time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return {"status": "ok", "gflops": 2 * n**3 / best / 1e9, "n": n}


def environment(*, threads: int | None = None, device: str = "cpu", dtype: str = "float32",
                paths: Iterable[str] = ("eager",)) -> dict:
    """What the figures were measured on: CPU model and ISA, cores, threads, device, library versions, dtype and
    memory format per path, and how memory is measured."""
    from cnnzoo.train.threads import available_cores

    flags = _cpu_flags()
    isa = [label for label, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512-BF16", "avx512_bf16"),
                                     ("AMX", "amx_tile")) if flag in flags]
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "isa": isa,
        "cores": os.cpu_count(),
        "usable_cores": available_cores(),
        "threads": threads or default_threads(),
        "threads_chosen_by": "--threads" if threads else free_cores()[1],
        "device": device if gpu is None else f"cuda ({gpu})",
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "onnxruntime": _version("onnxruntime"),
        "python": platform.python_version(),
        "dtype": dtype,
        "memory_format": {p: MEMORY_FORMATS[p] for p in paths},
        "memory_measure": ("torch.cuda.max_memory_allocated, less what was allocated before the model was built"
                           if device == "cuda" else
                           "peak RSS (VmHWM) of a process of its own, less its RSS before the model was built"),
    }


def _cpu_flags() -> frozenset[str]:
    from cnnzoo.deploy.optimize import cpu_flags

    return cpu_flags()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- after measuring ----------------------------------------------------------------------------------------------
def torchvision_ratios(rows: Iterable[BenchRow]) -> list[BenchRow]:
    """The rows, each cnnzoo model's `vs_torchvision` set to its images/s over its torchvision twin's at the same
    batch, mode, path and dtype (where both ran)."""
    rows = list(rows)
    twins = {(r.twin_of, r.batch, r.mode, r.path): r for r in rows if r.twin_of is not None and r.ok}
    out = []
    for r in rows:
        twin = twins.get((r.model, r.batch, r.mode, r.path))
        if twin is not None and r.ok and r.twin_of is None:
            r = dataclasses.replace(r, vs_torchvision=r.images_per_s / twin.images_per_s)
        out.append(r)
    return out
