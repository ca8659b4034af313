"""Deep Compression (Han, Mao & Dally, ICLR 2016): magnitude pruning, trained quantisation by weight sharing, and
Huffman coding, written to a compressed file that decompresses to a dense model."""
