"""ONNX export, checked: the file is written only once `onnx.checker` accepts it and ONNX Runtime's logits agree
with PyTorch's (eval mode) on a fixed seeded batch; and `ort_runner`, an ONNX Runtime session as a function, the
`onnxruntime` path of `cnnzoo bench`.

Two exporters: torch's maintained one, built on `torch.export` ("dynamo"), is tried first; a model it cannot
translate falls back to the deprecated TorchScript-based one ("torchscript"), and the report says which wrote the
file and why. Both print nothing: their progress lines, deprecation notices and tracer warnings are silenced here.

Needs the `export` extra (onnx, onnxruntime, onnxscript): `pip install 'cnnzoo[export]'`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from cnnzoo.checks import input_check

EXTRA = "pip install 'cnnzoo[export]'"
DEFAULT_TOLERANCE = 1e-4  # max |ONNX Runtime - eager| / max |eager logit|
DEFAULT_OPSET = 20  # torch's default, and the newest the TorchScript exporter writes: a fallback keeps the opset
OPSETS = range(7, 24)  # what torch's exporters accept (the TorchScript one up to 20)
EXPORTERS = ("auto", "dynamo", "torchscript")
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ExportError(ValueError):
    """A model that neither exporter could translate (the message gives each one's reason)."""


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote and how closely ONNX Runtime's logits follow eager PyTorch's."""

    path: str
    model: str                        # registered name, or the module's class name
    input_shape: tuple[int, ...]      # (N, C, H, W) of the batch compared; N is any size with dynamic_batch
    dynamic_batch: bool
    opset: int
    exporter: str                     # "dynamo" (torch.export-based) or "torchscript" (the deprecated one)
    fallback_reason: str | None       # why the dynamo exporter was not used, when exporter="auto" fell back
    max_abs_diff: float               # max |ONNX Runtime - eager| over the batch's logits
    logit_scale: float                # max |eager logit|
    rel_diff: float                   # max_abs_diff / logit_scale
    tolerance: float                  # on rel_diff
    ok: bool                          # rel_diff <= tolerance; the file is written only then
    file_bytes: int                   # 0 when not written
    export_s: float
    check_s: float                    # onnx.checker
    verify_s: float                   # ONNX Runtime session, its run and eager's


def require_onnx():
    """(onnx, onnxruntime), or an ImportError that names the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        missing = err.name or "onnx or onnxruntime"
        raise ImportError(f"ONNX export needs {missing}, which is not installed: {EXTRA}") from err
    return onnx, onnxruntime


def export_onnx(source: nn.Module | str | os.PathLike, path: str | os.PathLike, *,
                input_size: tuple[int, int, int] | None = None, dynamic_batch: bool = False,
                opset: int | None = None, batch_size: int = 1, exporter: str = "auto",
                tolerance: float = DEFAULT_TOLERANCE) -> ExportReport:
    """Export a model to ONNX at `path`, check the file and compare ONNX Runtime's logits with eager PyTorch's.

    Args:
        source: a registered model name, a cnnzoo checkpoint file, or a module (its eval mode is exported; the
            module's own mode is restored afterwards).
        input_size: (C, H, W); default the model's native input (a module not built by cnnzoo needs it).
        dynamic_batch: the batch dimension is left free in the file; the comparison then runs at batch 3, a size
            the export never saw (the example traced has 2 images: torch.export treats a size of 1 as fixed).
        batch_size: the fixed batch of the file without dynamic_batch.
        exporter: "auto" (dynamo, falling back to torchscript), "dynamo" or "torchscript".
        tolerance: the largest accepted difference relative to the logits' scale. Beyond it nothing is written
            and the report says ok=False.
    """
    onnx, ort = require_onnx()
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"opset must be an integer from {OPSETS.start} to {OPSETS.stop - 1}, got {opset!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number of at least 0, got {tolerance!r}")
    model, label = _resolve(source)
    size = _input_size(model, input_size)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the file to write, e.g. {path / (label + '.onnx')}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")

    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2 if dynamic_batch else batch_size, *size, generator=generator)
    probe = torch.randn(3, *size, generator=generator) if dynamic_batch else example
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            started = time.perf_counter()
            expected = model(probe).float()  # runs the input check: a size the model cannot take stops here
            eager_s = time.perf_counter() - started
        if not torch.isfinite(expected).all():
            raise ValueError(f"{label}: PyTorch's own logits on the check batch are not finite (NaN or inf), so ONNX "
                             f"Runtime's cannot be compared with them; nothing was written. A very deep net as built "
                             f"(batch norms without statistics) overflows in eval mode: export trained weights")
        from cnnzoo.train.checkpoint import ordinary_file_mode

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        ordinary_file_mode(fd)  # an ordinary file once renamed, not mkstemp's 0600
        os.close(fd)
        try:
            started = time.perf_counter()
            used, reason = _export(model, example, tmp, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter)
            export_s = time.perf_counter() - started
            started = time.perf_counter()
            onnx.checker.check_model(tmp)  # by path: the protobuf is not loaded into Python (VGG's is 550 MB)
            check_s = time.perf_counter() - started
            started = time.perf_counter()
            got = _session(ort, tmp, threads=torch.get_num_threads())(probe)
            verify_s = time.perf_counter() - started + eager_s
            diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
            scale = expected.abs().max().item()
            rel = diff / scale if scale > 0 else diff
            ok = rel <= tolerance
            if ok:
                with open(tmp, "rb+") as f:  # on disk before it takes the name
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    finally:
        model.train(was_training)
    return ExportReport(
        path=str(path), model=label, input_shape=tuple(probe.shape), dynamic_batch=dynamic_batch, opset=opset,
        exporter=used, fallback_reason=reason, max_abs_diff=diff, logit_scale=scale, rel_diff=rel,
        tolerance=float(tolerance), ok=ok, file_bytes=path.stat().st_size if ok else 0, export_s=export_s,
        check_s=check_s, verify_s=verify_s)


def ort_runner(model: nn.Module, example: Tensor, *, threads: int | None = None,
               exporter: str = "auto") -> Callable[[Tensor], Tensor]:
    """`model` (its eval mode) as an ONNX Runtime CPU session: a function from a float32 CPU batch shaped like
    `example` (any batch size) to float32 CPU logits. The function's `session` attribute is the session.

    `threads` is the session's intra-op thread count; default torch's current count, so both sides of a
    comparison run with the same number. `exporter` as for `export_onnx`. The file is not compared with eager
    here (`export_onnx` does that).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    _, ort = require_onnx()
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ValueError("example must be a batch of images shaped (N, C, H, W)")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    _resolve(model)  # on the CPU
    example = example.detach().float().cpu()
    if example.shape[0] < 2:  # torch.export treats a batch of 1 as a fixed size
        example = example[:1].expand(2, *example.shape[1:]).contiguous()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])  # the input check speaks before the exporter does
        with tempfile.TemporaryDirectory(prefix="cnnzoo-onnx-") as folder:
            file = os.path.join(folder, "model.onnx")
            _export(model, example, file, dynamic_batch=True, opset=DEFAULT_OPSET, exporter=exporter)
            return _session(ort, file, threads=threads or torch.get_num_threads())  # the session holds the graph
    finally:
        model.train(was_training)


def _resolve(source) -> tuple[nn.Module, str]:
    """The module to export and its label, from a module, a registered name or a checkpoint file."""
    if isinstance(source, nn.Module):
        devices = {t.device.type for t in [*source.parameters(), *source.buffers()]}
        if devices - {"cpu"}:
            raise ValueError(f"the model is on {', '.join(sorted(devices - {'cpu'}))}; ONNX export and ONNX Runtime "
                             f"run here on the CPU: pass model.cpu()")
        return source, _registered_name(source) or type(source).__name__
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a model name, a checkpoint file or an nn.Module, got {type(source).__name__}")
    from cnnzoo.registry import create_model
    from cnnzoo.train.checkpoint import is_checkpoint_path, load_checkpoint, model_from_checkpoint

    text = os.fspath(source)
    if is_checkpoint_path(text):
        payload = load_checkpoint(text)
        return model_from_checkpoint(payload), payload["model"]
    return create_model(text), text


def _registered_name(model: nn.Module) -> str | None:
    check = input_check(model)
    return check.model_name if check is not None else None


def _input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    if input_size is not None:
        size = tuple(input_size)
        if len(size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
            raise ValueError(f"input_size must be three positive integers (C, H, W), got {input_size!r}")
        return size
    check = input_check(model)
    if check is None:
        raise ValueError("this model was not built by cnnzoo.create_model, so its input size is unknown; "
                         "pass input_size=(C, H, W)")
    return (check.in_chans, *check.native_hw)


def _export(model: nn.Module, example: Tensor, file: str, *, dynamic_batch: bool, opset: int,
            exporter: str) -> tuple[str, str | None]:
    """Write `model` to `file` with the chosen exporter; returns (exporter used, why dynamo was not)."""
    check = input_check(model)

    def unchecked():  # the batch was checked by the eager run; the hook's checks would only clutter the graph
        return check.suspended() if check is not None else contextlib.nullcontext()

    if exporter in ("auto", "dynamo"):
        try:
            with unchecked(), _quiet():
                _export_dynamo(model, example, file, dynamic_batch=dynamic_batch, opset=opset)
            return "dynamo", None
        except ImportError as err:  # onnxscript (or a module it needs) missing
            missing = err.name or "onnxscript"
            if exporter == "dynamo":
                raise ImportError(f"the dynamo ONNX exporter needs {missing}, which is not installed: {EXTRA}") \
                    from err
            reason = f"{missing} is not installed ({EXTRA})"
        except Exception as err:  # noqa: BLE001 - any failure of the exporter sends "auto" to the other one
            if exporter == "dynamo":
                raise ExportError(f"the dynamo exporter cannot export this model: {_first_line(err)}") from err
            reason = _first_line(err)
    else:
        reason = None
    try:
        with unchecked(), _quiet():
            _export_torchscript(model, example, file, dynamic_batch=dynamic_batch, opset=opset)
    except Exception as err:  # noqa: BLE001
        both = f"dynamo: {reason}; torchscript: " if reason else "the torchscript exporter: "
        raise ExportError(f"cannot export to ONNX ({both}{_first_line(err)})") from err
    return "torchscript", reason


def _export_dynamo(model, example, file, *, dynamic_batch, opset) -> None:
    import onnxscript  # noqa: F401 - the dynamo exporter needs it; an ImportError here selects the fallback

    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False, optimize=True)
    program.save(file, external_data=False)  # one file (the largest registered model, VGG-19, is 575 MB)


def _export_torchscript(model, example, file, *, dynamic_batch, opset) -> None:
    if opset > 20:
        raise ValueError(f"the TorchScript-based exporter writes opset 20 at most, not {opset}")
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(model, (example,), file, dynamo=False, opset_version=opset, dynamic_axes=axes,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)


@contextlib.contextmanager
def _quiet():
    """No progress lines, deprecation notices or tracer warnings from the exporters: Python's warnings are
    ignored, and the process's stdout and stderr go to the null device (the TorchScript exporter prints its graph
    from C++ when it fails), so other threads' output is lost meanwhile too."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        with open(os.devnull, "w") as null:
            for fd in (1, 2):
                with contextlib.suppress(OSError):  # no such descriptor (a detached process): nothing to silence
                    saved.append((fd, os.dup(fd)))
                    os.dup2(null.fileno(), fd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _first_line(err: BaseException) -> str:
    """The gist of an exporter's error: its first line, without torch's request to file an issue."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    text = re.split(r"\s+(?:Please feel free|\[Caused by)", text)[0]
    text = text if len(text) <= 240 else text[:237] + "..."
    return f"{type(err).__name__}: {text}".rstrip(": ")


def _session(ort, file: str, *, threads: int) -> Callable[[Tensor], Tensor]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(file, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        (logits,) = session.run(None, {name: x.detach().float().cpu().contiguous().numpy()})
        return torch.from_numpy(logits)

    run.session = session
    return run
