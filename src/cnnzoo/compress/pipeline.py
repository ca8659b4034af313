"""Deep Compression end to end: prune, (retrain), share weights, (fine-tune the centroids), write the file.

    result = compress("squeezenet1_0", "sq.cnnz", density=0.33, bits={"conv": 6})
    print(result.table())
    decompress("sq.cnnz", "sq.pt")          # a cnnzoo checkpoint of the dense, quantised model

`PAPER_SETTINGS` holds the settings the papers state for the nets they compressed, checked against the papers:

- AlexNet (Deep Compression, Table 4; the densities are Han et al. 2015's Table 4): weights kept per layer conv1
  84%, conv2 38%, conv3 35%, conv4 37%, conv5 37%, fc6 9%, fc7 9%, fc8 25%; 8 bits for convolutions, 5 for fully
  connected layers; relative indices 8 bits (conv) and 5 bits (fc), Sec. 2. Reported: 240 MB -> 6.9 MB (35x).
- LeNet-5 (Deep Compression, Table 2; densities from Han et al. 2015, Table 2): conv1 66%, conv2 12%, fc1 8%,
  fc2 19%; 8 bits conv, 5 bits fc (the paper's 39x). The papers' "LeNet-5" is Caffe's 431k-parameter variant
  (conv 20, conv 50, fc 500, fc 10), not LeCun et al.'s net: here the densities go to the layers by role, C1 66%,
  C3 12% (all 16 of its partial maps), C5 8% (the big layer, 48k weights, as fc1 was), F6 19%; the RBF output of
  `lenet5` has fixed codes and is not pruned; in `lenet5_modern` C5 and F6 are the hidden fully connected part
  (8%, as ip1) and its output layer keeps 19% (as ip2), the mapping of `benchmarks/compress_lenet.py`.
- SqueezeNet 1.0 (Iandola et al. 2016, Sec. 4 and Table 2): "33% sparsity" with 8-bit (0.66 MB, 363x) or 6-bit
  (0.47 MB, 510x) quantisation. We read "33% sparsity" as 33% of the weights kept: 1,248,424 weights at 67% kept
  would need 836k x 6 bits = 0.63 MB for the labels alone, above the 0.47 MB reported, while 33% kept gives
  412k x 6 bits = 0.31 MB of labels plus indices, which fits.

The sizes a compressed file reaches depend on the weights: Huffman coding gains from a peaked distribution of
labels and gaps, which a trained net has and an initialised one has less of; `cnnzoo claims` says which it measured.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

__all__ = ["compress", "decompress", "CompressResult", "PAPER_SETTINGS", "Settings", "ALEXNET_BYTES",
           "density_spec", "compressed_info", "claim_file_sizes", "CLAIM_RUNS"]

ALEXNET_BYTES = 240e6  # "AlexNet 240 MB", the papers' baseline (61M float32 weights, in 10^6 bytes)


@dataclass(frozen=True)
class Settings:
    """A paper's compression settings for one net."""

    density: float | tuple[float, ...] | dict  # one fraction for every layer, one per prunable layer in order, or
    # {layer name or pattern: fraction}
    bits: dict  # bits per weight by layer kind ("conv", "fc")
    index_bits: dict  # bits per relative index by layer kind
    source: str


PAPER_SETTINGS = {
    "alexnet": Settings((0.84, 0.38, 0.35, 0.37, 0.37, 0.09, 0.09, 0.25), {"conv": 8, "fc": 5},
                        {"conv": 8, "fc": 5}, "Han et al. 2016 (Deep Compression), Table 4; Han et al. 2015, Table 4"),
    "lenet5": Settings({"c1.*": 0.66, "c3.*": 0.12, "c5.*": 0.08, "f6.*": 0.19}, {"conv": 8, "fc": 5},
                       {"conv": 8, "fc": 5}, "Han et al. 2016 (Deep Compression), Table 2, by layer role"),
    "lenet5_modern": Settings({"c1.*": 0.66, "c3.*": 0.12, "c5.*": 0.08, "f6.*": 0.08, "output.*": 0.19},
                              {"conv": 8, "fc": 5}, {"conv": 8, "fc": 5},
                              "Han et al. 2016 (Deep Compression), Table 2, by layer role"),
    "squeezenet1_0": Settings(0.33, {"conv": 8}, {"conv": 4, "fc": 5},
                              "Iandola et al. 2016, Sec. 4 and Table 2 (33% of weights kept, 8-bit; 6-bit for 0.47 MB); "
                              "4-bit relative indices as in the authors' released file (songhan/SqueezeNet-Deep-"
                              "Compression, compressed_SqueezeNet.net; cnnzoo.compress.release reads it)"),
}


@dataclass(frozen=True)
class CompressResult:
    """What `compress` wrote: the file, the settings, and the sizes stage by stage."""

    path: Path
    model: str
    model_options: dict
    densities: dict  # parameter name -> fraction kept
    bits: dict
    index_bits: dict
    sizes: object  # cnnzoo.compress.codec.StageSizes
    file_bytes: int
    seconds: float
    finetuned: bool

    @property
    def ratio_to_original(self) -> float:
        return self.sizes.original / self.file_bytes

    @property
    def ratio_to_alexnet(self) -> float:
        return ALEXNET_BYTES / self.file_bytes

    def as_dict(self) -> dict:
        return {"path": str(self.path), "model": self.model, "model_options": self.model_options,
                "densities": self.densities, "bits": self.bits, "index_bits": self.index_bits,
                "sizes": self.sizes.as_dict(), "file_bytes": self.file_bytes,
                "ratio_to_original": self.ratio_to_original, "ratio_to_alexnet": self.ratio_to_alexnet,
                "seconds": self.seconds, "finetuned": self.finetuned}

    def rows(self) -> list[dict]:
        """The papers' table: per compressed layer, then the total."""
        out = []
        for layer in self.sizes.layers:
            out.append({"layer": layer.name.removesuffix(".weight"), "kind": layer.kind, "params": layer.params,
                        "density": layer.density, "bits": layer.bits, "index_bits": layer.index_bits,
                        "original": layer.original, "pruned": layer.pruned, "quantised": layer.quantised,
                        "huffman": layer.huffman})
        s = self.sizes
        out.append({"layer": "biases, norms, other", "kind": "", "params": s.other_params, "density": 1.0,
                    "bits": 32, "index_bits": 0, "original": s.other_bytes, "pruned": s.other_bytes,
                    "quantised": s.other_bytes, "huffman": s.other_bytes})
        surviving = sum(layer.surviving for layer in s.layers) + s.other_params
        out.append({"layer": "total", "kind": "", "params": s.params, "density": surviving / max(s.params, 1),
                    "bits": None, "index_bits": None, "original": s.original, "pruned": s.pruned,
                    "quantised": s.quantised, "huffman": s.huffman})
        return out


def density_spec(model: nn.Module, density) -> float | dict[str, float]:
    """A density as `magnitude_masks` takes it, from one number, a sequence (one per prunable layer, in order), or a
    {layer name or pattern: fraction} dict."""
    from cnnzoo.compress.prune import prunable_weights

    if isinstance(density, (list, tuple)):
        names = list(prunable_weights(model))
        if len(density) != len(names):
            raise ValueError(f"{len(density)} densities given for {len(names)} convolution and fully connected "
                             f"layers ({', '.join(n.removesuffix('.weight') for n in names[:8])}"
                             f"{', ...' if len(names) > 8 else ''}); give one per layer, in order")
        return dict(zip(names, density))
    return density


def compress(source: str | os.PathLike, out: str | os.PathLike, *, density=None, bits: dict | None = None,
             index_bits: dict | None = None, finetune=None, seed: int = 0, pretrained=None) -> CompressResult:
    """Compress a registered model (its pretrained weights, else its seeded initialisation) or a checkpoint's
    weights into `out`.

    Args:
        density: fraction of weights kept: one number, one per prunable layer in order, or {name or pattern:
            fraction}; default the paper's for the nets in PAPER_SETTINGS, else required.
        bits: bits per weight by layer kind, e.g. {"conv": 8, "fc": 5} (the paper's default).
        index_bits: bits per relative index by kind (default {"conv": 8, "fc": 5}, Deep Compression Sec. 2).
        finetune: a `cnnzoo.train.TrainConfig` to retrain with the masks held (Han et al. 2015) and then to
            fine-tune the centroids (Deep Compression Sec. 3.3); its `out` is the folder of both runs
            ("prune" and "centroids" inside), each resumable with `resume=True`.
        pretrained: for a registered name, the weights to compress, as `create_model(pretrained=...)` takes them
            (True, a weights name such as "IMAGENET1K_V1", or a file); None compresses the seeded initialisation.
    """
    from cnnzoo.compress.codec import DEFAULT_INDEX_BITS, encode, stage_sizes, write_compressed
    from cnnzoo.compress.prune import apply_masks, magnitude_masks, prune_schedule
    from cnnzoo.compress.quantize import finetune_centroids, share_weights

    started = time.perf_counter()
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
    model, name, options, weights = _load(source, seed, pretrained)
    paper = PAPER_SETTINGS.get(name)
    if density is None:
        if paper is None:
            raise ValueError(f"{name}: no paper compressed it, so there are no settings to default to; give "
                             f"the density (the fraction of weights kept, e.g. 0.3)")
        density = paper.density
    bits = dict(bits) if bits is not None else dict(paper.bits if paper else {"conv": 8, "fc": 5})
    index_bits = dict(index_bits) if index_bits is not None else dict(paper.index_bits if paper else
                                                                          DEFAULT_INDEX_BITS)
    spec = density_spec(model, density)
    masks = magnitude_masks(model, spec)
    apply_masks(model, masks)
    if finetune is not None:
        config = _finetune_config(finetune, name, options)
        state, masks, _ = prune_schedule(replace(config, out=str(Path(config.out) / "prune")), [spec],
                                         state=model.state_dict())
        model.load_state_dict(state)
    shared = share_weights(model, masks, bits)
    if finetune is not None:
        _, shared = finetune_centroids(replace(config, out=str(Path(config.out) / "centroids")),
                                       model.state_dict(), shared)
        from cnnzoo.train.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(Path(config.out) / "centroids" / "last.pt")["model_state"])
    state = {k: v.detach() for k, v in model.state_dict().items()}
    meta = {"density": {k: float(m.float().mean()) for k, m in masks.items()}, "bits": bits,
            "source": str(source), "finetuned": finetune is not None, "weights": weights}
    data = encode(name, options, state, shared, index_bits=index_bits, meta=meta)
    write_compressed(out, data)  # checks the bytes before writing them
    sizes = stage_sizes(state, shared, index_bits, data=data)
    return CompressResult(path=out, model=name, model_options=options, densities=meta["density"], bits=bits,
                          index_bits=index_bits, sizes=sizes, file_bytes=len(data),
                          seconds=time.perf_counter() - started, finetuned=finetune is not None)


def decompress(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the dense model a compressed file holds as a cnnzoo checkpoint (loadable by every command)."""
    from cnnzoo.compress.codec import decode, read_compressed
    from cnnzoo.registry import create_model
    from cnnzoo.train.checkpoint import save_checkpoint

    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
    name, options, state, meta = decode(read_compressed(path))
    with torch.device("meta"):
        model = create_model(name, **options)
    missing = sorted(set(model.state_dict()) ^ set(state))
    if missing:
        raise ValueError(f"{path}: its tensors do not match {name}'s ({', '.join(missing[:4])}); the file was "
                         f"written for another version of the model")
    save_checkpoint(out, {"model": name, "model_options": options, "model_state": state,
                          "compression": {"source": str(path), "meta": meta}})
    return out


def compressed_info(path: str | os.PathLike) -> dict:
    """What a compressed file holds: model, options, per-layer records, sizes of its sections."""
    from cnnzoo.compress.codec import inspect, read_compressed

    info = inspect(read_compressed(path), source=os.fspath(path))
    return {"file": os.fspath(path), "version": info.version, "model": info.model, "model_options": info.model_options,
            "meta": info.meta, "tensors": info.tensors, "header_bytes": info.header_bytes,
            "json_bytes": info.json_bytes, "sections_bytes": info.sections_bytes, "total_bytes": info.total_bytes}


def _load(source, seed: int, pretrained=None) -> tuple[nn.Module, str, dict, str]:
    """(model with its weights, name, create_model options, which weights in words) from a registered name or a
    checkpoint file."""
    from cnnzoo.registry import create_model, model_card
    from cnnzoo.train.checkpoint import is_checkpoint_path, load_checkpoint, load_model_state

    text = os.fspath(source)
    if is_checkpoint_path(text):
        if pretrained is not None:
            raise ValueError("pretrained= names weights for a registered model; a checkpoint brings its own")
        payload = load_checkpoint(text)
        name, options = payload["model"], dict(payload["model_options"])
        model = create_model(name, **options)
        load_model_state(model, payload["model_state"], text)
        weights = "checkpoint"
    else:
        name, options = model_card(text).name, {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(name, pretrained=pretrained)
        weights = "initialisation" if pretrained is None else str(pretrained)
    model.eval()
    return model, name, options, weights


def _finetune_config(config, name: str, options: dict):
    from cnnzoo.train.trainer import TrainConfig

    if not isinstance(config, TrainConfig):
        raise ValueError(f"finetune must be a cnnzoo.train.TrainConfig, got {type(config).__name__}")
    if config.model != name:
        raise ValueError(f"finetune is for {config.model!r}, but the model compressed is {name!r}")
    if not config.out:
        raise ValueError("finetune needs an out folder (TrainConfig.out) for its two runs (prune, centroids)")
    return config


# --- the lecture's compression claims, from real files -------------------------------------------------------------
CLAIM_RUNS = {  # key: (model, bits override) at the paper's densities
    "squeezenet1_0@8": ("squeezenet1_0", {"conv": 8}),
    "squeezenet1_0@6": ("squeezenet1_0", {"conv": 6}),
    "alexnet": ("alexnet", None),
}
_CLAIMS_CACHE = "compression-claims.json"


def claim_file_sizes() -> dict[str, dict[str, int]]:
    """For each of CLAIM_RUNS, the bytes of the file `compress` writes (seeded initialisation, the papers' settings)
    and of the same weights before Huffman coding (the "after quantisation" stage: fixed-width codes and relative
    indices, codebooks, the rest as float32), as {"file": ..., "unencoded": ...}. Each file is written to a
    temporary folder and measured; cached in cnnzoo's cache folder for this exact source and torch."""
    import json
    import tempfile

    from cnnzoo.analysis.counting import _source_key, cache_dir

    key = _source_key()
    cache = cache_dir() / _CLAIMS_CACHE
    try:
        stored = json.loads(cache.read_text())
        if stored.get("key") == key and set(stored.get("sizes", {})) == set(CLAIM_RUNS):
            return {k: {"file": int(v["file"]), "unencoded": int(v["unencoded"])} for k, v in stored["sizes"].items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="cnnzoo-claims-") as folder:
        for label, (name, bits) in CLAIM_RUNS.items():
            result = compress(name, Path(folder) / f"{label}.cnnz", bits=bits)
            sizes[label] = {"file": result.file_bytes, "unencoded": result.sizes.quantised}
    try:
        from cnnzoo.train.checkpoint import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps({"key": key, "sizes": sizes}))
    except OSError:
        pass  # a cache that cannot be written is skipped
    return sizes
