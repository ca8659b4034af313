"""Deep Compression end to end: the file decompresses to exactly the quantised model, the papers' sizes are
reached from real files, and the command line writes, describes and refuses files as it should."""

import pytest
import torch

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.compress import PAPER_SETTINGS, compress, decompress, density_spec
from cnnzoo.compress.codec import CompressedFileError, read_compressed
from cnnzoo.compress.prune import apply_masks, magnitude_masks
from cnnzoo.compress.quantize import share_weights
from cnnzoo.train.checkpoint import load_checkpoint


def seeded(name, seed=0):
    torch.manual_seed(seed)
    return cnnzoo.create_model(name).eval()


def test_decompressed_model_is_exactly_the_quantised_one(tmp_path):
    result = compress("lenet5_modern", tmp_path / "l.cnnz")
    decompress(result.path, tmp_path / "l.pt")
    restored = cnnzoo.create_model("lenet5_modern").eval()
    restored.load_state_dict(load_checkpoint(tmp_path / "l.pt")["model_state"])
    # The same stages by hand, on the same seeded initialisation.
    model = seeded("lenet5_modern")
    settings = PAPER_SETTINGS["lenet5_modern"]
    masks = magnitude_masks(model, density_spec(model, settings.density))
    apply_masks(model, masks)
    share_weights(model, masks, settings.bits)
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    kept = {k: float(m.float().mean()) for k, m in masks.items()}
    assert kept["c3.0.weight"] == pytest.approx(0.12, abs=0.001) and kept["output.weight"] == pytest.approx(0.19, abs=0.002)


def test_stage_sizes_shrink_and_the_file_is_what_was_written(tmp_path):
    result = compress("lenet5_modern", tmp_path / "l.cnnz")
    s = result.sizes
    assert s.original == 4 * cnnzoo.count_params(cnnzoo.create_model("lenet5_modern"))
    assert s.original > s.pruned > s.quantised > s.huffman
    assert result.file_bytes == len(read_compressed(result.path)) == result.path.stat().st_size
    rows = result.rows()
    assert rows[-1]["layer"] == "total" and sum(r["params"] for r in rows[:-1]) == rows[-1]["params"]


def test_the_papers_sizes_from_real_files():
    """SqueezeNet 1.0 at 33% of weights kept: 8-bit codes and 4-bit gaps before Huffman coding (the layout of the
    authors' released 0.66 MB file) within 15% of 0.66 MB; at 6 bits, for which no file was released, the paper's
    0.47 MB lies between the Huffman-coded file and the stage before it; AlexNet at the paper's per-layer densities
    and 8/5 bits: within 15% of 6.9 MB (Iandola et al. 2016, Table 2)."""
    from cnnzoo.compress.pipeline import claim_file_sizes

    sizes = claim_file_sizes()
    assert sizes["squeezenet1_0@8"]["unencoded"] / 1e6 == pytest.approx(0.66, rel=0.15)
    assert sizes["squeezenet1_0@6"]["file"] < 0.47e6 < sizes["squeezenet1_0@6"]["unencoded"]
    assert sizes["alexnet"]["file"] / 1e6 == pytest.approx(6.9, rel=0.15)
    for label in ("squeezenet1_0@8", "squeezenet1_0@6", "alexnet"):
        assert sizes[label]["file"] < sizes[label]["unencoded"]
    assert sizes["squeezenet1_0@6"]["file"] < sizes["squeezenet1_0@8"]["file"]


def test_density_needs_one_value_per_layer_or_a_default():
    model = seeded("lenet5_modern")
    with pytest.raises(ValueError, match="3 densities given for 5 convolution and fully connected layers"):
        density_spec(model, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="no paper compressed it"):
        compress("resnet20", "unused.cnnz")


def test_cli_compress_info_decompress_and_refusals(tmp_path, capsys):
    out = tmp_path / "sq.cnnz"
    assert main(["compress", "lenet5_modern", "--out", str(out), "--bits", "conv=6,fc=4"]) == 0
    printed = capsys.readouterr().out
    assert "stage by stage" in printed and "smaller than AlexNet's 240 MB" in printed
    assert main(["info", str(out)]) == 0
    assert "cnnzoo compressed file" in capsys.readouterr().out
    assert main(["decompress", str(out), "--out", str(tmp_path / "l.pt")]) == 0
    assert load_checkpoint(tmp_path / "l.pt")["model"] == "lenet5_modern"
    damaged = tmp_path / "damaged.cnnz"
    data = bytearray(out.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(CompressedFileError, match="checksum"):
        read_compressed(damaged)
    foreign = tmp_path / "foreign.cnnz"
    foreign.write_bytes(b"PK\x03\x04 not ours")
    for argv, message in [(["decompress", str(damaged), "--out", str(tmp_path / "x.pt")], "checksum"),
                          (["decompress", str(foreign), "--out", str(tmp_path / "x.pt")], "not a cnnzoo compressed"),
                          (["compress", "resnet20", "--out", str(tmp_path / "r.cnnz")], "no paper compressed it"),
                          (["compress", "lenet5", "--out", str(out), "--bits", "conv=x"], "KIND=BITS"),
                          (["compress", "lenet5", "--out", str(out), "--data", "digits"], "go with --finetune")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "r.cnnz").exists()


def test_pretrained_weights_are_what_is_compressed(tmp_path):
    trained = seeded("lenet5_modern", seed=7)
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    mine = compress("lenet5_modern", tmp_path / "a.cnnz", pretrained=tmp_path / "weights.pt")
    init = compress("lenet5_modern", tmp_path / "b.cnnz")
    decompress(mine.path, tmp_path / "a.pt")
    state = load_checkpoint(tmp_path / "a.pt")["model_state"]
    kept = state["f6.1.weight"] != 0
    assert torch.equal(kept, magnitude_masks(trained, density_spec(trained, PAPER_SETTINGS["lenet5_modern"].density))
                       ["f6.1.weight"])
    assert mine.path.read_bytes() != init.path.read_bytes()
    from cnnzoo.compress import compressed_info

    assert compressed_info(mine.path)["meta"]["weights"].endswith("weights.pt")


def test_alexnet_paper_densities_keep_the_papers_weight_count():
    """Han et al. 2015 prune AlexNet from 61 million weights to 6.7 million (9x); the per-layer densities of
    PAPER_SETTINGS, applied to the real layers' sizes, must give that count."""
    from cnnzoo.analysis.counting import meta_model
    from cnnzoo.compress.prune import prunable_weights

    weights = prunable_weights(meta_model("alexnet"))
    kept = sum(round(d * w.numel()) for d, (_, w) in zip(PAPER_SETTINGS["alexnet"].density, weights.values()))
    total = sum(w.numel() for _, w in weights.values())
    assert len(weights) == len(PAPER_SETTINGS["alexnet"].density) == 8
    assert kept / 1e6 == pytest.approx(6.7, rel=0.02)
    assert total / kept == pytest.approx(9, rel=0.05)
