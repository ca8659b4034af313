"""What the SqueezeNet paper's "0.66 MB (363x)" and "0.47 MB (510x)" are made of, from the authors' own file.

    python benchmarks/squeezenet_release.py PATH/compressed_SqueezeNet.net

The file is the release of github.com/songhan/SqueezeNet-Deep-Compression (675,763 bytes; not shipped with
cnnzoo). The script reads it (cnnzoo.compress.release), accounts for its bytes, then compresses its trained
weights with `cnnzoo.compress` at the release's own per-layer densities, 8 and 6 bits, with the release's 4-bit
gaps and Deep Compression's 8-bit ones, and prints each stage's size beside the release's file and the papers'
figures: the 8-bit release is the "after quantisation" stage (no Huffman coding), which `compress` computes too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PAPER_MB = {8: 0.66, 6: 0.47}  # Iandola et al. 2016, Table 2 (363x and 510x of AlexNet's 240 MB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path, help="compressed_SqueezeNet.net")
    args = parser.parse_args()

    from cnnzoo.compress import compress
    from cnnzoo.compress.release import CODE_BITS, GAP_BITS, read_released_squeezenet

    state, layers = read_released_squeezenet(args.release)
    size = args.release.stat().st_size
    weights = sum(layer.weights for layer in layers)
    entries = sum(layer.entries for layer in layers)
    nonzero = sum(layer.nonzero for layer in layers)
    biases = sum(v.numel() for k, v in state.items() if k.endswith(".bias"))
    codebooks = len(layers) * 4 * 2**CODE_BITS
    print(f"release: {size:,} bytes = {4 * len(layers)} (counts) + {codebooks:,} (codebooks, {2**CODE_BITS} float32 "
          f"x {len(layers)}) + {4 * biases:,} (biases) + {sum(l.entries + (l.entries - 1) // 2 + 1 for l in layers):,}"
          f" ({entries:,} entries x {CODE_BITS}-bit code + {GAP_BITS}-bit gap, {entries - nonzero:,} of them fillers)")
    print(f"release: {nonzero:,} of {weights:,} weights kept ({nonzero / weights:.1%}); no Huffman coding")
    densities = tuple(layer.nonzero / layer.weights for layer in layers)
    with tempfile.TemporaryDirectory() as folder:  # compress reads the release itself (pretrained=PATH)
        print(f"\n{'bits':>4} {'gap bits':>8} {'after quantisation':>19} {'after Huffman (file)':>21} {'paper':>7}")
        for bits in (8, 6):
            for gap in (GAP_BITS, 8):
                result = compress("squeezenet1_0", Path(folder) / f"sq{bits}_{gap}.cnnz", density=densities,
                                  bits={"conv": bits}, index_bits={"conv": gap}, pretrained=str(args.release))
                print(f"{bits:>4} {gap:>8} {result.sizes.quantised / 1e6:>16.3f} MB {result.file_bytes / 1e6:>18.3f} MB"
                      f" {PAPER_MB[bits]:>4} MB")
    print(f"\nthe release's {CODE_BITS}-bit file, {size / 1e6:.3f} MB, is the paper's 0.66 MB: the 'after quantisation' "
          f"row at {CODE_BITS} bits and {GAP_BITS}-bit gaps is the same layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
