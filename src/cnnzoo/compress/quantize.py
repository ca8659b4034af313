"""Trained quantisation by weight sharing, Deep Compression's second stage (Han, Mao & Dally, ICLR 2016,
arXiv:1510.00149, Sec. 3).

Per layer, the surviving (unpruned) weights are clustered by 1-D k-means (Sec. 3.1); every weight is then replaced
by its cluster's centroid, so a layer stores a small codebook and one short index per weight. The centroids start
evenly spaced between the smallest and largest surviving weight ("linear initialisation", Sec. 3.2, which the paper
found best: it keeps the few large weights, which matter most, represented). The centroids are then fine-tuned
(Sec. 3.3): the gradient of a centroid is the sum of the gradients of the weights that share it, and an optimizer
steps the centroids; the weights follow.

Codebook convention (shared with the file format, `cnnzoo.compress.codec`): a layer quantised to b bits has a
codebook of 2**b float32 entries whose entry 0 is exactly 0.0, reserved for the zeros the sparse format stores where
a gap between two surviving weights overflows its index bits ("filler zeros", Sec. 2). That spends one of the 2**b
codes on the filler: k-means finds 2**b - 1 centroids, entries 1 ... 2**b - 1, and `Shared.labels` take values in
[1, 2**b). The paper's Fig. 3 counts all 2**b codes as centroids; at 8 or 5 bits the code lost is 0.4% or 3%
of a layer's codebook.

    shared = share_weights(model, masks, {"conv": 8, "fc": 5})   # the paper's bits for AlexNet
    hold = SharedTraining(model, shared)                          # trains the codebooks instead of the weights
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnzoo.compress.prune import _checked_masks, prunable_weights

__all__ = ["Shared", "kmeans_1d", "share_weights", "SharedTraining", "finetune_centroids", "shared_from_state",
           "MAX_BITS"]

MAX_BITS = 16  # labels are stored in at most 16 bits


@dataclass(frozen=True, eq=False)
class Shared:
    """One layer's shared weights: `weight[mask] == codebook[labels]`, zero elsewhere.

    Args:
        codebook: float32 [2**bits]; entry 0 is exactly 0.0 (the sparse format's filler zeros).
        labels: int64 [number of surviving weights], values in [1, 2**bits), in the flat (row-major) order of
            the mask's True entries.
        mask: bool, the weight's shape; True where a weight survived pruning.
        kind: "conv" (Conv2d) or "fc" (Linear).
        bits: bits per label.
    """

    codebook: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    kind: str
    bits: int

    def __post_init__(self):
        if self.kind not in ("conv", "fc"):
            raise ValueError(f"Shared.kind must be 'conv' or 'fc', got {self.kind!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"Shared.bits must be an integer from 1 to {MAX_BITS}, got {self.bits!r}")
        size = 2 ** self.bits
        if self.codebook.dtype != torch.float32 or tuple(self.codebook.shape) != (size,):
            raise ValueError(f"Shared.codebook must be float32 of shape ({size},) for {self.bits} bits, got "
                             f"{self.codebook.dtype} {tuple(self.codebook.shape)}")
        if self.codebook[0].item() != 0.0:
            raise ValueError(f"Shared.codebook[0] must be exactly 0.0 (reserved for filler zeros), got "
                             f"{self.codebook[0].item()!r}")
        if self.mask.dtype != torch.bool:
            raise ValueError(f"Shared.mask must be a bool tensor, got {self.mask.dtype}")
        survivors = int(self.mask.sum())
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (survivors,):
            raise ValueError(f"Shared.labels must be int64 of shape ({survivors},) (one per True in the mask), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if survivors and (int(self.labels.min()) < 1 or int(self.labels.max()) >= size):
            raise ValueError(f"Shared.labels must lie in [1, {size}) (0 is the filler's code), got "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")

    def dense(self) -> torch.Tensor:
        """The layer's weight tensor: codebook[labels] where the mask is True, 0.0 elsewhere."""
        weight = torch.zeros(self.mask.shape, dtype=torch.float32, device=self.codebook.device)
        weight[self.mask] = self.codebook[self.labels]
        return weight

    def state(self) -> dict:
        """Plain tensors and values (what a checkpoint stores)."""
        return {"codebook": self.codebook.detach().cpu(), "labels": self.labels.cpu(), "mask": self.mask.cpu(),
                "kind": self.kind, "bits": self.bits}


def shared_from_state(state: dict) -> dict[str, Shared]:
    """{name: Shared} from {name: Shared.state()} (as a training checkpoint's compression["shared"] holds)."""
    try:
        return {name: Shared(**{k: entry[k] for k in ("codebook", "labels", "mask", "kind", "bits")})
                for name, entry in state.items()}
    except (KeyError, TypeError) as err:
        raise ValueError(f"a shared-weights record needs codebook, labels, mask, kind and bits per layer "
                         f"({type(err).__name__}: {err})") from None


# Above this many values, the Lloyd iterations run on a histogram of this many cells (each cell's exact sum and
# count, so a cell acts as its members' mean with their weight), not on the sorted values: sorting tens of
# millions of floats takes longer than the rest of the compression.
_EXACT_UP_TO = 2 ** 20


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means (Lloyd), centroids linearly initialised between min and max; returns (centroids, labels).

    centroids: float32 [k], ascending; labels: int64 [n], each value's nearest centroid (a value exactly half way
    goes to the lower one). Vectorised: a 1-D cluster is an interval of the sorted values, so each iteration
    finds the k - 1 boundaries (midpoints between neighbouring centroids) by binary search and each cluster's
    sum and count from prefix sums: O(k log n) per iteration. A cluster left empty keeps its centroid. Up to
    2**20 values the iterations run on the values themselves (exact Lloyd); above, on a 2**20-cell histogram
    of them (each cell's exact sum and count), which keeps 60 million values to seconds; the centroids then
    land within a few cells' widths (range / 2**20) of exact Lloyd's (measured: 2.5 cells, 1e-4 of the
    centroid spacing, for a million normal values and 31 centroids). The labels are always exactly each value's
    nearest centroid.
    """
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise ValueError(f"kmeans_1d needs a floating-point tensor of values, got "
                         f"{values.dtype if isinstance(values, torch.Tensor) else type(values).__name__}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the number of centroids) must be an integer of at least 1, got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer of at least 0, got {iterations!r}")
    flat = values.detach().flatten().float()
    if flat.numel() == 0:
        raise ValueError("kmeans_1d got no values to cluster")
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("kmeans_1d got NaN or inf among the values; cluster finite weights")
    lo, hi = float(flat.min()), float(flat.max())
    cells = None if flat.numel() <= _EXACT_UP_TO or hi == lo else _Cells(flat, lo, hi)
    if cells is None:
        points = torch.sort(flat).values.double()
        weights = torch.ones_like(points)
    else:
        points, weights = cells.points()
    zero = torch.zeros(1, dtype=torch.float64, device=flat.device)
    count_sum = torch.cat([zero, torch.cumsum(weights, 0)])
    value_sum = torch.cat([zero, torch.cumsum(weights * points, 0)])
    centroids = torch.linspace(lo, hi, k, dtype=torch.float64, device=flat.device)
    ends = torch.tensor([points.numel()], device=flat.device)
    for _ in range(iterations):
        cuts = torch.searchsorted(points, (centroids[1:] + centroids[:-1]) / 2, right=True)
        bounds = torch.cat([ends.new_zeros(1), cuts, ends])
        counts = count_sum[bounds[1:]] - count_sum[bounds[:-1]]
        sums = value_sum[bounds[1:]] - value_sum[bounds[:-1]]
        moved = torch.where(counts > 0, sums / counts.clamp(min=1e-300), centroids)
        if torch.equal(moved, centroids):
            break
        centroids = moved
    centroids = centroids.float()
    middles = (centroids[1:] + centroids[:-1]) / 2  # a value equal to a midpoint goes to the lower cluster
    labels = torch.searchsorted(middles, flat) if cells is None else cells.labels(middles)
    return centroids, labels


class _Cells:
    """Many values binned into 2**20 equal cells: each value's cell, and each cell's exact count and sum."""

    def __init__(self, flat: torch.Tensor, lo: float, hi: float):
        self.flat, self.lo, self.count = flat, lo, _EXACT_UP_TO
        self.scale = self.count / (hi - lo)
        self.index = ((flat - lo) * self.scale).long().clamp_(0, self.count - 1)

    def points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-empty cells' means (ascending, float64) and counts."""
        counts = torch.bincount(self.index, minlength=self.count).double()
        sums = torch.bincount(self.index, weights=self.flat.double(), minlength=self.count)
        used = counts > 0
        return sums[used] / counts[used], counts[used]

    def labels(self, middles: torch.Tensor) -> torch.Tensor:
        """searchsorted(middles, values), exactly, without a binary search per value: every value of a cell that
        no midpoint comes near (within a tenth of a cell) gets the cell's label; the few others are searched."""
        edges = self.lo + torch.arange(self.count + 1, dtype=torch.float64, device=self.flat.device) / self.scale
        slack = 0.1 / self.scale
        mids = middles.double()
        first = torch.searchsorted(mids, edges[:-1] - slack)
        last = torch.searchsorted(mids, edges[1:] + slack)
        labels = first[self.index]
        unsure = torch.nonzero((last != first)[self.index]).flatten()
        labels[unsure] = torch.searchsorted(middles, self.flat[unsure])
        return labels

def _check_bits(bits) -> dict[str, int]:
    if not isinstance(bits, dict) or not bits:
        raise ValueError(f"bits must be a dict by layer kind, e.g. {{'conv': 8, 'fc': 5}}, got {bits!r}")
    for kind, value in bits.items():
        if kind not in ("conv", "fc"):
            raise ValueError(f"bits has the key {kind!r}; the layer kinds are 'conv' (Conv2d) and 'fc' (Linear)")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BITS:
            raise ValueError(f"bits[{kind!r}] must be an integer from 1 to {MAX_BITS}, got {value!r}")
    return bits


@torch.no_grad()
def share_weights(model: nn.Module, masks: dict[str, torch.Tensor] | None, bits: dict[str, int],
                  iterations: int = 30) -> dict[str, Shared]:
    """Quantise every Conv2d/Linear weight of a kind in `bits` by k-means over its surviving weights, in place.

    Args:
        masks: pruning masks by parameter name (`magnitude_masks`); a layer without one is taken whole (all
            weights survive). Weights outside the mask are set to 0.
        bits: bits per weight by layer kind, {"conv": 8, "fc": 5} (the paper's AlexNet, Sec. 3 and Table 3);
            layers of a kind not named stay float32 and are not returned. A b-bit layer gets 2**b - 1
            centroids: code 0 is spent on the sparse format's filler zeros (see the module docstring).

    Returns {parameter name: Shared}; the model's weights are then exactly `Shared.dense()`.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"share_weights needs a torch.nn.Module, got {type(model).__name__}")
    bits = _check_bits(bits)
    masks = _checked_masks(model, masks) if masks is not None else {}
    shared = {}
    for name, (kind, weight) in prunable_weights(model).items():
        if kind not in bits:
            continue
        mask = masks.get(name)
        mask = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask.to(weight.device)
        survivors = weight.detach()[mask]
        if survivors.numel() == 0:
            raise ValueError(f"{name}: its mask keeps no weight; prune to a density above 0")
        centroids, labels = kmeans_1d(survivors, 2 ** bits[kind] - 1, iterations)
        codebook = torch.cat([centroids.new_zeros(1), centroids])
        entry = Shared(codebook=codebook, labels=labels + 1, mask=mask, kind=kind, bits=bits[kind])
        weight.copy_(entry.dense().to(weight.dtype))
        shared[name] = entry
    if not shared:
        raise ValueError(f"bits {bits} names no layer kind of {type(model).__name__} (it has "
                         f"{sorted({k for k, _ in prunable_weights(model).values()})})")
    return shared


class SharedTraining:
    """Trains the codebooks of shared-weight layers instead of their weights (Deep Compression Sec. 3.3).

    Each layer's weight stays an ordinary parameter (so checkpoints and `state_dict` are the dense model's),
    left out of the optimizer; its codebook is a new parameter the optimizer steps. After the backward pass,
    `after_backward` sums each weight's gradient into its centroid's (a scatter-add by label; the filler entry 0
    gets none, so it stays exactly 0.0); after the optimizer's step, `after_step` sets every weight to
    codebook[label] again. Under plain SGD one step moves each centroid by -lr times the summed gradient of its
    weights, and every weight still equals a codebook entry.

    The trainer (`cnnzoo.train.train(..., start=Start(shared=...))`) builds one; in a loop of one's own:

        hold = SharedTraining(model, shared)
        optimizer = SGD([p for n, p in model.named_parameters() if n not in hold.trained_weights()]
                        + hold.parameters(), lr=...)
        loss.backward(); hold.after_backward(); optimizer.step(); hold.after_step()
    """

    def __init__(self, model: nn.Module, shared: dict[str, Shared]):
        if not isinstance(shared, dict) or not all(isinstance(s, Shared) for s in shared.values()):
            raise ValueError("SharedTraining needs {parameter name: Shared}, as share_weights returns")
        params = dict(model.named_parameters())
        self.model = model
        self.kinds = {}
        self._weights, self._codebooks, self._labels = {}, {}, {}
        for name, entry in shared.items():
            if name not in params:
                raise ValueError(f"shared has {name!r}, which is not a parameter of {type(model).__name__}")
            weight = params[name]
            if tuple(entry.mask.shape) != tuple(weight.shape):
                raise ValueError(f"shared[{name!r}] has a mask of shape {tuple(entry.mask.shape)}, but the weight "
                                 f"has shape {tuple(weight.shape)}")
            labels = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
            labels[entry.mask.to(weight.device)] = entry.labels.to(weight.device)
            self._weights[name] = weight
            self._labels[name] = labels.flatten()
            self._codebooks[name] = nn.Parameter(entry.codebook.detach().clone().to(weight.device))
            self.kinds[name] = (entry.kind, entry.bits, entry.mask.cpu())
        self.after_step()  # the weights are codebook[labels] from the start

    def parameters(self) -> list[nn.Parameter]:
        """The codebooks, in a fixed order: what the optimizer trains besides the other parameters."""
        return list(self._codebooks.values())

    def trained_weights(self) -> set[str]:
        """Names of the shared weights: the optimizer must not step them (their codebooks are stepped)."""
        return set(self._weights)

    @torch.no_grad()
    def after_backward(self) -> None:
        for name, weight in self._weights.items():
            codebook = self._codebooks[name]
            if weight.grad is None:
                continue
            grad = torch.zeros_like(codebook).index_add_(0, self._labels[name], weight.grad.flatten().to(codebook.dtype))
            grad[0] = 0.0  # the filler entry stays exactly 0.0
            codebook.grad = grad if codebook.grad is None else codebook.grad + grad
            weight.grad = None

    @torch.no_grad()
    def after_step(self) -> None:
        for name, weight in self._weights.items():
            codebook = self._codebooks[name]
            codebook[0] = 0.0
            weight.copy_(codebook[self._labels[name]].view_as(weight).to(weight.dtype))

    def remove(self) -> None:
        """Nothing to detach (no hooks)."""

    def shared(self) -> dict[str, Shared]:
        """The current {name: Shared}, codebooks as trained so far (on the CPU)."""
        out = {}
        for name, (kind, bits, mask) in self.kinds.items():
            labels = self._labels[name].view(mask.shape).cpu()[mask]
            out[name] = Shared(codebook=self._codebooks[name].detach().float().cpu().clone(), labels=labels,
                               mask=mask, kind=kind, bits=bits)
        return out

    def state_dict(self) -> dict:
        """What a checkpoint stores to rebuild this hold."""
        return {"shared": {name: entry.state() for name, entry in self.shared().items()}}


def finetune_centroids(config, state: dict, shared: dict[str, Shared], *, console=None):
    """Fine-tune the centroids (and the layers left unshared: biases, batch norm) with the trainer.

    Args:
        config: a `cnnzoo.train.TrainConfig` (model, data, recipe, epochs, lr, out, ...). With `config.resume` the
            run in `config.out` continues from its last checkpoint (`state` and `shared` are then not needed
            again: the checkpoint holds the codebooks and labels).
        state: the weights to start from (the quantised model's state_dict).
        shared: {name: Shared} from `share_weights`.

    Returns (result, shared): the trainer's `RunResult` and the trained codebooks with their labels, read back
    from the run's last checkpoint.
    """
    from cnnzoo.train.checkpoint import load_checkpoint
    from cnnzoo.train.trainer import Start, train

    start = None if config.resume else Start(state=state, shared=shared, source="shared weights (share_weights)")
    result = train(config, console, start=start)
    payload = load_checkpoint(result.out / "last.pt")
    return result, shared_from_state(payload["compression"]["shared"])
