"""The compressed file format: Deep Compression's storage (Han, Mao & Dally, ICLR 2016, arXiv:1510.00149).

Per pruned and quantised layer, as the paper's Sec. 2 and 4 store it:

- Relative sparse indices (Sec. 2, Figure 2). Walking the flattened weight, each kept entry stores how many pruned
  positions lie between it and the previous entry, in `index_bits` bits (8 for convolutions, 5 for fully connected
  layers, the paper's choice). A run of more than 2**index_bits - 1 pruned positions gets a filler entry (value 0,
  label 0) after 2**index_bits - 1 of them, as often as needed. (The paper's 3-bit example inserts a filler "when the
  difference exceeds 8": a difference of 1..8 positions, i.e. 0..7 zeros skipped, fits in 3 bits; that is the rule
  here.)
- Quantised weights (Sec. 3): a label per entry into the layer's codebook of 2**bits float32 values. Entry 0 of every
  codebook is exactly 0.0 and is reserved for the fillers, so one of the 2**bits codes is spent on them and k-means
  has 2**bits - 1 centroids; real weights have labels in [1, 2**bits).
- The codebook is stored with the entries in use only (entry 0 first, then the used centroids in order) and the
  labels renumbered over them: a small layer (LeNet-5's C1 keeps 99 weights) does not carry a 256-entry table. The
  "quantised" stage of `stage_sizes` counts labels at `bits` bits and this trimmed codebook.
- Huffman coding (Sec. 4) of both streams, each with its own canonical code (`cnnzoo.compress.huffman`).

Everything else in the state dict (biases, batch-norm parameters and buffers, layers left uncompressed) is stored
as it is, in its own dtype. The paper did the same: its Table 1-6 compress the weights of conv and fc layers only and
count biases at full precision (their decompression code for AlexNet reads the biases as float32 next to the
codebooks).

File layout (all integers little-endian):

    header, 56 bytes
        magic        8 bytes  b"\\x89CNZDC\\r\\n"  (PNG-style: a high byte and CR LF catch text-mode transfers)
        version      uint16   FORMAT_VERSION
        flags        uint16   0 (reserved)
        json_len     uint32   bytes of the JSON section
        payload_len  uint64   bytes after the header (JSON section + binary sections)
        sha256       32 bytes SHA-256 of header bytes 0..23 and the payload
    JSON section     zlib-compressed UTF-8 JSON: model name, create_model options, meta, and one record per tensor
                     of the state dict in its order: {"name", "dtype", "shape"} and, for a compressed one, "kind",
                     "bits", "index_bits", "surviving", "fillers", "entries" (codebook entries stored), "index"
                     and "labels" ({"count", "nbits", "alphabet", "block_size"}: what `HuffmanStream.from_bytes`
                     needs)
    binary sections  in the records' order: for a compressed tensor its index stream, label stream (each a Huffman
                     stream: 5-bit code lengths, uint32 block offsets, the codes) and its codebook (float32
                     [entries]); for any other tensor its raw bytes.

SHA-256 rather than CRC32: 28 more bytes (under 0.01% of SqueezeNet's file) buy a check that no accidental damage
or edit slips through, and hashing 7 MB takes milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from cnnzoo.compress.huffman import DEFAULT_BLOCK_SIZE, HuffmanStream, _tensor_bytes, huffman_decode_many, \
    huffman_encode, stored_bytes

if TYPE_CHECKING:
    from cnnzoo.compress.quantize import Shared

MAGIC = b"\x89CNZDC\r\n"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sHHIQ32s")
HEADER_BYTES = _HEADER.size  # 56
_HASHED = 24                   # header bytes covered by the checksum (all but the checksum itself)
DEFAULT_INDEX_BITS = {"conv": 8, "fc": 5}
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.bool)}


class CompressedFileError(ValueError):
    """A file (or bytes) that is not a sound cnnzoo compressed file; the message is one line."""


# ---- relative indices ---------------------------------------------------------------------------------------

def relative_indices(mask: torch.Tensor, labels: torch.Tensor, index_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gaps, labels) per stored entry, fillers included: gap = pruned positions skipped before the entry."""
    positions = torch.nonzero(mask.flatten()).flatten()
    skipped = torch.diff(positions, prepend=positions.new_tensor([-1])) - 1
    span = 1 << index_bits
    fillers = skipped // span                       # a filler after every span - 1 skipped zeros
    per_entry = fillers + 1
    total = int(per_entry.sum())
    last = torch.cumsum(per_entry, 0) - 1           # where each real entry lands among all entries
    gaps = torch.full((total,), span - 1, dtype=torch.int64)
    gaps[last] = skipped % span
    entry_labels = torch.zeros(total, dtype=torch.int64)
    entry_labels[last] = labels.to(torch.int64)
    return gaps, entry_labels


def absolute_positions(gaps: torch.Tensor) -> torch.Tensor:
    """Positions in the flattened weight of the entries a gap stream describes."""
    return torch.cumsum(gaps + 1, 0) - 1


# ---- encode / decode ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layer:
    name: str
    shared: Any
    index_bits: int
    gaps: torch.Tensor
    entry_labels: torch.Tensor  # into `codebook`: the layer's codebook entries in use (entry 0, the fillers', first)
    codebook: torch.Tensor

    @property
    def fillers(self) -> int:
        return self.gaps.numel() - self.shared.labels.numel()


def encode(model_name: str, model_options: dict, state: dict[str, torch.Tensor], shared: dict[str, "Shared"], *,
           index_bits: dict[str, int] | None = None, meta: dict | None = None) -> bytes:
    """The compressed file's bytes for a pruned and quantised model's state dict.

    `shared` names the compressed weights (parameter name -> Shared); their values in `state` must equal
    codebook[labels] at the mask and 0 elsewhere, so the file decodes to exactly the model given. Every other tensor
    of `state` is stored as it is. `index_bits` by layer kind (default {"conv": 8, "fc": 5}).
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    index_bits = _check_index_bits(index_bits)
    layers = _prepare_layers(state, shared, index_bits, check_values=True)
    records, sections = [], []
    index_streams = {name: huffman_encode(layer.gaps, 1 << layer.index_bits) for name, layer in layers.items()}
    label_streams = {name: huffman_encode(layer.entry_labels, layer.codebook.numel()) for name, layer in
                     layers.items()}
    for name, tensor in state.items():
        record = {"name": name, "dtype": _dtype_name(tensor, name), "shape": list(tensor.shape)}
        if name in layers:
            layer, s = layers[name], layers[name].shared
            record.update(kind=s.kind, bits=s.bits, index_bits=layer.index_bits, surviving=s.labels.numel(),
                          fillers=layer.fillers, entries=layer.codebook.numel(),
                          index=_stream_record(index_streams[name]), labels=_stream_record(label_streams[name]))
            sections += [index_streams[name].to_bytes(), label_streams[name].to_bytes(),
                         _tensor_bytes(layer.codebook)]
        else:
            _check_finite(name, tensor)
            sections.append(_tensor_bytes(tensor))
        records.append(record)
    document = {"format": "cnnzoo compressed model", "model": model_name, "model_options": model_options,
                "meta": meta or {}, "tensors": records}
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_options and meta must be plain JSON values (str, numbers, lists, dicts): {e}") \
            from None
    json_bytes = zlib.compress(text.encode(), 9)
    payload = json_bytes + b"".join(sections)
    head = struct.pack("<8sHHIQ", MAGIC, FORMAT_VERSION, 0, len(json_bytes), len(payload))
    return head + hashlib.sha256(head + payload).digest() + payload


def decode(data: bytes) -> tuple[str, dict, dict[str, torch.Tensor], dict]:
    """(model_name, model_options, dense state_dict, meta) from a compressed file's bytes."""
    document, payload, json_len = _parse(data, "<bytes>")
    offset = json_len
    streams, pending, state = [], [], {}
    try:
        for record in document["tensors"]:
            name, dtype, shape = record["name"], _DTYPES[record["dtype"]], tuple(record["shape"])
            if "bits" in record:
                index, offset = _read_stream(payload, offset, record["index"])
                labels, offset = _read_stream(payload, offset, record["labels"])
                k = int(record.get("entries", 1 << record["bits"]))
                if not 1 <= k <= 1 << record["bits"]:
                    raise ValueError(f"{name}: {k} codebook entries for {record['bits']} bits")
                codebook = _frombuffer(payload, offset, torch.float32, (k,))
                offset += 4 * k
                streams += [index, labels]
                pending.append((name, dtype, shape, codebook))
                state[name] = None
            else:
                n = math.prod(shape)
                state[name] = _frombuffer(payload, offset, dtype, shape)
                offset += n * _itemsize(dtype)
    except (KeyError, TypeError, ValueError) as e:
        raise CompressedFileError(f"<bytes>: damaged: the sections do not match the JSON section ({e})") from None
    if offset != len(payload):
        raise CompressedFileError(f"<bytes>: damaged: {len(payload) - offset} bytes after the last section")
    decoded = huffman_decode_many(streams)
    for i, (name, dtype, shape, codebook) in enumerate(pending):
        gaps, labels = decoded[2 * i], decoded[2 * i + 1]
        positions = absolute_positions(gaps)
        n = math.prod(shape)
        if labels.numel() != gaps.numel() or (positions.numel() and int(positions[-1]) >= n):
            raise CompressedFileError(f"<bytes>: damaged: the indices of {name} run past its {n} weights")
        dense = torch.zeros(n, dtype=torch.float32)
        dense[positions] = codebook[labels]
        state[name] = dense.view(shape).to(dtype)
    return document["model"], document["model_options"], state, document["meta"]


@dataclass(frozen=True)
class FileInfo:
    """What a compressed file holds, read from its header and JSON section (for `cnnzoo info FILE`)."""

    version: int
    model: str
    model_options: dict
    meta: dict
    tensors: list[dict]      # the JSON records (see the module docstring)
    header_bytes: int
    json_bytes: int
    sections_bytes: int
    total_bytes: int


def inspect(data: bytes, *, source: str = "<bytes>") -> FileInfo:
    """Header and JSON section of a compressed file (checked as `read_compressed` checks them)."""
    document, payload, json_len = _parse(data, source)
    version = struct.unpack_from("<H", data, 8)[0]
    return FileInfo(version, document["model"], document["model_options"], document["meta"], document["tensors"],
                    HEADER_BYTES, json_len, len(payload) - json_len, len(data))


# ---- files --------------------------------------------------------------------------------------------------

def write_compressed(path: str | os.PathLike, data: bytes) -> None:
    """Write a compressed file atomically (a temporary file renamed over `path`) after checking its bytes."""
    from cnnzoo.train.checkpoint import atomic_write_bytes

    _parse(data, os.fspath(path))
    atomic_write_bytes(path, data)


def read_compressed(path: str | os.PathLike) -> bytes:
    """The bytes of a compressed file, refused with a one-line CompressedFileError if foreign or damaged."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CompressedFileError(f"{os.fspath(path)}: cannot read: {e.strerror or e}") from None
    _parse(data, os.fspath(path))
    return data


# ---- sizes --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSizes:
    """One compressed weight's size after each stage, in bytes (the papers' columns)."""

    name: str
    kind: str
    params: int
    surviving: int
    fillers: int
    bits: int
    index_bits: int
    original: int       # float32 dense
    pruned: int         # float32 value + relative index per entry (fillers included)
    quantised: int      # label + relative index per entry, codebook float32
    huffman: int        # both Huffman streams (tables, block offsets, codes) + codebook
    index_huffman: int
    labels_huffman: int
    codebook: int

    @property
    def density(self) -> float:
        return self.surviving / self.params if self.params else 0.0


@dataclass(frozen=True)
class StageSizes:
    """Sizes stage by stage: per compressed weight, plus the tensors kept as they are (counted in every stage)."""

    layers: tuple[LayerSizes, ...]
    other_params: int     # elements of the tensors stored as they are (biases, batch norm, uncompressed layers)
    other_bytes: int

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers) + self.other_params

    @property
    def original(self) -> int:
        return sum(layer.original for layer in self.layers) + self.other_bytes

    @property
    def pruned(self) -> int:
        return sum(layer.pruned for layer in self.layers) + self.other_bytes

    @property
    def quantised(self) -> int:
        return sum(layer.quantised for layer in self.layers) + self.other_bytes

    @property
    def huffman(self) -> int:
        return sum(layer.huffman for layer in self.layers) + self.other_bytes

    def as_dict(self) -> dict:
        return {"layers": [dict(vars(layer), density=layer.density) for layer in self.layers],
                "other_params": self.other_params, "other_bytes": self.other_bytes, "params": self.params,
                "original": self.original, "pruned": self.pruned, "quantised": self.quantised,
                "huffman": self.huffman}


def stage_sizes(state: dict[str, torch.Tensor], shared: dict[str, "Shared"],
                index_bits: dict[str, int] | None = None, *, data: bytes | None = None) -> StageSizes:
    """Bytes after pruning, quantisation and Huffman coding (the real streams), per layer and in total.

    Given `data` (the bytes `encode` made of the same state and shared weights), the Huffman sizes are read from
    its records instead of coding the streams again (AlexNet: seconds saved). The file is `huffman` bytes plus
    the header (56 bytes) and the JSON section (see `inspect`).
    """
    index_bits = _check_index_bits(index_bits)
    layers = _prepare_layers(state, shared, index_bits, check_values=False)
    records = {}
    if data is not None:
        records = {r["name"]: r for r in _parse(data, "<bytes>")[0]["tensors"] if "bits" in r}
        if set(records) != set(layers):
            raise ValueError(f"data holds compressed tensors {sorted(records)}, but shared names {sorted(layers)}")
    rows = []
    for name, layer in layers.items():
        s = layer.shared
        entries = layer.gaps.numel()
        if name in records:
            if records[name]["index"]["count"] != entries:
                raise ValueError(f"{name}: data has {records[name]['index']['count']} entries, shared gives {entries}")
            index_size, label_size = (stored_bytes(**records[name][key]) for key in ("index", "labels"))
        else:
            index_size = huffman_encode(layer.gaps, 1 << layer.index_bits).size_bytes
            label_size = huffman_encode(layer.entry_labels, layer.codebook.numel()).size_bytes
        codebook = 4 * layer.codebook.numel()
        params = s.mask.numel()
        rows.append(LayerSizes(
            name=name, kind=s.kind, params=params, surviving=s.labels.numel(), fillers=layer.fillers, bits=s.bits,
            index_bits=layer.index_bits, original=4 * params,
            pruned=math.ceil(entries * (32 + layer.index_bits) / 8),
            quantised=math.ceil(entries * (s.bits + layer.index_bits) / 8) + codebook,
            huffman=index_size + label_size + codebook,
            index_huffman=index_size, labels_huffman=label_size, codebook=codebook))
    others = [t for name, t in state.items() if name not in layers]
    return StageSizes(tuple(rows), sum(t.numel() for t in others),
                      sum(t.numel() * t.element_size() for t in others))


# ---- internals ----------------------------------------------------------------------------------------------

def _check_index_bits(index_bits: dict[str, int] | None) -> dict[str, int]:
    merged = dict(DEFAULT_INDEX_BITS)
    if index_bits is not None:
        if not isinstance(index_bits, dict):
            raise ValueError(f"index_bits must be a dict by layer kind, e.g. {DEFAULT_INDEX_BITS}; got {index_bits!r}")
        merged.update(index_bits)
    for kind, bits in merged.items():
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
            raise ValueError(f"index_bits[{kind!r}] must be an integer from 1 to 16, got {bits!r}")
    return merged


def _prepare_layers(state, shared, index_bits, *, check_values: bool) -> dict[str, _Layer]:
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ValueError("state must be a state dict: parameter name -> tensor")
    layers = {}
    for name, s in shared.items():
        if name not in state:
            raise ValueError(f"shared weight {name!r} is not in the state dict; its keys start "
                             f"{list(state)[:5]}")
        _check_shared(name, s, state[name], index_bits)
        mask, labels = s.mask.detach().cpu().to(torch.bool), s.labels.detach().cpu().to(torch.int64)
        codebook = s.codebook.detach().cpu().to(torch.float32)
        if check_values:
            dense = torch.zeros(mask.numel(), dtype=torch.float32)
            dense[mask.flatten()] = codebook[labels]
            if not torch.equal(dense.view(mask.shape), state[name].detach().cpu().to(torch.float32)):
                raise ValueError(f"{name}: the weights in the state dict differ from codebook[labels] at the mask "
                                 f"(and 0 elsewhere); set them with share_weights (or after finetune_centroids) "
                                 f"before encoding, so the file decodes to this model")
        gaps, entry_labels = relative_indices(mask, labels, index_bits[s.kind])
        # Only the codebook entries in use are stored (a layer of 99 surviving weights needs no 256-entry table):
        # labels are renumbered in order over those entries, the fillers' 0 first.
        used = torch.unique(torch.cat([entry_labels.new_zeros(1), entry_labels]))
        compact = torch.zeros(1 << s.bits, dtype=torch.int64)
        compact[used] = torch.arange(used.numel())
        layers[name] = _Layer(name, s, index_bits[s.kind], gaps, compact[entry_labels], codebook[used].contiguous())
    return layers


def _check_shared(name: str, s, weight: torch.Tensor, index_bits: dict[str, int]) -> None:
    kind, bits = getattr(s, "kind", None), getattr(s, "bits", None)
    if kind not in index_bits:
        raise ValueError(f"{name}: kind must be one of {sorted(index_bits)}, got {kind!r}")
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"{name}: bits must be an integer from 1 to 16, got {bits!r}")
    if tuple(s.mask.shape) != tuple(weight.shape):
        raise ValueError(f"{name}: mask shape {tuple(s.mask.shape)} differs from the weight's {tuple(weight.shape)}")
    if s.codebook.dim() != 1 or s.codebook.numel() != 1 << bits:
        raise ValueError(f"{name}: a {bits}-bit codebook has {1 << bits} entries, got shape "
                         f"{tuple(s.codebook.shape)}")
    if float(s.codebook[0]) != 0.0:
        raise ValueError(f"{name}: codebook entry 0 must be exactly 0.0 (reserved for the sparse format's fillers), "
                         f"got {float(s.codebook[0])}")
    _check_finite(name + " codebook", s.codebook)
    surviving = int(s.mask.sum())
    if s.labels.dim() != 1 or s.labels.numel() != surviving:
        raise ValueError(f"{name}: labels must hold one entry per surviving weight ({surviving}), got shape "
                         f"{tuple(s.labels.shape)}")
    if surviving and (int(s.labels.min()) < 1 or int(s.labels.max()) >= 1 << bits):
        raise ValueError(f"{name}: labels must lie in [1, {1 << bits}) (0 is the fillers'), got "
                         f"{int(s.labels.min())}..{int(s.labels.max())}")


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} holds NaN or infinite values; a compressed file stores finite tensors only")


def _dtype_name(tensor: torch.Tensor, name: str) -> str:
    dtype = str(tensor.dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise ValueError(f"{name}: dtype {tensor.dtype} cannot be stored; supported: {', '.join(_DTYPES)}")
    return dtype


def _stream_record(stream: HuffmanStream) -> dict:
    return {"count": stream.count, "nbits": stream.nbits, "alphabet": stream.alphabet,
            "block_size": stream.block_size}


def _read_stream(payload: bytes, offset: int, record: dict) -> tuple[HuffmanStream, int]:
    count, nbits, alphabet = int(record["count"]), int(record["nbits"]), int(record["alphabet"])
    block_size = int(record.get("block_size", DEFAULT_BLOCK_SIZE))
    size = stored_bytes(alphabet, count, nbits, block_size)
    if offset + size > len(payload):
        raise ValueError("a stream runs past the end of the file")
    stream = HuffmanStream.from_bytes(memoryview(payload)[offset:offset + size], alphabet=alphabet, count=count,
                                      nbits=nbits, block_size=block_size)
    return stream, offset + size


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _frombuffer(payload: bytes, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    n = math.prod(shape)
    size = n * _itemsize(dtype)
    if offset + size > len(payload):
        raise ValueError("a tensor runs past the end of the file")
    if n == 0:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(bytearray(payload[offset:offset + size]), dtype=dtype).view(shape).clone()


def _parse(data: bytes, source: str) -> tuple[dict, bytes, int]:
    """Check header, checksum and JSON; return (document, payload, json length). One-line errors."""
    if sys.byteorder != "little":
        raise CompressedFileError(f"{source}: compressed files are read on little-endian machines only")
    if len(data) < HEADER_BYTES:
        if len(data) >= len(MAGIC) and data[:len(MAGIC)] != MAGIC:
            raise CompressedFileError(f"{source}: not a cnnzoo compressed file (wrong magic bytes)")
        raise CompressedFileError(f"{source}: too short for a cnnzoo compressed file ({len(data)} bytes; "
                                  f"the header alone is {HEADER_BYTES})")
    magic, version, _flags, json_len, payload_len, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CompressedFileError(f"{source}: not a cnnzoo compressed file (wrong magic bytes)")
    if version > FORMAT_VERSION or version < 1:
        raise CompressedFileError(f"{source}: format version {version}, but this cnnzoo reads versions 1 to "
                                  f"{FORMAT_VERSION}; upgrade cnnzoo to read it")
    if len(data) != HEADER_BYTES + payload_len:
        raise CompressedFileError(f"{source}: damaged: {len(data)} bytes, but the header says "
                                  f"{HEADER_BYTES + payload_len} (truncated or appended to)")
    payload = data[HEADER_BYTES:]
    if hashlib.sha256(data[:_HASHED] + payload).digest() != digest:
        raise CompressedFileError(f"{source}: damaged: checksum differs (SHA-256 of the contents does not match "
                                  f"the header)")
    try:
        document = json.loads(zlib.decompress(payload[:json_len]).decode())
        if not isinstance(document, dict) or not {"model", "model_options", "meta", "tensors"} <= document.keys():
            raise ValueError("missing keys")
    except (zlib.error, UnicodeDecodeError, ValueError) as e:
        raise CompressedFileError(f"{source}: damaged: the JSON section does not parse ({e})") from None
    return document, payload, json_len
