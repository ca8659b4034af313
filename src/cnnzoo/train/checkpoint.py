"""Checkpoints: plain dicts of tensors and primitives, written atomically, read without arbitrary unpickling.

A checkpoint is what `torch.save` writes for a dict with these keys:

    format            "cnnzoo-checkpoint" (what tells a cnnzoo checkpoint from any other file)
    version           1
    model             the registered model name
    model_options     the keyword arguments of `cnnzoo.create_model` (num_classes, in_chans, family options)
    model_state       the model's state_dict
    ... and, for a training checkpoint: optimizer, schedule, position (epoch, batch), step, rng, history,
    config, recipe, best (see `cnnzoo.train.trainer`).

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the target: a reader
(or a run killed mid-write) sees either the old checkpoint or the new one, never a torn file. Reading uses
`torch.load(weights_only=True)`, which refuses any pickled object other than tensors and primitives.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "model_from_checkpoint", "load_model_state",
           "is_checkpoint_path", "atomic_write_text", "CheckpointError"]

FORMAT = "cnnzoo-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable cnnzoo checkpoint (the message says why and what is expected)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write to a temporary file in the same folder, flush it to disk, rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` (a dict holding at least model, model_options and model_state) atomically."""
    for key in ("model", "model_options", "model_state"):
        if key not in payload:
            raise ValueError(f"a checkpoint needs {key!r}")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def is_checkpoint_path(text: str) -> bool:
    """Whether a CLI argument names a checkpoint file rather than a registered model."""
    return text.endswith((".pt", ".pth")) or os.sep in text or Path(text).is_file()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a cnnzoo checkpoint; any other file gets a CheckpointError that says what it is and what is expected."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        hint = next((p for p in (path / "last.pt", path / "best.pt") if p.is_file()), None)
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file" + (f", e.g. {hint}" if hint else ""))
    if not zipfile.is_zipfile(path):  # torch.save's format is a zip archive, whose index is at its end
        raise CheckpointError(f"{path} is not a PyTorch checkpoint, or it is truncated (cnnzoo checkpoints are "
                              f"the zip archives torch.save writes)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds Python objects other than tensors and plain values; cnnzoo refuses to unpickle "
            f"them (it could run arbitrary code). A cnnzoo checkpoint is written by `cnnzoo train` "
            f"({str(err).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (or it is truncated): "
                              f"{str(err).splitlines()[0][:160]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        kind = "a plain state_dict" if isinstance(payload, dict) and payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()) else f"a {type(payload).__name__}"
        raise CheckpointError(f"{path} is not a cnnzoo checkpoint (it holds {kind}); cnnzoo reads the files "
                              f"`cnnzoo train` writes (last.pt, best.pt)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer cnnzoo (checkpoint version {payload['version']}, "
                              f"this one reads up to {VERSION})")
    return payload


def load_model_state(model: nn.Module, state: dict, name: str, source: str | os.PathLike = "the checkpoint") -> None:
    """Load a state_dict strictly; a mismatch names the keys that differ and the shapes that disagree."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes)):
            if keys:
                shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{source} does not fit {name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def model_from_checkpoint(checkpoint: dict | str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Build the checkpoint's architecture with its options and load its weights (eval mode)."""
    from cnnzoo.registry import create_model

    source = checkpoint if not isinstance(checkpoint, dict) else "the checkpoint"
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    model = create_model(payload["model"], **payload["model_options"])
    load_model_state(model, payload["model_state"], payload["model"], source)
    return model.to(device).eval()
