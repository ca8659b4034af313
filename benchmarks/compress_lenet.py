"""Does accuracy survive Deep Compression? LeNet-5 on the digits, trained, pruned, retrained, quantised, fine-tuned.

    .venv/bin/python benchmarks/compress_lenet.py                        # lenet5 and lenet5_modern, seeds 0-2
    .venv/bin/python benchmarks/compress_lenet.py --models lenet5_modern --seeds 0 --prune-epochs 8

Deep Compression (Han, Mao & Dally, ICLR 2016, arXiv:1510.00149) reports LeNet-5 on MNIST compressed 39x with no
loss of accuracy (Table 1; Table 2 gives the per-layer settings). Its LeNet-5 is Caffe's (conv1 20 5x5 filters,
conv2 50, ip1 800->500, ip2 500->10, 431K weights), not LeCun et al.'s; its Table 2 keeps 66% of conv1, 12% of
conv2, 8% of ip1 and 19% of ip2 after pruning, and quantises convolutions to 8 bits and fully connected layers to 5.
Here the same densities and bits are applied to cnnzoo's nets, layer for layer by role:

    lenet5 (LeCun et al. 1998)   c1 <- conv1, c3 (16 partial maps, each its own tensor) <- conv2, c5 <- ip1,
                                 f6 <- ip2 (the last trained layer; the RBF output's codes are fixed, not weights)
    lenet5_modern                c1 <- conv1, c3 <- conv2, c5 and f6 <- ip1 (the hidden fully connected part),
                                 output <- ip2

For each model and seed: train on `digits` with the fast recipe (baseline, not timed), prune by magnitude and retrain
with the masks held (`cnnzoo.compress.prune`), share weights by k-means and fine-tune the centroids
(`cnnzoo.compress.quantize`), evaluate. The timed part (compression plus both fine-tunings) must stay under 2 minutes.

Size: the float32 parameters against the compressed weights. The stored size comes from
`cnnzoo.compress.codec.stage_sizes` when that module exists; otherwise it is counted here: each shared layer's
surviving weights plus the filler zeros its relative indices need (a gap over 2**index_bits costs one filler), each at
weight bits + index bits, plus its float32 codebook (2**bits entries), plus every other parameter (biases, LeNet-5's
subsampling coefficients) at float32; before Huffman coding. The table says which.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnzoo.compress.prune import apply_masks, magnitude_masks, mask_density
from cnnzoo.compress.quantize import finetune_centroids, share_weights
from cnnzoo.train.checkpoint import load_checkpoint, model_from_checkpoint
from cnnzoo.train.trainer import Start, TrainConfig, train

# Deep Compression, Table 2 (LeNet-5): weights kept after pruning, by the paper's layer names.
PAPER_DENSITY = {"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19}
PAPER_BITS = {"conv": 8, "fc": 5}
INDEX_BITS = {"conv": 8, "fc": 5}  # Deep Compression Sec. 2: 8-bit gaps in convolutions, 5-bit in fc layers
ROLES = {
    "lenet5": {"c1.*": "conv1", "c3.*": "conv2", "c5.*": "ip1", "f6.*": "ip2"},
    "lenet5_modern": {"c1.*": "conv1", "c3.*": "conv2", "c5.*": "ip1", "f6.*": "ip1", "output.*": "ip2"},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ROLES), choices=list(ROLES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--prune-epochs", type=int, default=8, help="retraining epochs with the masks held")
    parser.add_argument("--quant-epochs", type=int, default=4, help="centroid fine-tuning epochs")
    parser.add_argument("--lr-scale", type=float, default=0.5, help="fine-tuning lr as a fraction of the recipe's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        rows = [study(model, seed, root / f"{model}-s{seed}", args) for model in args.models for seed in args.seeds]
    print_table(rows, args)
    return 0


def study(model: str, seed: int, out: Path, args) -> dict:
    from cnnzoo.train.recipes import recipe_for

    common = dict(model=model, data="digits", recipe="fast", seed=seed, quiet=True, threads=args.threads)
    clock = time.perf_counter()
    base = train(TrainConfig(**common, out=str(out / "base")))
    print(f"{model} seed {seed}: baseline trained in {time.perf_counter() - clock:.0f} s", flush=True)
    lr = recipe_for(model, "fast").lr * args.lr_scale
    began = time.perf_counter()
    net = model_from_checkpoint(out / "base" / "last.pt").train()
    densities = {pattern: PAPER_DENSITY[role] for pattern, role in ROLES[model].items()}
    masks = magnitude_masks(net, densities)
    apply_masks(net, masks)
    pruned = train(TrainConfig(**common, epochs=args.prune_epochs, lr=lr, out=str(out / "prune")),
                   start=Start(state=net.state_dict(), masks=masks, source="pruned to Deep Compression's densities"))
    net = model_from_checkpoint(out / "prune" / "last.pt").train()
    shared = share_weights(net, masks, PAPER_BITS)
    quantised = _error(net, common)
    tuned, shared = finetune_centroids(TrainConfig(**common, epochs=args.quant_epochs, lr=lr, out=str(out / "share")),
                                       net.state_dict(), shared)
    seconds = time.perf_counter() - began
    print(f"{model} seed {seed}: compressed and fine-tuned in {seconds:.0f} s", flush=True)
    state = load_checkpoint(out / "share" / "last.pt")["model_state"]
    float_bytes = 4 * sum(p.numel() for p in model_from_checkpoint(out / "base" / "last.pt").parameters())
    payload = load_checkpoint(out / "share" / "last.pt")
    size, how = stored_bytes(model, payload["model_options"], state, shared)
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    return {"model": model, "seed": seed, "base_err": base.history[-1]["val_top1_err"],
            "pruned_err": pruned.history[-1]["val_top1_err"], "quantised_err": quantised,
            "final_err": tuned.history[-1]["val_top1_err"], "float_bytes": float_bytes, "bytes": size, "how": how,
            "kept": kept, "seconds": seconds, "densities": mask_density(masks)}


def _error(net, common) -> float:
    """Test top-1 error (%) of a model as it stands, on the digits' test split, as the trainer fits it."""
    from cnnzoo.data import fit, fit_mode, load_dataset, make_loader
    from cnnzoo.registry import model_card
    from cnnzoo.train.evaluate import errors, predict

    card = model_card(common["model"])
    train_data = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    mode = fit_mode(train_data, card.input_size)
    loader = make_loader(fit(test, card.input_size, mode=mode, augment=None), 256, train=False, augment=None,
                         drop_last=False, device=torch.device("cpu"), seed=0)
    probs, labels = predict(net.eval(), loader)
    return 100 * errors(probs, labels).top1


def stored_bytes(model: str, options: dict, state, shared) -> tuple[int, str]:
    """Bytes of the compressed model: the real file (`cnnzoo.compress.codec.encode`) when the codec exists, else
    the count described in the module docstring."""
    try:
        from cnnzoo.compress.codec import encode
    except ImportError:
        encode = None
    if encode is not None:
        return len(encode(model, options, state, shared, index_bits=INDEX_BITS, meta={})), "the compressed file"
    total = 0
    for name, tensor in state.items():
        if name in shared:
            entry, index_bits = shared[name], INDEX_BITS[shared[name].kind]
            positions = torch.nonzero(entry.mask.flatten()).flatten()
            gaps = torch.diff(positions, prepend=positions.new_tensor([-1]))
            fillers = int(((gaps + 2 ** index_bits - 1) // 2 ** index_bits - 1).sum())
            entries = positions.numel() + fillers
            total += (entries * (entry.bits + index_bits) + 7) // 8 + 4 * entry.codebook.numel()
        elif tensor.is_floating_point():
            total += 4 * tensor.numel()
    return total, "counted here, before Huffman coding"


def print_table(rows: list[dict], args) -> None:
    print(f"\nLeNet-5 on digits, Deep Compression's LeNet-5 settings (densities {PAPER_DENSITY}, bits {PAPER_BITS}, "
          f"index bits {INDEX_BITS}); retrain {args.prune_epochs} epochs, centroids {args.quant_epochs} epochs, "
          f"lr x{args.lr_scale}; {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<14} {'seed':>4} {'base err':>8} {'pruned':>7} {'quant.':>7} {'final':>7} {'lost':>6} "
          f"{'kept':>6} {'float32':>9} {'stored':>8} {'ratio':>6} {'time':>6}")
    for r in rows:
        print(f"{r['model']:<14} {r['seed']:>4} {r['base_err']:7.2f}% {r['pruned_err']:6.2f}% "
              f"{r['quantised_err']:6.2f}% {r['final_err']:6.2f}% {r['final_err'] - r['base_err']:+5.2f} "
              f"{100 * r['kept']:5.1f}% {r['float_bytes']:>9,} {r['bytes']:>8,} {r['float_bytes'] / r['bytes']:5.1f}x "
              f"{r['seconds']:5.1f}s")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        lost = statistics.median(r["final_err"] - r["base_err"] for r in mine)
        ratio = statistics.median(r["float_bytes"] / r["bytes"] for r in mine)
        slowest = max(r["seconds"] for r in mine)
        print(f"{model}: median over {len(mine)} seed(s): {ratio:.1f}x smaller, {lost:+.2f} points of test error; "
              f"compression and fine-tuning {slowest:.0f} s at most (size {mine[0]['how']})")
    print("per-layer densities kept:", {k: round(v, 3) for k, v in rows[0]["densities"].items()})


if __name__ == "__main__":
    sys.exit(main())
