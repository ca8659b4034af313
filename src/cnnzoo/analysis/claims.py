"""Every number of the lecture (L9 in docs/reference), recomputed from the real models and blocks.

`claims()` returns one `Claim` per statement: the lecture's figure as it states it (typed in: it is the claim),
the figure computed now by building the model or block on the meta device and counting or profiling it
(never typed in), and a verdict: "agrees", "differs" (the lecture rounds, or quotes another variant), or
"wrong" (the lecture's own arithmetic does not hold), with the correct computation in `explanation`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.analysis.profile import Profile, profile
from cnnzoo.registry import create_model, model_card

__all__ = ["Claim", "claims", "VERDICTS"]

VERDICTS = ("agrees", "differs", "wrong")
LECTURE = "L9"


@dataclass(frozen=True)
class Claim:
    """One statement of the lecture and its recomputation."""

    claim: str  # the statement, in our words
    lecture: str  # the lecture's figure as it states it
    computed: str  # the figure computed now from the real model or block
    verdict: str  # "agrees" | "differs" | "wrong"
    explanation: str = ""  # the correct computation where the verdict is not "agrees", or what it depends on
    lecture_value: float | None = None
    computed_value: float | None = None
    source: str = LECTURE

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        for name in ("lecture_value", "computed_value"):  # plain floats for scripts (json)
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


@functools.lru_cache(maxsize=None)
def _profile(name: str, batch_size: int = 1, **kwargs) -> Profile:
    if kwargs:
        return profile(_meta(name, **kwargs), input_size=model_card(name).input_size, batch_size=batch_size)
    return profile(name, batch_size=batch_size)


def _block_profile(block: nn.Module, input_size: tuple[int, int, int]) -> Profile:
    return profile(block, input_size=input_size, batch_size=1)


def _n(x: float) -> str:
    """Readable number: 34,848; 7.0M; 1.58G."""
    x = float(x)
    for scale, unit in ((1e9, "G"), (1e6, "M")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:,.0f}" if x == int(x) else f"{x:.3g}"


def _shape(shape: tuple[int, ...]) -> str:
    _, c, h, w = shape
    return f"{h}x{w}x{c}"


def _rel(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * abs(b)


def _first(p: Profile, type_name: str, index: int = 0):
    return [r for r in p.layers if r.type == type_name][index]


def _weight_layers(model: nn.Module, skip: tuple[str, ...] = ("downsample", "shortcut", "aux")) -> int:
    """Convolutions and linear layers on the main path (projection shortcuts and auxiliary heads excluded)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) and not any(s in name for s in skip)
               for name, m in model.named_modules())


def _alexnet() -> list[Claim]:
    p = _profile("alexnet")
    conv1, pool1, conv2 = _first(p, "Conv2d", 0), _first(p, "MaxPool2d", 0), _first(p, "Conv2d", 1)
    weights = conv1.params - conv1.output_shape[1]
    model = _meta("alexnet")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    k, s, groups = convs[0].kernel_size[0], convs[0].stride[0], convs[1].groups
    fit224 = (224 - k) / s + 1
    per_gpu = pool1.output_shape[1] // groups
    return [
        Claim("AlexNet CONV1 (96 11x11 filters, stride 4) on a 227x227x3 input gives a 55x55x96 volume",
              "55x55x96", _shape(conv1.output_shape),
              "agrees" if _shape(conv1.output_shape) == "55x55x96" else "differs",
              "" if _shape(conv1.output_shape) == "55x55x96" else f"(227-{k})/{s}+1 = {(227 - k) // s + 1}",
              55 * 55 * 96, float(conv1.output_shape[1] * conv1.output_shape[2] * conv1.output_shape[3])),
        Claim("AlexNet CONV1 parameters: 11*11*3*96 weights", "35K",
              f"{weights:,} weights (+{conv1.output_shape[1]} biases = {conv1.params:,})",
              "agrees" if _rel(weights, 35e3, 0.02) else "differs",
              f"{k}*{k}*3*{conv1.output_shape[1]} = {weights:,}; the lecture rounds", 35e3, float(weights)),
        Claim("The paper's 224x224 input does not fit CONV1: (224-11)/4+1 is not an integer",
              "(224-11)/4+1 = 54.25", f"({224}-{k})/{s}+1 = {fit224:g}", "agrees" if fit224 == 54.25 else "differs",
              "" if fit224 == 54.25 else f"(224-{k})/{s}+1 = {fit224:g}", 54.25, fit224),
        Claim("AlexNet POOL1 (3x3, stride 2) output, and it has no parameters", "27x27x96, 0 params",
              f"{_shape(pool1.output_shape)}, {pool1.params} params",
              "agrees" if (_shape(pool1.output_shape), pool1.params) == ("27x27x96", 0) else "differs",
              "", 0.0, float(pool1.params)),
        Claim("The two-GPU split: each GPU holds half the maps after POOL1 (CONV2 is grouped)", "2 x 48 x 27 x 27",
              f"{groups} x {per_gpu} x {pool1.output_shape[2]} x {pool1.output_shape[3]} (conv2 groups={groups}, "
              f"{_shape(conv2.output_shape)} out)",
              "agrees" if (groups, per_gpu) == (2, 48) else "differs", "", 48.0, float(per_gpu)),
    ]


def _zfnet() -> list[Claim]:
    alex, zf, zfl = _meta("alexnet"), _meta("zfnet"), _meta("zfnet_large")
    a1 = next(m for m in alex.modules() if isinstance(m, nn.Conv2d))
    z1 = next(m for m in zfl.modules() if isinstance(m, nn.Conv2d))
    widths = [m.out_channels for m in zfl.modules() if isinstance(m, nn.Conv2d)][2:5]
    small = [m.out_channels for m in zf.modules() if isinstance(m, nn.Conv2d)][2:5]
    ka, kz = a1.kernel_size[0], z1.kernel_size[0]
    change = f"{ka}x{ka} s{a1.stride[0]} -> {kz}x{kz} s{z1.stride[0]}"
    w = "/".join(map(str, widths))
    pz, pl = _profile("zfnet"), _profile("zfnet_large")
    return [
        Claim("ZFNet changes AlexNet's CONV1", "11x11 stride 4 -> 7x7 stride 2", change,
              "agrees" if change == "11x11 s4 -> 7x7 s2" else "differs", "", 7.0, float(z1.kernel_size[0])),
        Claim("ZFNet's CONV3,4,5 widths (the larger variant, zfnet_large)", "512, 1024, 512 (instead of 384, 384, 256)",
              f"{w} in zfnet_large ({_n(pl.params)} params, {_n(pl.macs)} MACs); zfnet (Fig. 3) has "
              f"{'/'.join(map(str, small))} ({_n(pz.params)} params)",
              "agrees" if widths == [512, 1024, 512] else "differs",
              "", 1024.0, float(widths[1])),
    ]


def _stack_vs_single(channels: int = 64, size: int = 32) -> list[Claim]:
    c = channels

    def stack(k: int, n: int) -> nn.Sequential:
        with torch.device("meta"):
            return nn.Sequential(*[nn.Conv2d(c, c, k, padding=k // 2, bias=False) for _ in range(n)])

    p3, p7 = _block_profile(stack(3, 3), (c, size, size)), _block_profile(stack(7, 1), (c, size, size))
    rf3, rf7 = p3.layers[-1].receptive_field, p7.layers[-1].receptive_field
    ratio3, ratio7 = p3.params / c**2, p7.params / c**2
    ok = (rf3, rf7, ratio3, ratio7) == (7, 7, 27, 49)
    return [
        Claim("Three stacked 3x3 convs (stride 1) see the same input region as one 7x7 conv", "receptive field 7x7",
              f"{rf3} (3 x 3x3) vs {rf7} (7x7)", "agrees" if rf3 == rf7 == 7 else "differs", "", 7.0, float(rf3)),
        Claim("...with fewer parameters: 3*(3^2 C^2) vs 7^2 C^2 (C channels in and out, no biases)",
              "27C^2 vs 49C^2", f"{ratio3:g}C^2 vs {ratio7:g}C^2 ({p3.params:,} vs {p7.params:,} at C={c})",
              "agrees" if ok else "differs", "", 27.0, float(ratio3)),
    ]


def _vgg16() -> list[Claim]:
    p = _profile("vgg16")
    c, h, w = p.input_size
    # The lecture counts the input and every CONV/POOL/FC output once (ReLUs are in place).
    counted = [r for r in p.layers if r.type in ("Conv2d", "MaxPool2d", "Linear")]
    acts = c * h * w + sum(r.output_shape[1] * (r.output_shape[2] * r.output_shape[3] if len(r.output_shape) == 4
                                                  else 1) for r in counted)
    conv = [r for r in p.layers if r.type == "Conv2d"]
    early = [r for r in counted if len(r.output_shape) == 4 and r.output_shape[2] >= h // 2]
    early_acts = sum(r.output_shape[1] * r.output_shape[2] * r.output_shape[3] for r in early)
    fc_params = sum(r.params for r in p.layers if r.type == "Linear")
    first_fc = _first(p, "Linear")
    return [
        Claim("VGG-16 activations per image, forward pass (input + every CONV/POOL/FC output)", "~24M",
              f"{_n(acts)}", "wrong" if not _rel(acts, 24e6, 0.1) else "agrees",
              f"summing the input and every CONV/POOL/FC output gives {acts:,} ({acts * 4 / 1e6:.0f} MB at 4 bytes); "
              "24M does not follow from the layer sizes", 24e6, float(acts)),
        Claim("VGG-16 memory per image, forward only, 4 bytes per activation", "~96MB / image",
              f"{acts * 4 / 1e6:.0f} MB (profiler, all tensors created incl. ReLU outputs: "
              f"{p.activation_bytes / 1e6:.0f} MB)", "wrong" if not _rel(acts * 4, 96e6, 0.1) else "agrees",
              f"{acts:,} x 4 bytes = {acts * 4 / 1e6:.0f} MB; 96MB is 24M x 4 from the mis-summed total",
              96e6, float(acts * 4)),
        Claim("VGG-16 parameters", "138M", _n(p.params), "agrees" if _rel(p.params, 138e6, 0.01) else "differs",
              "", 138e6, float(p.params)),
        Claim("Most VGG-16 memory is in the early CONV layers (224 and 112 resolution)", "most memory in early CONV",
              f"{early_acts / acts:.0%} of activations in {len(early)} of {len(counted)} layers",
              "agrees" if early_acts / acts > 0.5 else "differs", "", None, early_acts / acts),
        Claim("Most VGG-16 parameters are in the FC layers", "most params in late FC",
              f"{fc_params / p.params:.0%} in FC ({first_fc.params / p.params:.0%} in FC6 alone); "
              f"conv {sum(r.params for r in conv) / p.params:.0%}",
              "agrees" if fc_params / p.params > 0.5 else "differs", "", None, fc_params / p.params),
    ]


def _googlenet_depth(model: nn.Module) -> int:
    depth = 0
    for name, child in model.named_children():
        if name.startswith("aux"):
            continue
        if hasattr(child, "branch1"):  # an inception module: its deepest branch
            depth += max(sum(isinstance(m, nn.Conv2d) for m in b.modules())
                         for b in (child.branch1, child.branch2, child.branch3, child.branch4))
        else:
            depth += sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in child.modules())
    return depth


def _googlenet() -> list[Claim]:
    model = _meta("googlenet", aux_logits=False)
    depth = _googlenet_depth(model)
    params = sum(p.numel() for p in model.parameters())
    alex = _profile("alexnet").params
    ratio = alex / params
    return [
        Claim("GoogLeNet depth (layers with weights on the deepest path)", "22 layers", str(depth),
              "agrees" if depth == 22 else "differs", "", 22.0, float(depth)),
        Claim("GoogLeNet parameters, vs AlexNet", "5 million, 12x less than AlexNet",
              f"{_n(params)} (no aux heads); AlexNet {_n(alex)} -> {ratio:.1f}x less",
              "differs" if not _rel(params, 5e6, 0.1) else "agrees",
              f"60M / 12 = 5M, but the real net has {params:,} parameters: {alex:,} / {params:,} = {ratio:.1f}x",
              5e6, float(params)),
    ]


def _inception(size: int = 28, in_channels: int = 256) -> list[Claim]:
    from cnnzoo.models.googlenet import Inception, NaiveInception

    with torch.device("meta"):
        naive = NaiveInception(in_channels, 128, 192, 96)
        bottleneck = Inception(in_channels, 128, 64, 192, 64, 96, 64)
    shape = (in_channels, size, size)
    pn, pb = _block_profile(naive, shape), _block_profile(bottleneck, shape)
    dn, db = pn.layers[-1].output_shape[1], pb.layers[-1].output_shape[1]
    ok_d = (dn, db) == (672, 480)
    return [
        Claim("Inception on 28x28x256 (1x1 128, 3x3 192, 5x5 96, 3x3 pool): output depth, naive vs with 1x1 "
              "bottlenecks (64)", "672 vs 480", f"{dn} vs {db}", "agrees" if ok_d else "differs", "", 672.0, float(dn)),
        Claim("Naive inception module: conv multiply-adds (batch 1)", "854M", _n(pn.macs),
              "agrees" if _rel(pn.macs, 854e6, 0.01) else "differs", "", 854e6, float(pn.macs)),
        Claim("Inception module with 1x1 bottlenecks: conv multiply-adds (batch 1)", "358M", _n(pb.macs),
              "agrees" if _rel(pb.macs, 358e6, 0.01) else "wrong",
              "" if _rel(pb.macs, 358e6, 0.01) else "the per-conv products (H*W*C_out*C_in*k*k) sum to " + " + ".join(
                  f"{_shape(r.output_shape).replace('x', '*')}*{r.macs // math.prod(r.output_shape)}"
                  for r in pb.layers if r.type == "Conv2d") + f" = {pb.macs:,} ({_n(pb.macs)})", 358e6, float(pb.macs)),
    ]


def _global_pool() -> list[Claim]:
    with torch.device("meta"):
        gap = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    p = _block_profile(gap, (1000, 7, 7))
    out = p.layers[-1].output_shape
    return [Claim("Global average pooling turns 7x7x1000 into 1000 values with no parameters",
                  "7x7x1000 -> 1000, 0 params", f"7x7x1000 -> {out[1]}, {p.params} params",
                  "agrees" if (out[1], p.params) == (1000, 0) else "differs",
                  "", 0.0, float(p.params))]


def _resnet() -> list[Claim]:
    depths = {n: _weight_layers(_meta(n)) for n in ("resnet34", "resnet50", "resnet101", "resnet152")}
    cifar = _weight_layers(_meta("resnet1202"))
    ok = list(depths.values()) == [34, 50, 101, 152]
    return [
        Claim("ResNet depths for ImageNet (weight layers, shortcuts excluded)", "34, 50, 101, 152",
              ", ".join(map(str, depths.values())), "agrees" if ok else "differs", "", 152.0,
              float(depths["resnet152"])),
        Claim("ResNet depth on CIFAR-10", "1202 layers", str(cifar), "agrees" if cifar == 1202 else "differs",
              "", 1202.0, float(cifar)),
    ]


def _squeezenet() -> list[Claim]:
    sq, alex = _profile("squeezenet1_0").params, _profile("alexnet").params
    ratio = alex / sq
    mb = sq * 4 / 2**20
    return [
        Claim("SqueezeNet has AlexNet-level accuracy with far fewer parameters", "50x fewer parameters",
              f"{ratio:.1f}x ({_n(alex)} / {_n(sq)})", "agrees" if _rel(ratio, 50, 0.05) else "differs",
              "", 50.0, ratio),
        Claim("SqueezeNet uncompressed size at 32 bits per parameter", "4.8MB",
              f"{mb:.2f} MiB ({sq * 4 / 1e6:.2f} MB)", "agrees" if _rel(mb, 4.8, 0.02) else "differs",
              f"{sq:,} x 4 bytes = {sq * 4:,} bytes", 4.8, mb),
    ]


def _compression() -> list[Claim]:
    """SqueezeNet's 510x (and 363x) and AlexNet's 35x, from files `cnnzoo compress` writes at the papers' settings."""
    from cnnzoo.compress.pipeline import ALEXNET_BYTES, claim_file_sizes

    sizes = claim_file_sizes()
    basis = ("measured on files written from seeded initialisations (cnnzoo holds no trained ImageNet weights): "
             "Huffman coding gains from the peaked weight and gap distributions of a trained net, so a trained "
             "net's file differs; the paper's density, bits and index bits are used, 33% of weights kept")
    release = ("the paper's 0.66 MB is the authors' released file (songhan/SqueezeNet-Deep-Compression, 675,763 "
               "bytes = 660 KiB): 8-bit codes and 4-bit relative indices, no Huffman coding, so it is compared with "
               "the same stage here")
    no_release = ("no 6-bit file was released, so which stage the 0.47 MB counts is not known; compared with the "
                  "Huffman-coded file, Deep Compression's last stage")
    rows = []
    for label, bits, mb, ratio, source, stage, why in (
            ("squeezenet1_0@6", 6, 0.47, 510, LECTURE, "file", no_release),
            ("squeezenet1_0@8", 8, 0.66, 363, "Iandola et al. 2016, Table 2", "unencoded", release)):
        size, other = sizes[label][stage], sizes[label]["unencoded" if stage == "file" else "file"]
        words = {"file": "Huffman-coded file", "unencoded": "before Huffman coding"}
        computed = ALEXNET_BYTES / size
        rows.append(Claim(
            f"SqueezeNet + Deep Compression ({bits}-bit weights) is {ratio}x smaller than AlexNet",
            f"{ratio}x ({mb} MB)", f"{computed:.0f}x ({size / 1e6:.3f} MB, {words[stage]})",
            "agrees" if _rel(size / 1e6, mb, 0.15) else "differs",
            f"{ALEXNET_BYTES / 1e6:.0f} MB / {size:,} bytes; {why}; "
            f"{words['unencoded' if stage == 'file' else 'file']}: {other / 1e6:.3f} MB; {basis}",
            float(ratio), computed, source))
    size = sizes["alexnet"]["file"]
    computed = ALEXNET_BYTES / size
    rows.append(Claim(
        "AlexNet + Deep Compression is 35x smaller (240 MB to 6.9 MB)", "35x (6.9 MB)",
        f"{computed:.1f}x ({size / 1e6:.2f} MB file)", "agrees" if _rel(size / 1e6, 6.9, 0.15) else "differs",
        f"{ALEXNET_BYTES / 1e6:.0f} MB / {size:,} bytes; per-layer densities of Han et al. 2015 Table 4, 8-bit conv "
        f"and 5-bit fc weights; {basis.split(';')[0]}", 35.0, computed, "Iandola et al. 2016, Table 2; Han et al. "
        "2016, Table 4"))
    return rows


def _wide() -> list[Claim]:
    w, r = _profile("wide_resnet50_2"), _profile("resnet152")
    ew, er = model_card("wide_resnet50_2").top1_err, model_card("resnet152").top1_err
    better = ew is not None and er is not None and ew < er
    return [Claim("A 50-layer wide ResNet outperforms the 152-layer original", "WRN-50-2 > ResNet-152",
                  f"params {_n(w.params)} vs {_n(r.params)}, MACs {_n(w.macs)} vs {_n(r.macs)}; "
                  f"top-1 err (cards) {ew} vs {er}", "agrees" if better else "differs",
                  "" if better else f"by the cards' reported single-crop top-1 errors WRN-50-2 ({ew}%) does not beat "
                  f"ResNet-152 ({er}%); it roughly matches it with {w.macs / r.macs:.2f}x the MACs and "
                  f"{w.params / r.params:.2f}x the parameters", None, w.macs / r.macs)]


def _densenet() -> list[Claim]:
    block = _meta("densenet40_k12").features.denseblock1
    layers = list(block.values())
    k, c0 = layers[0].out_channels, block.in_channels
    inputs = [(layer.in_channels if hasattr(layer, "in_channels") else
               next(m for m in layer.modules() if isinstance(m, nn.Conv2d)).in_channels) for layer in layers]
    connections = sum((c - c0) // k + 1 for c in inputs)
    n = len(layers)
    formula = n * (n + 1) / 2
    return [Claim(f"A dense block of L layers has L(L+1)/2 direct connections (densenet40_k12 block 1, L={n})",
                  f"L(L+1)/2 = {formula:g}", f"{connections} (from each layer's input width)",
                  "agrees" if connections == formula else "differs", "", formula, float(connections))]


def _fractal() -> list[Claim]:
    rows = []
    for name in ("fractalnet20", "fractalnet40"):
        m = _meta(name)
        c, b = m.num_columns, len(m.blocks)
        deepest = sum(sum(isinstance(x, nn.Conv2d) for x in blk.columns[-1].modules()) for blk in m.blocks)
        rows.append(Claim(f"FractalNet depth (convs on the deepest column) is B*2^(C-1): {name} (B={b}, C={c})",
                          f"{b}*2^{c - 1} = {b * 2 ** (c - 1)}", str(deepest),
                          "agrees" if deepest == b * 2 ** (c - 1) else "differs", "", float(b * 2 ** (c - 1)),
                          float(deepest)))
    return rows


COMPLEXITY_NETS = ("alexnet", "vgg16", "googlenet", "resnet152")  # the lecture's chart, one variant each
_OPTIONS = {"googlenet": {"aux_logits": False}}  # the auxiliary heads are for training only


def _complexity_profile(name: str, batch_size: int = 1) -> Profile:
    return _profile(name, batch_size, **_OPTIONS.get(name, {}))


def _weight_bytes(p: Profile) -> int:
    """The model's own tensors a forward pass reads: parameters and buffers (batch-norm statistics)."""
    return p.param_bytes + p.buffer_bytes


def _mib(nbytes: int) -> float:
    return round(nbytes / 2**20, 1)


def _sum_mib(p: Profile) -> str:
    """'weights + activations = total' in MiB; the total is the sum of the figures shown, so the line adds up."""
    w, a = _mib(_weight_bytes(p)), _mib(p.activation_bytes)
    return f"{w:,.1f} + {a:,.1f} = {w + a:,.1f}"


def _highest_memory(profs: dict[str, Profile]) -> Claim:
    """The memory one forward pass needs, the lecture's way: the weights plus every activation the pass creates
    (its VGG-16 figures are 96MB of activations per image, forward only, and 138M parameters)."""
    total = {n: _weight_bytes(p) + p.activation_bytes for n, p in profs.items()}
    mem = max(total, key=total.get)
    by_total = sorted(total, key=total.get, reverse=True)
    computed = (f"{mem}: weights + activations = {_sum_mib(profs[mem])} MiB (" +
                ", ".join(f"{n} {_sum_mib(profs[n])}" for n in by_total[1:]) + ")")
    acts = max(profs, key=lambda n: profs[n].activation_bytes)
    explanation = ""
    if acts != mem:  # another net creates more activations: it overtakes at the batch where they outgrow the weights
        (wm, am), (wa, aa) = ((_weight_bytes(profs[n]), profs[n].activation_bytes) for n in (mem, acts))
        batch = (wm - wa) // (aa - am) + 1  # activations grow with the batch, weights do not
        at = {n: _complexity_profile(n, batch) for n in (mem, acts)}
        held = "parameters and buffers" if profs[mem].buffer_bytes else "parameters"
        explanation = (f"by activations alone {acts} creates the most ({_mib(aa):,.1f} MiB vs {mem}'s "
                       f"{_mib(am):,.1f}), but {mem}'s weights ({_mib(wm):,.1f} MiB: {profs[mem].params / 1e6:.0f}M "
                       f"float32 {held}) outweigh that at batch 1; activations grow with the batch and weights do "
                       f"not, so from batch {batch} on {acts}'s forward pass needs more (at batch {batch}: {acts} "
                       f"{_sum_mib(at[acts])} MiB, {mem} {_sum_mib(at[mem])} MiB)")
    verdict = "agrees" if mem == "vgg16" else "differs"
    if verdict == "differs":
        explanation = "; ".join(filter(None, [f"{mem}, not vgg16, needs the most memory for a forward pass",
                                              explanation]))
    return Claim("Complexity comparison: highest memory (one forward pass at batch 1: float32 weights + every "
                 "activation it creates)", '"VGG: highest memory"; VGG-16: "each image takes up 96MB", '
                 "138M parameters", computed, verdict, explanation, None, float(total[mem]))


def _complexity() -> list[Claim]:
    names = COMPLEXITY_NETS
    profs = {n: _complexity_profile(n) for n in names}
    err = {n: model_card(n).top5_err for n in names}
    ops = max(names, key=lambda n: profs[n].macs)
    # Efficiency: accuracy (100 - top-5 error) per GMAC and per million parameters, ranked together.
    score = {n: (100 - err[n]) / (profs[n].macs / 1e9) / (profs[n].params / 1e6) for n in names}
    eff = max(names, key=score.get)
    best = min(names, key=err.get)
    alex_ops_rank = sorted(names, key=lambda n: profs[n].macs).index("alexnet")
    return [
        Claim("Complexity comparison: most operations", "VGG", f"{ops} ({_n(profs[ops].macs)} MACs)",
              "agrees" if ops == "vgg16" else "differs", "", None, float(profs[ops].macs)),
        _highest_memory(profs),
        Claim("Complexity comparison: most efficient", "GoogLeNet", f"{eff} (accuracy per GMAC per M params)",
              "agrees" if eff == "googlenet" else "differs", "", None, score[eff]),
        Claim("Complexity comparison: AlexNet has few operations but low accuracy", "AlexNet fewer ops, low accuracy",
              f"AlexNet: fewest MACs ({_n(profs['alexnet'].macs)}), rank {alex_ops_rank + 1}/{len(names)}; "
              f"top-5 {err['alexnet']}% (worst)",
              "agrees" if alex_ops_rank == 0 and max(names, key=err.get) == "alexnet" else "differs", "", None,
              float(profs["alexnet"].macs)),
        Claim("Complexity comparison: highest accuracy", "ResNet", f"{best} (top-5 {err[best]}%)",
              "agrees" if best.startswith("resnet") else "differs", "", None, err[best]),
    ]


def claims() -> list[Claim]:
    """Every number of the lecture, recomputed from the real models and blocks (on the meta device)."""
    rows = []
    for part in (_alexnet, _zfnet, _stack_vs_single, _vgg16, _googlenet, _inception, _global_pool, _resnet,
                 _squeezenet, _compression, _wide, _densenet, _fractal, _complexity):
        rows.extend(part())
    return rows
