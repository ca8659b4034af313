"""Counting that needs no forward pass.

`count_params(model)` counts a built model. `registered_params(names)` gives `count_params(create_model(name))`
for registered models at their defaults (what `cnnzoo list` shows) without building them all each time. The counts
come from the first of:

1. the table shipped in the package (`params_table.json` beside this file), valid only while the files that build
   the models (`cnnzoo/models/`, `layers.py`, `registry.py`) are byte for byte those it was computed from: a fresh
   install lists the zoo without building it. `tools/write_params_table.py` rewrites the table; the suite
   fails while it is stale and recomputes every count from a built model to check it;
2. a cache file ($CNNZOO_CACHE, else ~/.cache/cnnzoo) valid only for the exact source of the whole package and the
   torch version it was computed with: any change to either, or a file that cannot be read or does not parse, and
   the counts are computed again; the file is replaced atomically, and a cache that cannot be written is skipped;
3. the model built on the meta device with its initialisers skipped.

The table's key leaves torch's version out: the parameters of the layers the zoo uses (convolutions, linear
layers, normalisations) are fixed by their constructor arguments, and the suite's recount runs on whichever torch is
installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["NORM_LAYERS", "count_params", "meta_model", "registered_params", "skip_meta_init"]

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)

CACHE_FILE = "params.json"
TABLE_FILE = Path(__file__).with_name("params_table.json")


def count_params(model: nn.Module, *, trainable_only: bool = False, exclude_norm: bool = False) -> int:
    """Parameter elements, each tensor counted once even when shared between modules.

    Args:
        trainable_only: skip parameters with requires_grad=False.
        exclude_norm: skip the scales and shifts of normalisation layers (some papers count without them).
    """
    skip = set()
    if exclude_norm:
        skip = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already yields a shared tensor once; the set guards tying by id
        if id(p) in seen or id(p) in skip or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def registered_params(names: list[str], *, cache: bool = True) -> dict[str, int]:
    """`count_params(create_model(name))` for each registered name, at the model's defaults.

    Counts of the models cnnzoo itself registers come from the shipped table or the cache (the module's docstring
    says when each is valid); the others are computed on the meta device (a model registered from outside the
    package is always computed: no key can see its source). `cache=False` computes every count.
    """
    from cnnzoo.registry import model_card, registered_by_cnnzoo

    names = [model_card(n).name for n in names]  # unknown names fail here, before anything is computed
    cacheable = {n for n in names if registered_by_cnnzoo(n)} if cache else set()
    counts = {}
    if cacheable:
        shipped = _read_counts(TABLE_FILE, _model_source_key())
        counts = {n: shipped[n] for n in cacheable if n in shipped}
    key = stored = None
    if cacheable - counts.keys():  # the table is stale or lacks a model: the cache, else a build
        key = _source_key()
        stored = _read_counts(cache_dir() / CACHE_FILE, key)
        counts.update({n: stored[n] for n in cacheable if n in stored and n not in counts})
    missing = [n for n in names if n not in counts]
    for name in missing:
        counts[name] = _meta_count(name)
    new = {n: counts[n] for n in missing if n in cacheable}
    if new:
        _write_counts(cache_dir() / CACHE_FILE, key, {**stored, **new}, quiet=True)
    return {n: counts[n] for n in names}


def meta_model(name: str, **options) -> nn.Module:
    """`create_model(name, **options)` on the meta device with its initialisers skipped: the architecture, its
    shapes and parameter counts, without memory or the initialisers' meta kernels (slow: some are Python)."""
    from cnnzoo.registry import create_model

    with torch.device("meta"), skip_meta_init():
        return create_model(name, **options)


_INITIALISERS = ("normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
                 "xavier_uniform_", "constant_", "ones_", "zeros_", "fill_", "zero_", "orthogonal_")


@contextlib.contextmanager
def skip_meta_init():
    """Within the block, initialisers (`nn.init.*` and the in-place Tensor methods they use) return a meta tensor
    untouched: it has no values to fill. Other tensors are initialised as usual.

    The functions are swapped for the block rather than intercepted with a TorchFunctionMode: a mode sees every
    torch call of every module constructor, and that interception was a third of the time of building the zoo.
    """
    swapped = []
    try:
        for owner in (nn.init, Tensor):
            for attr in _INITIALISERS:
                original = getattr(owner, attr, None)
                if original is not None:
                    swapped.append((owner, attr, original, attr in vars(owner)))
                    setattr(owner, attr, _skip_on_meta(original))
        yield
    finally:
        for owner, attr, original, own in reversed(swapped):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


def _skip_on_meta(initialiser):
    def skipping(tensor, *args, **kwargs):
        if isinstance(tensor, Tensor) and tensor.is_meta:
            return tensor
        return initialiser(tensor, *args, **kwargs)

    return skipping


def _meta_count(name: str) -> int:
    return count_params(meta_model(name))


def cache_dir() -> Path:
    return Path(os.environ.get("CNNZOO_CACHE") or "~/.cache/cnnzoo").expanduser()


def _source_key() -> str:
    """A digest of every Python file of the cnnzoo package (path and bytes) and of torch's version."""
    import torch

    import cnnzoo

    package = Path(cnnzoo.__file__).resolve().parent
    digest = hashlib.sha256(f"cnnzoo {cnnzoo.__version__}; torch {torch.__version__}\n".encode())
    for path in sorted(package.rglob("*.py")):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(package).as_posix()} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def _model_files() -> list[Path]:
    """The files whose source decides what `create_model` builds: the model modules, the layers, the registry."""
    package = Path(__file__).resolve().parent.parent
    return sorted([*(package / "models").rglob("*.py"), package / "layers.py", package / "registry.py"])


def _model_source_key() -> str:
    """A digest of the files that build the models (path and bytes): the shipped table's key."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(b"cnnzoo model sources\n")
    for path in _model_files():
        data = path.read_bytes()
        digest.update(f"{path.relative_to(package).as_posix()} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def write_table(path: Path = TABLE_FILE) -> dict[str, int]:
    """Count every model cnnzoo registers, built on the meta device, and write the table `registered_params` reads
    first (atomically). Returns the counts."""
    from cnnzoo.registry import list_models, registered_by_cnnzoo

    key = _model_source_key()
    counts = {n: _meta_count(n) for n in list_models() if registered_by_cnnzoo(n)}
    _write_counts(path, key, counts, quiet=False)
    return counts


def _read_counts(path: Path, key: str) -> dict[str, int]:
    """The counts in a table or cache file written for `key`, if it holds only well-formed counts; else nothing."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("params"), dict):
        return {}
    params = data["params"]
    if not all(isinstance(n, str) and type(v) is int and v >= 0 for n, v in params.items()):
        return {}
    return params


def _write_counts(path: Path, key: str, params: dict[str, int], *, quiet: bool) -> None:
    """Replace the file atomically (a temp file renamed over it); with `quiet`, a file that cannot be written is
    skipped (a cache), else the error is raised (the shipped table)."""
    text = json.dumps({"key": key, "params": params}, indent=0, sort_keys=True) + "\n"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                         delete=False) as f:
            tmp = f.name
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        if not quiet:
            raise
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
