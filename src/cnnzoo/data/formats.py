"""Readers for the files the classic datasets ship as: LeCun's idx files and the CIFAR Python pickles.

Both readers are our own and check what they read (magic numbers, dimensions, sizes, shapes), so a truncated
download or a stray file fails with a message naming the file instead of a numpy reshape error later.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import torch

__all__ = ["read_idx", "read_cifar_pickle"]

# idx format (LeCun, http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of
# dimensions, then each dimension as a big-endian int32, then the data in C order.
_IDX_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> torch.Tensor:
    """An idx file of unsigned bytes (MNIST, Fashion-MNIST) as a uint8 tensor; `.gz` files are decompressed."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an idx file (the header alone is {4 + 4 * ndim})")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    magic = int.from_bytes(raw[:4], "big")
    if zero != 0 or dtype != _IDX_UBYTE or dims != ndim:
        expected = (_IDX_UBYTE << 8) | ndim
        raise ValueError(f"{path}: magic number {magic:#010x}, expected {expected:#010x} (an idx file of unsigned "
                         f"bytes with {ndim} dimension{'s' * (ndim > 1)}); is this the right file?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated: {len(raw)} bytes, expected at least the {header}-byte header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + _prod(shape)
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise ValueError(f"{path}: {what}: {len(raw):,} bytes{' after decompression' * path.name.endswith('.gz')}, "
                         f"expected {expected:,} (header {header} + {' x '.join(map(str, shape))} values); "
                         f"delete it and download it again")
    if expected == header:  # no values (torch.frombuffer refuses an empty buffer)
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (EOFError, gzip.BadGzipFile, OSError) as e:
            raise ValueError(f"{path}: not a complete gzip file ({e}); delete it and download it again") from None
    return path.read_bytes()


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# The CIFAR files are Python pickles of dicts holding lists, bytes, ints and one numpy uint8 array. Unpickling
# runs whatever callables the file names, so this unpickler resolves only the four names a numpy array needs,
# and resolves them to our own stand-ins, not to numpy: a file can build dicts, lists, bytes, strings, numbers
# and uint8 arrays, and nothing else.
class _NdarrayType:
    """Stand-in for numpy.ndarray: only ever passed as an argument to _reconstruct."""


class _Dtype:
    """Stand-in for numpy.dtype: records the type string ('u1') and the byte order from the pickled state."""

    def __init__(self, descr, align=False, copy=True):
        self.descr = descr.decode("latin1") if isinstance(descr, bytes) else str(descr)

    def __setstate__(self, state):
        pass  # (version, byteorder, ...): irrelevant for single bytes, the only type accepted


class _Array:
    """Stand-in for a numpy array: keeps the raw bytes and shape; `tensor()` turns it into a torch tensor."""

    def __init__(self, shape=(), dtype=None, data=b""):
        self.shape, self.dtype, self.data = tuple(shape), dtype, data

    def __setstate__(self, state):
        # ndarray.__reduce__ state: (version, shape, dtype, is_fortran, raw data)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unexpected numpy array state")
        _, shape, dtype, fortran, data = state
        if fortran:
            raise pickle.UnpicklingError("Fortran-ordered arrays are not expected in a CIFAR file")
        if isinstance(data, str):
            data = data.encode("latin1")
        self.shape, self.dtype, self.data = tuple(shape), dtype, data

    def tensor(self) -> torch.Tensor:
        descr = getattr(self.dtype, "descr", None)
        if descr not in ("u1", "|u1", "uint8", "B"):
            raise ValueError(f"array of type {descr!r}, expected unsigned bytes ('u1')")
        if not isinstance(self.data, (bytes, bytearray)) or len(self.data) != _prod(self.shape):
            raise ValueError(f"array of shape {self.shape} holds {len(self.data)} bytes, expected {_prod(self.shape)}")
        if not self.data:
            return torch.empty(self.shape, dtype=torch.uint8)
        return torch.frombuffer(bytearray(self.data), dtype=torch.uint8).reshape(self.shape)


def _reconstruct(subtype, shape, dtype):
    if subtype is not _NdarrayType:
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return _Array()


def _frombuffer(buffer, dtype, shape, order):  # numpy's protocol-5 pickles
    if order != "C":
        raise pickle.UnpicklingError("only C-ordered arrays are allowed")
    return _Array(shape, dtype, bytes(buffer))


def _encode(text, encoding="latin1"):  # how protocol-2 pickles written by Python 3 spell bytes
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 text")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it references {module}.{name}") from None


def read_cifar_pickle(path: Path) -> dict[str, object]:
    """One CIFAR batch or meta file as a dict with str keys; numpy arrays come back as uint8 tensors.

    Loaded with an unpickler that refuses every class except a plain numpy array (which it rebuilds itself),
    so a tampered file cannot run code.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"refusing to load {path}: {e}; a CIFAR file holds only dicts, lists, bytes, strings, "
                         f"numbers and uint8 arrays") from None
    except (EOFError, ValueError, struct.error, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e}); delete it and download "
                         f"it again") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected the dict of a CIFAR batch")
    out = {}
    for key, value in obj.items():
        key = key.decode("latin1") if isinstance(key, bytes) else key
        if isinstance(value, _Array):
            try:
                value = value.tensor()
            except ValueError as e:
                raise ValueError(f"{path}: entry {key!r}: {e}") from None
        out[key] = value
    return out
