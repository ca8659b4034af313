"""Deep Compression (Han, Mao & Dally, ICLR 2016): magnitude pruning, trained quantisation by weight sharing, and
Huffman coding, written to a compressed file that decompresses to a dense model.

    from cnnzoo.compress import compress, decompress
    result = compress("squeezenet1_0", "squeezenet.cnnz", bits={"conv": 6})   # the paper's 33% density
    print(result.file_bytes, result.ratio_to_alexnet)
    decompress("squeezenet.cnnz", "squeezenet.pt")

The stages are `prune` (masks, retraining with masks held), `quantize` (k-means weight sharing, centroid
fine-tuning), `codec` (the file format) and `huffman`; `pipeline` runs them in order.
"""

from cnnzoo.compress.pipeline import (PAPER_SETTINGS, CompressResult, compress, compressed_info, decompress,
                                      density_spec)

__all__ = ["compress", "decompress", "compressed_info", "CompressResult", "PAPER_SETTINGS", "density_spec"]
