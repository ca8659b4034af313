"""Canonical Huffman coding of integer streams, vectorised with torch.

Deep Compression (Han, Mao & Dally, ICLR 2016, arXiv:1510.00149, Sec. 4) Huffman-codes two streams per layer: the
quantised weights (codebook labels) and the relative sparse indices, both far from uniform. This module builds the
code from the symbol counts, packs the bits without a Python loop over symbols, and decodes fast enough for AlexNet
(millions of symbols per stream).

The code is canonical (codes of one length are consecutive integers, shorter codes first, ties by symbol), so a
stream stores only each symbol's code length (5 bits per alphabet entry) and not the codes. Lengths are limited to
`MAX_CODE_LENGTH` = 16 bits (the issue allows up to 24; 16 keeps the decoder's table small and costs nothing
measurable on alphabets of at most 256 symbols) with the length adjustment of the JPEG standard (ITU T.81,
Annex K.3, "Adjust_BITS"), which moves the rarest symbols up to the limit and keeps the code complete.

Decoding is parallel over blocks: a stream is cut into blocks of `block_size` symbols (4096 by default) and the bit
offset where each block starts is stored (4 bytes a block, counted in the size). All blocks of all the streams given
to `huffman_decode_many` are decoded together, one symbol of every block per step: each step reads the next
`max_len` bits at every block's position (max_len: the stream's longest code) and looks them up in a table of
2**max_len entries that holds the symbol and its code length.

A stream with a single distinct symbol spends no bits per symbol: its table names the symbol, its count gives the
stream. An empty stream has no data and no table entries.
"""

from __future__ import annotations

import ctypes
import heapq
import math
from dataclasses import dataclass

import torch

MAX_CODE_LENGTH = 16      # longest code (JPEG's limit); the decoder's table has 2**(longest code) entries
LENGTH_FIELD_BITS = 5     # one code length (0..16) in the stored table
OFFSET_BYTES = 4          # one block's starting bit offset (uint32, little-endian)
DEFAULT_BLOCK_SIZE = 4096


@dataclass(frozen=True)
class HuffmanStream:
    """One Huffman-coded stream: the code lengths, the packed bits and the block offsets that decode it."""

    alphabet: int              # symbols are integers in [0, alphabet)
    count: int                 # number of symbols coded
    lengths: torch.Tensor      # uint8 [alphabet], code length per symbol (0: absent)
    data: bytes                # the codes, most significant bit first, padded with zero bits to a whole byte
    nbits: int                 # bits of `data` that are codes
    block_size: int
    block_offsets: torch.Tensor  # int64 [blocks - 1]: starting bit of blocks 1, 2, ... (block 0 starts at 0)

    @property
    def blocks(self) -> int:
        return _blocks(self.count, self.block_size)

    @property
    def table_bytes(self) -> int:
        return math.ceil(self.alphabet * LENGTH_FIELD_BITS / 8)

    @property
    def offsets_bytes(self) -> int:
        return _offsets_bytes(self.count, self.nbits, self.block_size)

    @property
    def size_bytes(self) -> int:
        """Bytes the stream takes stored: code-length table, block offsets and coded data."""
        return self.table_bytes + self.offsets_bytes + len(self.data)

    def to_bytes(self) -> bytes:
        """Table, offsets, data: the layout `from_bytes` reads back given alphabet, count, nbits and block_size."""
        offsets = self.block_offsets.to(torch.int64)
        return (_pack_fields(self.lengths.to(torch.int64), LENGTH_FIELD_BITS)
                + _tensor_bytes(offsets.to(torch.int32) if offsets.numel() else offsets.new_zeros(0, dtype=torch.int32))
                + self.data)

    @classmethod
    def from_bytes(cls, buf: bytes | memoryview, *, alphabet: int, count: int, nbits: int,
                   block_size: int = DEFAULT_BLOCK_SIZE) -> HuffmanStream:
        """Rebuild a stream from `to_bytes`'s output; ValueError if the sizes or the code table are inconsistent."""
        _check_alphabet(alphabet)
        if count < 0 or nbits < 0 or block_size < 1:
            raise ValueError(f"a Huffman stream needs count >= 0, nbits >= 0 and block_size >= 1; "
                             f"got count={count}, nbits={nbits}, block_size={block_size}")
        table = math.ceil(alphabet * LENGTH_FIELD_BITS / 8)
        offsets = _offsets_bytes(count, nbits, block_size)
        data = math.ceil(nbits / 8)
        if len(buf) != table + offsets + data:
            raise ValueError(f"a Huffman stream of {count} symbols and {nbits} bits takes {table + offsets + data} "
                             f"bytes; got {len(buf)}")
        buf = bytes(buf)
        lengths = _unpack_fields(buf[:table], LENGTH_FIELD_BITS, alphabet).to(torch.uint8)
        block_offsets = (torch.frombuffer(bytearray(buf[table:table + offsets]), dtype=torch.int32).to(torch.int64)
                         & 0xFFFFFFFF) if offsets else torch.zeros(0, dtype=torch.int64)
        stream = cls(alphabet, count, lengths, buf[table + offsets:], nbits, block_size, block_offsets)
        _check_stream(stream)
        return stream


def huffman_encode(symbols: torch.Tensor, alphabet: int, *, block_size: int = DEFAULT_BLOCK_SIZE) -> HuffmanStream:
    """Huffman-code a 1-D integer tensor of symbols in [0, alphabet) with a canonical, length-limited code."""
    _check_alphabet(alphabet)
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if not isinstance(symbols, torch.Tensor) or symbols.dim() != 1 or symbols.is_floating_point() \
            or symbols.is_complex() or symbols.dtype == torch.bool:
        raise ValueError("huffman_encode expects a 1-D integer tensor of symbols, got "
                         + (f"a {symbols.dim()}-D {symbols.dtype} tensor" if isinstance(symbols, torch.Tensor)
                            else type(symbols).__name__))
    symbols = symbols.detach().to("cpu", torch.int64)
    n = symbols.numel()
    if n and (int(symbols.min()) < 0 or int(symbols.max()) >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet}); got values from {int(symbols.min())} "
                         f"to {int(symbols.max())}")
    counts = torch.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(counts)
    empty = torch.zeros(0, dtype=torch.int64)
    if int((lengths > 0).sum()) <= 1:  # empty, or one distinct symbol: no bits per symbol
        return HuffmanStream(alphabet, n, lengths.to(torch.uint8), b"", 0, block_size, empty)
    codes = canonical_codes(lengths)
    sym_len = lengths.to(torch.int64)[symbols]
    sym_code = codes[symbols]
    ends = torch.cumsum(sym_len, 0)
    starts = ends - sym_len
    nbits = int(ends[-1])
    data = _pack_codes(sym_code, sym_len, starts, nbits)
    block_offsets = starts[block_size::block_size].clone()
    if nbits >= 2 ** 32:
        raise ValueError(f"a stream of {nbits} bits is too long for 32-bit block offsets; code it in parts")
    return HuffmanStream(alphabet, n, lengths.to(torch.uint8), data, nbits, block_size, block_offsets)


def huffman_decode(stream: HuffmanStream) -> torch.Tensor:
    """The int64 symbols of one stream."""
    return huffman_decode_many([stream])[0]


def huffman_decode_many(streams: list[HuffmanStream]) -> list[torch.Tensor]:
    """Decode several streams at once (all their blocks in parallel): one int64 tensor of symbols per stream."""
    out: list[torch.Tensor | None] = [None] * len(streams)
    coded = []
    for i, s in enumerate(streams):
        present = torch.nonzero(s.lengths).flatten()
        if s.count == 0:
            out[i] = torch.zeros(0, dtype=torch.int64)
        elif present.numel() == 1:
            out[i] = torch.full((s.count,), int(present[0]), dtype=torch.int64)
        elif present.numel() == 0:
            raise ValueError(f"a Huffman stream of {s.count} symbols has an empty code table")
        else:
            coded.append(i)
    if coded:
        for i, symbols in zip(coded, _decode_blocks([streams[i] for i in coded])):
            out[i] = symbols
    return out  # type: ignore[return-value]


def code_lengths(counts: torch.Tensor, limit: int = MAX_CODE_LENGTH) -> torch.Tensor:
    """Optimal prefix-code lengths (int64, 0 for unused symbols) for symbol counts, none longer than `limit`.

    One used symbol gets length 1 (the stream then needs no bits, see the module docstring).
    """
    counts = [int(c) for c in counts.tolist()]
    if any(c < 0 for c in counts):
        raise ValueError("symbol counts must be non-negative")
    used = [s for s, c in enumerate(counts) if c > 0]
    lengths = [0] * len(counts)
    if len(used) == 1:
        lengths[used[0]] = 1
    if len(used) <= 1:
        return torch.tensor(lengths, dtype=torch.int64)
    if len(used) > 2 ** limit:
        raise ValueError(f"{len(used)} distinct symbols cannot have codes of at most {limit} bits")
    # Huffman's construction over the used symbols; each heap entry carries the symbols below it
    heap = [(counts[s], s, [s]) for s in used]
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        for s in a:
            lengths[s] += 1
        for s in b:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, a + b))
        tie += 1
    if max(lengths) > limit:
        lengths = _limit_lengths(lengths, counts, used, limit)
    return torch.tensor(lengths, dtype=torch.int64)


def _limit_lengths(lengths: list[int], counts: list[int], used: list[int], limit: int) -> list[int]:
    """JPEG Annex K.3: move codes longer than `limit` up while keeping the code complete; rarest get longest."""
    longest = max(lengths)
    per_length = [0] * (longest + 1)
    for s in used:
        per_length[lengths[s]] += 1
    for i in range(longest, limit, -1):
        while per_length[i] > 0:
            j = i - 2
            while per_length[j] == 0:
                j -= 1
            per_length[i] -= 2       # two leaves at length i leave;
            per_length[i - 1] += 1   # one of them takes their parent's place,
            per_length[j + 1] += 2   # the other and a leaf from length j hang under that leaf's old place
            per_length[j] -= 1
    by_frequency = sorted(used, key=lambda s: (-counts[s], s))
    out = [0] * len(lengths)
    k = 0
    for length in range(1, limit + 1):
        for _ in range(per_length[length]):
            out[by_frequency[k]] = length
            k += 1
    return out


def canonical_codes(lengths: torch.Tensor) -> torch.Tensor:
    """The canonical code (int64 per symbol) for code lengths: shorter codes first, then by symbol."""
    lengths = lengths.to(torch.int64)
    order = sorted((int(lengths[s]), s) for s in torch.nonzero(lengths).flatten().tolist())
    codes = torch.zeros(lengths.numel(), dtype=torch.int64)
    code, previous = 0, order[0][0] if order else 0
    for length, s in order:
        code <<= length - previous
        codes[s] = code
        code += 1
        previous = length
    return codes


def entropy_bits(symbols: torch.Tensor, alphabet: int) -> float:
    """Shannon's bound for the stream: sum over symbols of -log2(frequency), in bits."""
    counts = torch.bincount(symbols.to(torch.int64), minlength=alphabet).to(torch.float64)
    n = counts.sum()
    p = counts[counts > 0] / n
    return float(-(counts[counts > 0] * torch.log2(p)).sum())


# ---- decoding -------------------------------------------------------------------------------------------------

def _lookup_table(lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Entry for every value of the next `max_len` bits: symbol << 5 | code length; and max_len."""
    lengths = lengths.to(torch.int64)
    max_len = int(lengths.max())
    codes = canonical_codes(lengths)
    present = torch.nonzero(lengths).flatten()
    span = 1 << (max_len - lengths[present])            # table entries each code covers
    first = codes[present] << (max_len - lengths[present])
    entry = (present << 5) | lengths[present]
    table = torch.zeros(1 << max_len, dtype=torch.int64)
    starts = torch.repeat_interleave(first, span)
    offsets = torch.arange(int(span.sum())) - torch.repeat_interleave(torch.cumsum(span, 0) - span, span)
    table[starts + offsets] = torch.repeat_interleave(entry, span)
    return table, max_len


def _decode_blocks(streams: list[HuffmanStream]) -> list[torch.Tensor]:
    tables, row_pos, row_table, row_len, buffers = [], [], [], [], []
    table_base, shift_base, masks = [], [], []
    byte_base = entries = 0
    for t, s in enumerate(streams):
        table, max_len = _lookup_table(s.lengths)
        tables.append(table)
        table_base.append(entries)
        entries += table.numel()
        shift_base.append(32 - max_len)
        masks.append((1 << max_len) - 1)
        nb = s.blocks
        row_pos += [8 * byte_base + o for o in [0] + s.block_offsets.tolist()]
        row_table += [t] * nb
        row_len += [s.block_size] * (nb - 1) + [s.count - s.block_size * (nb - 1)]
        buffers.append(s.data)
        byte_base += len(s.data)
    buf = torch.frombuffer(bytearray(b"".join(buffers) + b"\0" * 4), dtype=torch.uint8).to(torch.int64)
    words = (buf[:-3] << 24) | (buf[1:-2] << 16) | (buf[2:-1] << 8) | buf[3:]  # 32 bits starting at each byte
    last_word = words.numel() - 1
    table = torch.cat(tables)
    rows = torch.tensor(row_table, dtype=torch.int64)
    row_base = torch.tensor(table_base, dtype=torch.int64)[rows]
    row_shift = torch.tensor(shift_base, dtype=torch.int64)[rows]
    row_mask = torch.tensor(masks, dtype=torch.int64)[rows]
    pos = torch.tensor(row_pos, dtype=torch.int64)
    lengths_row = torch.tensor(row_len, dtype=torch.int64)
    steps = int(lengths_row.max())
    out = torch.empty(steps, len(row_pos), dtype=torch.int64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a step's ops touch a few thousand numbers: hand-offs between threads cost more
    try:                      # than they save (measured: 1 thread 1.5x faster than 2 on 3M + 3M symbols)
        for step in range(steps):  # one symbol of every block per step: the next max_len bits index the table
            word = torch.index_select(words, 0, torch.clamp(pos >> 3, max=last_word))
            entry = torch.index_select(table, 0, row_base + ((word >> (row_shift - (pos & 7))) & row_mask))
            out[step] = entry
            pos += entry & 31
    finally:
        torch.set_num_threads(threads)
    decoded = out.t().reshape(-1) >> 5          # block after block; the last block of a stream may be short
    symbols, start = [], 0
    for s in streams:
        nb = s.blocks
        rows = decoded[start * steps:(start + nb) * steps].view(nb, steps)[:, :s.block_size]
        symbols.append(rows.reshape(-1)[:s.count])  # a stream of several blocks has steps >= its block size
        start += nb
    return symbols


# ---- bit packing --------------------------------------------------------------------------------------------

def _pack_codes(codes: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, nbits: int) -> bytes:
    """Pack codes (at most 16 bits; up to 25 would do), MSB first, at their bit offsets: each touches <= 4 bytes."""
    nbytes = (nbits + 7) // 8
    byte = starts >> 3
    window = codes << (32 - lengths - (starts & 7))   # the code placed in the 32 bits starting at `byte`
    out = torch.zeros(nbytes + 4, dtype=torch.int64)
    for k in range(4):  # bits of different codes never overlap, so adding is OR-ing
        out.index_add_(0, byte + k, (window >> (24 - 8 * k)) & 0xFF)
    return _tensor_bytes(out[:nbytes].to(torch.uint8))


def _pack_fields(values: torch.Tensor, width: int) -> bytes:
    """Unsigned integers of `width` bits each, MSB first, padded to a whole byte."""
    n = values.numel()
    if n == 0:
        return b""
    shifts = torch.arange(width - 1, -1, -1)
    bits = ((values.to(torch.int64).unsqueeze(1) >> shifts) & 1).flatten()
    bits = torch.cat([bits, bits.new_zeros((-bits.numel()) % 8)]).view(-1, 8)
    byte = (bits << torch.arange(7, -1, -1)).sum(1)
    return _tensor_bytes(byte.to(torch.uint8))


def _unpack_fields(buf: bytes, width: int, n: int) -> torch.Tensor:
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    byte = torch.frombuffer(bytearray(buf), dtype=torch.uint8).to(torch.int64)
    bits = ((byte.unsqueeze(1) >> torch.arange(7, -1, -1)) & 1).flatten()[:n * width].view(n, width)
    return (bits << torch.arange(width - 1, -1, -1)).sum(1)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor (little-endian on the machines torch supports), without numpy."""
    t = t.detach().to("cpu").contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""


# ---- checks -------------------------------------------------------------------------------------------------

def _blocks(count: int, block_size: int) -> int:
    return -(-count // block_size)


def _offsets_bytes(count: int, nbits: int, block_size: int) -> int:
    """Stored block offsets: none for a stream without bits (empty, or one distinct symbol)."""
    return OFFSET_BYTES * max(_blocks(count, block_size) - 1, 0) if nbits else 0


def stored_bytes(alphabet: int, count: int, nbits: int, block_size: int) -> int:
    """Bytes `HuffmanStream.to_bytes` writes for a stream of these dimensions."""
    table = math.ceil(alphabet * LENGTH_FIELD_BITS / 8)
    return table + _offsets_bytes(count, nbits, block_size) + math.ceil(nbits / 8)


def _check_alphabet(alphabet: int) -> None:
    if not isinstance(alphabet, int) or not 1 <= alphabet <= 2 ** 16:
        raise ValueError(f"alphabet must be an integer in [1, 65536], got {alphabet!r}")


def _check_stream(s: HuffmanStream) -> None:
    lengths = s.lengths.to(torch.int64)
    if lengths.numel() and int(lengths.max()) > MAX_CODE_LENGTH:
        raise ValueError(f"a code length exceeds {MAX_CODE_LENGTH} bits")
    used = int((lengths > 0).sum())
    if s.count and used == 0:
        raise ValueError(f"a Huffman stream of {s.count} symbols has an empty code table")
    if used >= 2:
        kraft = sum(2 ** (MAX_CODE_LENGTH - int(l)) for l in lengths[lengths > 0].tolist())
        if kraft > 2 ** MAX_CODE_LENGTH:
            raise ValueError("the code lengths do not form a prefix code (Kraft sum above 1)")
    offsets = s.block_offsets
    if offsets.numel() and (bool((offsets[1:] < offsets[:-1]).any()) or int(offsets[-1]) > s.nbits):
        raise ValueError("block offsets are not increasing within the stream")
