"""Checkpoints: plain dicts of tensors and primitives, written atomically, read without arbitrary unpickling.

A checkpoint is what `torch.save` writes for a dict with these keys:

    format            "cnnzoo-checkpoint" (what tells a cnnzoo checkpoint from any other file)
    version           1
    model             the registered model name
    model_options     the keyword arguments of `cnnzoo.create_model` (num_classes, in_chans, family options)
    model_state       the model's state_dict
    ... and, for a training checkpoint: optimizer, schedule, position (epoch, batch), step, rng, history,
    config, recipe, best (see `cnnzoo.train.trainer`); a run that holds pruning masks or shared-weight codebooks
    (`cnnzoo.compress`) also stores them, as compression = {"masks": {name: bool tensor}, "shared": {name:
    {codebook, labels, mask, kind, bits}}}.

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the target: a reader
(or a run killed mid-write) sees either the old checkpoint or the new one, never a torn file. Nothing is written
that could not be read back: the fields are type-checked and every floating-point tensor of the weights and the
optimizer state must be finite.

Reading checks the whole file before trusting it: every member of the zip archive against its CRC-32 (so a flipped
byte in the tensor data is found, which `torch.load` alone does not notice), then `torch.load(weights_only=True)`,
which refuses any pickled object other than tensors and primitives, then the same field and finiteness checks.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "model_from_checkpoint", "load_model_state",
           "is_checkpoint_path", "atomic_write_text", "CheckpointError", "check_payload", "nonfinite_tensors"]

FORMAT = "cnnzoo-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable cnnzoo checkpoint (the message says why and what is expected)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write to a temporary file in the same folder, flush it to disk, rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        ordinary_file_mode(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ordinary_file_mode(fd: int) -> None:
    """Give a file mkstemp made (mode 0600) the mode an ordinary new file gets: 0666 less the umask."""
    os.fchmod(fd, 0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux says it without changing it; os.umask can only be read by setting it (racy with threads)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` (a dict holding at least model, model_options and model_state) atomically."""
    check_payload(payload, f"the checkpoint for {path}")  # nothing is written that could not be read back
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def is_checkpoint_path(text: str) -> bool:
    """Whether a CLI argument names a checkpoint file rather than a registered model."""
    return text.endswith((".pt", ".pth")) or os.sep in text or Path(text).is_file()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a cnnzoo checkpoint and check it whole; a file that is not one, or is damaged, gets a CheckpointError
    that says what is wrong and what is expected.

    Checked, in order: the file can be read; it is a zip archive whose every member matches its CRC-32 (a flipped
    byte anywhere in the tensor data is found); it unpickles with `weights_only=True`; its fields have the types
    `cnnzoo train` writes; every floating-point tensor of the model's and the optimizer's state is finite.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        hint = next((p for p in (path / "last.pt", path / "best.pt") if p.is_file()), None)
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file" + (f", e.g. {hint}" if hint else ""))
    try:
        data = path.read_bytes()
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied (the file exists; give this user read "
                              f"access, e.g. chmod u+r)") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    _check_archive(path, data)
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain values; cnnzoo refuses to unpickle "
            f"them (it could run arbitrary code). A cnnzoo checkpoint is written by `cnnzoo train` "
            f"({str(err).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (or it is truncated): "
                              f"{str(err).splitlines()[0][:160]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = "a plain state_dict" if isinstance(payload, dict) and payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()) else f"a {type(payload).__name__}"
        raise CheckpointError(f"{path} is not a cnnzoo checkpoint (it holds {kind}); cnnzoo reads the files "
                              f"`cnnzoo train` writes (last.pt, best.pt)")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: field 'version' is malformed: expected an integer, got {_kind(version)}")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer cnnzoo (checkpoint version {version}, "
                              f"this one reads up to {VERSION})")
    check_payload(payload, path)
    return payload


def _check_archive(path: Path, data: bytes) -> None:
    """The bytes are a whole zip archive (torch.save's format) and every member matches its stored CRC-32."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as err:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is truncated (cnnzoo checkpoints are "
                              f"the zip archives torch.save writes; {str(err).splitlines()[0][:80]})") from None
    except (zlib.error, OSError) as err:
        raise CheckpointError(f"{path} is damaged: its data cannot be read back ({err}); use another copy, "
                              f"or the run's best.pt") from None
    if damaged is not None:
        raise CheckpointError(f"{path} is damaged: {damaged} does not match its CRC-32 checksum (the file changed "
                              f"after it was written); use another copy, or the run's best.pt")


def _kind(value) -> str:
    return type(value).__name__ if value is not None else "nothing"


# field: (what it must be, a check); fields past the first three are those of a training checkpoint, optional
_INT = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
_FIELDS = {
    "model": ("a model name (str)", lambda v: isinstance(v, str) and bool(v)),
    "model_options": ("a dict of create_model options", lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)),
    "model_state": ("a state_dict (names to tensors)", lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())),
    "optimizer": ("an optimizer state_dict", lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list)),
    "schedule": ("a dict", lambda v: isinstance(v, dict)),
    "position": ("[epoch, batch], two integers of at least 0", lambda v: isinstance(v, (list, tuple))
                 and len(v) == 2 and all(_INT(i) for i in v)),
    "step": ("an integer of at least 0", _INT),
    "running": ("a dict of numbers", lambda v: isinstance(v, dict) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())),
    "history": ("a list of per-epoch dicts", lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v)),
    "best": ("a number or None", lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))),
    "rng": ("a dict with the CPU generator's state (a uint8 tensor)", lambda v: isinstance(v, dict)
            and isinstance(v.get("cpu"), torch.Tensor) and v["cpu"].dtype == torch.uint8),
    "config": ("a dict", lambda v: isinstance(v, dict)),
    "recipe": ("a dict", lambda v: isinstance(v, dict)),
    "classes": ("a list of class names", lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)),
    "data": ("a dict", lambda v: isinstance(v, dict)),
    "health": ("a dict", lambda v: isinstance(v, dict)),
    "threads": ("a thread count or None", lambda v: v is None or (_INT(v) and v >= 1)),
    "skipped_images": ("a list of file paths", lambda v: isinstance(v, list) and all(isinstance(p, str) for p in v)),
    "compression": ("a dict with 'masks' and 'shared' dicts", lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k, {}), dict) for k in ("masks", "shared"))),
}
_REQUIRED = ("model", "model_options", "model_state")


def check_payload(payload: dict, source: str | os.PathLike = "the checkpoint") -> None:
    """Every field has the type `cnnzoo train` writes, and the weights and optimizer state are finite numbers."""
    for key, (expected, ok) in _FIELDS.items():
        if key not in payload:
            if key in _REQUIRED:
                raise CheckpointError(f"{source}: field {key!r} is missing; a cnnzoo checkpoint holds "
                                      f"{', '.join(_REQUIRED)}")
            continue
        if not ok(payload[key]):
            raise CheckpointError(f"{source}: field {key!r} is malformed: expected {expected}, got "
                                  f"{_kind(payload[key])}")
    bad = nonfinite_tensors(payload["model_state"])
    if bad:
        raise CheckpointError(f"{source}: the weights are not finite numbers (NaN or inf in {_few(bad)}); such a "
                              f"checkpoint cannot be used (it was saved from a diverged run, or damaged)")
    if "optimizer" in payload:
        bad = nonfinite_tensors(payload["optimizer"]["state"])
        if bad:
            raise CheckpointError(f"{source}: the optimizer state is not finite (NaN or inf in {_few(bad)}); such a "
                                  f"checkpoint cannot be resumed")
    bad = nonfinite_tensors(payload.get("compression") or {}, "compression")
    if bad:
        raise CheckpointError(f"{source}: the codebooks are not finite (NaN or inf in {_few(bad)}); such a "
                              f"checkpoint cannot be resumed")


def nonfinite_tensors(tree, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nest of dicts and lists that hold NaN or inf."""
    bad = []
    if isinstance(tree, torch.Tensor):
        if (tree.is_floating_point() or tree.is_complex()) and not bool(torch.isfinite(tree).all()):
            bad.append(prefix or "tensor")
    elif isinstance(tree, dict):
        for k, v in tree.items():
            bad.extend(nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            bad.extend(nonfinite_tensors(v, f"{prefix}.{i}" if prefix else str(i)))
    return bad


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load_model_state(model: nn.Module, state: dict, name: str, source: str | os.PathLike = "the checkpoint") -> None:
    """Load a state_dict strictly; a mismatch names the keys that differ and the shapes that disagree."""
    check_state_fits(model.state_dict(), state, name, source)
    model.load_state_dict(state, strict=True)


def check_state_fits(own: dict, state: dict, name: str, source: str | os.PathLike = "the checkpoint", *,
                     dtypes: bool = True) -> None:
    """Raise one CheckpointError naming the missing, unexpected, wrong-shaped (and, with `dtypes`, wrong-dtype)
    keys of `state` against a model's own state_dict `own`."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    types = [f"{k} {str(state[k].dtype).removeprefix('torch.')} vs {str(own[k].dtype).removeprefix('torch.')}"
             for k in own if dtypes and k in state and state[k].dtype != own[k].dtype]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes),
                        ("dtype differs", types)):
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            parts.append(f"{label}: {shown}")
    if parts:
        raise CheckpointError(f"{source} does not fit {name}: " + "; ".join(parts))


def model_from_checkpoint(checkpoint: dict | str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Build the checkpoint's architecture with its options and load its weights (eval mode)."""
    from cnnzoo.registry import create_model

    source = checkpoint if not isinstance(checkpoint, dict) else "the checkpoint"
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    model = create_model(payload["model"], **payload["model_options"])
    load_model_state(model, payload["model_state"], payload["model"], source)
    return model.to(device).eval()
