"""The compressed file format and its Huffman coding: round trips, exact decoding of a real pruned and quantised
LeNet-5, the sizes stage by stage, and every refusal of a foreign or damaged file."""

import hashlib
import math
import struct
import zlib

import pytest
import torch

import cnnzoo
from cnnzoo.compress.codec import (HEADER_BYTES, MAGIC, CompressedFileError, absolute_positions, decode, encode,
                                   inspect, read_compressed, relative_indices, stage_sizes, write_compressed)
from cnnzoo.compress.huffman import (MAX_CODE_LENGTH, HuffmanStream, code_lengths, entropy_bits, huffman_decode,
                                     huffman_decode_many, huffman_encode)
from cnnzoo.compress.prune import apply_masks, magnitude_masks
from cnnzoo.compress.quantize import Shared, share_weights


def skewed(n, alphabet, scale, seed=0):
    """Symbols peaked in the middle of the alphabet, as quantised weights are."""
    g = torch.Generator().manual_seed(seed)
    p = torch.exp(-torch.abs(torch.arange(alphabet, dtype=torch.float64) - alphabet / 2) / scale)
    return torch.multinomial(p / p.sum(), n, replacement=True, generator=g)


def random_shared(shape, density, bits, kind, seed=0):
    """A Shared with a random mask (long runs of zeros when density is low) and random labels and codebook."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < density
    codebook = torch.cat([torch.zeros(1), torch.randn(2 ** bits - 1, generator=g)])
    labels = torch.randint(1, 2 ** bits, (int(mask.sum()),), generator=g)
    return Shared(codebook=codebook, labels=labels, mask=mask, kind=kind, bits=bits)


def file_of(shared_by_name, extra=None):
    state = {name: s.dense() for name, s in shared_by_name.items()}
    state.update(extra or {})
    return state, encode("toy", {"num_classes": 3}, state, shared_by_name, meta={"note": "test"})


# ---- Huffman --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, alphabet, block", [(1, 4, 4096), (4096, 256, 4096), (4097, 256, 4096),
                                                (10_000, 32, 1000), (3, 2, 1), (50_000, 256, 4096)])
def test_huffman_round_trip(n, alphabet, block):
    symbols = skewed(n, alphabet, alphabet / 8, seed=n)
    stream = huffman_encode(symbols, alphabet, block_size=block)
    assert torch.equal(huffman_decode(stream), symbols)
    again = HuffmanStream.from_bytes(stream.to_bytes(), alphabet=alphabet, count=n, nbits=stream.nbits,
                                     block_size=block)
    assert torch.equal(huffman_decode(again), symbols)
    assert len(stream.to_bytes()) == stream.size_bytes


def test_huffman_one_symbol_and_empty_streams_cost_no_bits():
    one = huffman_encode(torch.full((1000,), 7), 16)
    assert one.nbits == 0 and one.data == b""
    assert torch.equal(huffman_decode(one), torch.full((1000,), 7))
    empty = huffman_encode(torch.zeros(0, dtype=torch.int64), 16)
    assert huffman_decode(empty).numel() == 0
    mixed = [one, empty, huffman_encode(torch.tensor([1, 2, 2, 3]), 4)]
    assert [t.tolist() for t in huffman_decode_many(mixed)] == [[7] * 1000, [], [1, 2, 2, 3]]


def test_code_lengths_are_limited_and_form_a_complete_prefix_code():
    fibonacci = [1, 1]
    while len(fibonacci) < 30:  # Fibonacci counts give the deepest Huffman tree: 29 bits unlimited
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    lengths = code_lengths(torch.tensor(fibonacci))
    assert int(lengths.max()) == MAX_CODE_LENGTH
    assert sum(2.0 ** -int(l) for l in lengths) == 1.0
    counts = torch.tensor(fibonacci)
    symbols = torch.repeat_interleave(torch.arange(30), counts)[torch.randperm(int(counts.sum()))[:200_000]]
    stream = huffman_encode(symbols, 30)
    assert torch.equal(huffman_decode(stream), symbols)


def test_huffman_beats_fixed_width_and_comes_within_1_percent_of_entropy():
    symbols = skewed(200_000, 256, 6.0)
    stream = huffman_encode(symbols, 256)
    bound = entropy_bits(symbols, 256)
    assert stream.nbits < 8 * symbols.numel() * 0.8
    assert bound <= stream.nbits <= 1.01 * bound
    assert stream.size_bytes <= math.ceil(1.01 * bound / 8) + stream.table_bytes + stream.offsets_bytes


def test_huffman_refuses_bad_symbols():
    with pytest.raises(ValueError, match=r"lie in \[0, 4\)"):
        huffman_encode(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        huffman_encode(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError, match="takes"):
        HuffmanStream.from_bytes(b"\0" * 3, alphabet=4, count=10, nbits=20)


# ---- relative indices -----------------------------------------------------------------------------------------

def test_relative_indices_insert_fillers_where_a_gap_overflows():
    mask = torch.zeros(24, dtype=torch.bool)
    mask[[2, 3, 20]] = True
    gaps, labels = relative_indices(mask, torch.tensor([5, 6, 7]), index_bits=3)
    # 2 zeros skipped, then 0, then 16 > 7: fillers at positions 11 and 19 (7 zeros skipped before each)
    assert gaps.tolist() == [2, 0, 7, 7, 0]
    assert labels.tolist() == [5, 6, 0, 0, 7]
    assert absolute_positions(gaps).tolist() == [2, 3, 11, 19, 20]


# ---- the file -------------------------------------------------------------------------------------------------

def test_round_trip_with_gaps_overflowing_5_and_8_bits_and_an_empty_layer():
    shared = {"conv.weight": random_shared((64, 32, 3, 3), 0.004, 8, "conv", seed=1),
              "fc.weight": random_shared((100, 300), 0.02, 5, "fc", seed=2),
              "empty.weight": random_shared((10, 10), 0.0, 4, "fc", seed=3)}
    bias = {"fc.bias": torch.randn(100), "bn.num_batches_tracked": torch.tensor(7), "half": torch.randn(5).half()}
    state, data = file_of(shared, bias)
    sizes = stage_sizes(state, shared)
    rows = {layer.name: layer for layer in sizes.layers}
    assert rows["conv.weight"].fillers > 0 and rows["fc.weight"].fillers > 0
    name, options, decoded, meta = decode(data)
    assert (name, options, meta) == ("toy", {"num_classes": 3}, {"note": "test"})
    assert list(decoded) == list(state)
    for key, tensor in state.items():
        assert decoded[key].dtype == tensor.dtype and torch.equal(decoded[key], tensor), key


def test_decoded_lenet5_gives_exactly_the_quantised_models_outputs():
    torch.manual_seed(0)
    model = cnnzoo.create_model("lenet5_modern").eval()
    masks = magnitude_masks(model, 0.1)
    apply_masks(model, masks)
    shared = share_weights(model, masks, {"conv": 8, "fc": 5})
    data = encode("lenet5_modern", {}, model.state_dict(), shared, meta={})
    name, options, state, _ = decode(data)
    rebuilt = cnnzoo.create_model(name, **options).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_encode_refuses_weights_that_are_not_the_codebooks():
    shared = {"fc.weight": random_shared((8, 8), 0.5, 3, "fc")}
    state = {"fc.weight": shared["fc.weight"].dense() + 1e-3}
    with pytest.raises(ValueError, match="differ from codebook"):
        encode("toy", {}, state, shared)
    with pytest.raises(ValueError, match="not in the state dict"):
        encode("toy", {}, {}, shared)
    with pytest.raises(ValueError, match="NaN"):
        encode("toy", {}, {"b": torch.tensor([float("nan")])}, {})
    with pytest.raises(ValueError, match="index_bits"):
        encode("toy", {}, {}, {}, index_bits={"fc": 0})


def test_stage_sizes_add_up_and_the_file_is_huffman_plus_header_and_json():
    shared = {"conv.weight": random_shared((32, 16, 3, 3), 0.3, 8, "conv"),
              "fc.weight": random_shared((50, 200), 0.08, 5, "fc")}
    state, data = file_of(shared, {"fc.bias": torch.randn(50)})
    sizes = stage_sizes(state, shared)
    assert stage_sizes(state, shared, data=data) == sizes
    for row in sizes.layers:
        entries = row.surviving + row.fillers
        assert row.original == 4 * row.params
        assert row.pruned == math.ceil(entries * (32 + row.index_bits) / 8)
        assert row.quantised == math.ceil(entries * (row.bits + row.index_bits) / 8) + 4 * 2 ** row.bits
        assert row.huffman == row.index_huffman + row.labels_huffman + row.codebook
        assert row.huffman < row.quantised < row.pruned < row.original
    assert sizes.other_bytes == 4 * 50
    assert sizes.huffman == sum(row.huffman for row in sizes.layers) + sizes.other_bytes
    info = inspect(data)
    assert len(data) == sizes.huffman + HEADER_BYTES + info.json_bytes == info.total_bytes
    assert info.model == "toy" and [t["name"] for t in info.tensors] == list(state)


# ---- files and refusals ---------------------------------------------------------------------------------------

@pytest.fixture
def good_file():
    shared = {"fc.weight": random_shared((20, 30), 0.2, 4, "fc")}
    return file_of(shared, {"fc.bias": torch.randn(20)})[1]


def reseal(data):
    """The same bytes with a checksum that fits them (to reach the checks after the checksum)."""
    return data[:24] + hashlib.sha256(data[:24] + data[HEADER_BYTES:]).digest() + data[HEADER_BYTES:]


def test_write_is_atomic_and_read_returns_the_bytes(tmp_path, good_file):
    path = tmp_path / "m.cnnz"
    write_compressed(path, good_file)
    assert read_compressed(path) == good_file
    assert [p.name for p in tmp_path.iterdir()] == ["m.cnnz"]
    with pytest.raises(CompressedFileError):
        write_compressed(tmp_path / "bad.cnnz", good_file[:-1])
    assert [p.name for p in tmp_path.iterdir()] == ["m.cnnz"]


def damaged_versions(data):
    json_len = struct.unpack_from("<I", data, 12)[0]
    bad_json = zlib.compress(b"{not json")
    rest = data[HEADER_BYTES + json_len:]
    head = struct.pack("<8sHHIQ", MAGIC, 1, 0, len(bad_json), len(bad_json) + len(rest))
    flipped = bytearray(data)
    flipped[-5] ^= 0x10
    return {
        "too short": (data[:20], "too short for a cnnzoo compressed file"),
        "foreign": (b"PK\x03\x04" + data[4:], "not a cnnzoo compressed file"),
        "newer": (reseal(data[:8] + struct.pack("<H", 99) + data[10:]), "format version 99"),
        "checksum": (bytes(flipped), "damaged: checksum differs"),
        "truncated": (data[:-3], "truncated or appended to"),
        "json": (reseal(head + b"\0" * 32 + bad_json + rest), "the JSON section does not parse"),
    }


@pytest.mark.parametrize("case", ["too short", "foreign", "newer", "checksum", "truncated", "json"])
def test_read_refuses_with_one_line_naming_the_file(tmp_path, good_file, case):
    data, message = damaged_versions(good_file)[case]
    path = tmp_path / "m.cnnz"
    path.write_bytes(data)
    with pytest.raises(CompressedFileError) as err:
        read_compressed(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    with pytest.raises(CompressedFileError, match=message.split(":")[0]):
        decode(data)


def test_read_refuses_a_missing_file(tmp_path):
    with pytest.raises(CompressedFileError, match="cannot read"):
        read_compressed(tmp_path / "absent.cnnz")
