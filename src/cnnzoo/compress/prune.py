"""Magnitude pruning as Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural
Networks", NeurIPS 2015 (arXiv:1506.02626), the first stage of Deep Compression (Han, Mao & Dally, ICLR 2016,
arXiv:1510.00149, Sec. 2).

Each convolution's and fully connected layer's weight tensor keeps its largest-magnitude fraction (`density`) and
loses the rest; biases and batch-norm parameters are not pruned (they are a sliver of the parameters, and neither
paper prunes them). Han et al. 2015 prune per layer with a threshold, then retrain the survivors with the pruned
connections held at zero, and repeat with lower densities (their Sec. 3.3, "iterative pruning"): `prune_schedule`
does that through the ordinary trainer (`cnnzoo.train`), one run folder per stage, each resumable like any run.

    masks = magnitude_masks(model, {"features.*": 0.66, "classifier.*": 0.09})
    apply_masks(model, masks)
    hold = MaskedTraining(model, masks)   # gradients of pruned weights are zero: SGD leaves them at exactly 0

The threshold is exact: a layer of n weights at density d keeps round(d * n) of them (at least one), the largest by
|w|; where several weights share the threshold's magnitude, the lower flat indices are kept (deterministic).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import torch
from torch import nn

__all__ = ["prunable_weights", "magnitude_masks", "apply_masks", "MaskedTraining", "mask_density", "prune_schedule"]


def prunable_weights(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """{parameter name: (kind, weight)} for every Conv2d ("conv") and Linear ("fc") weight, in module order."""
    found = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            name = f"{module_name}.weight" if module_name else "weight"
            found[name] = ("conv" if isinstance(module, nn.Conv2d) else "fc", module.weight)
    return found


def _check_density(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{where} must be a number in (0, 1] (the fraction of weights kept), got {value!r}")
    return float(value)


def _densities(weights: dict, density) -> dict[str, float]:
    """Each prunable weight's density: a float for all, or {name or fnmatch pattern: density}, where the first
    matching key wins (a name matches with or without its '.weight'); layers no key matches stay dense."""
    if not isinstance(density, dict):
        value = _check_density(density, "density")
        return {name: value for name in weights}
    if not density:
        raise ValueError("density is an empty dict; give {layer name or pattern: fraction kept}, e.g. "
                         "{'features.*': 0.66, 'classifier.*': 0.09}, or one number for every layer")
    chosen, used = {}, set()
    for name in weights:
        short = name.removesuffix(".weight")
        for key, value in density.items():
            if not isinstance(key, str):
                raise ValueError(f"density keys must be layer names or patterns (str), got {key!r}")
            if fnmatch.fnmatchcase(name, key) or fnmatch.fnmatchcase(short, key):
                chosen[name] = _check_density(value, f"density[{key!r}]")
                used.add(key)
                break
        else:
            chosen[name] = 1.0
    unused = [k for k in density if k not in used]
    if unused:
        shown = ", ".join(list(weights)[:6]) + (", ..." if len(weights) > 6 else "")
        raise ValueError(f"density key(s) {', '.join(map(repr, unused))} match no convolution or fully connected "
                         f"weight of the model; its weights are: {shown}")
    return chosen


@torch.no_grad()
def _keep_largest(weight: torch.Tensor, keep: int, allowed: torch.Tensor | None) -> torch.Tensor:
    """A bool mask of the `keep` largest |w| (among `allowed`), ties at the threshold to the lower flat indices."""
    magnitude = weight.detach().abs().flatten().float()
    if allowed is not None:
        magnitude = torch.where(allowed.flatten(), magnitude, torch.full_like(magnitude, -1.0))
    n = magnitude.numel()
    if keep >= n:
        return torch.ones_like(weight, dtype=torch.bool) if allowed is None else allowed.clone()
    threshold = torch.kthvalue(magnitude, n - keep + 1).values  # the keep-th largest, in O(n)
    mask = magnitude > threshold
    short = keep - int(mask.sum())
    if short > 0:
        ties = torch.nonzero(magnitude == threshold).flatten()[:short]
        mask[ties] = True
    return mask.view_as(weight)


def magnitude_masks(model: nn.Module, density: float | dict[str, float],
                    previous: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per-layer magnitude pruning masks (True = kept) for every Conv2d/Linear weight, keyed by parameter name.

    Args:
        density: the fraction of each layer's weights kept, in (0, 1]: one number for every layer, or
            {parameter name or fnmatch pattern: fraction}, e.g. {"features.*": 0.66, "classifier.6": 0.25}
            (layers no key matches keep every weight and get an all-True mask).
        previous: masks of an earlier pruning stage: weights pruned then stay pruned (Han et al. prune
            iteratively), and the density still counts against the layer's full size.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"magnitude_masks needs a torch.nn.Module, got {type(model).__name__}")
    weights = prunable_weights(model)
    if not weights:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear weight to prune")
    previous = _checked_masks(model, previous, "previous") if previous is not None else {}
    masks = {}
    for name, value in _densities(weights, density).items():
        weight = weights[name][1]
        keep = max(1, round(value * weight.numel()))
        masks[name] = _keep_largest(weight, keep, previous.get(name))
    return masks


def _checked_masks(model: nn.Module, masks, what: str = "masks") -> dict[str, torch.Tensor]:
    """The masks, checked against the model: known weight names, bool tensors of the weights' shapes."""
    if not isinstance(masks, dict):
        raise ValueError(f"{what} must be a dict of parameter name to bool tensor, got {type(masks).__name__}")
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"{what} has {name!r}, which is not a parameter of {type(model).__name__} (e.g. "
                             f"{', '.join(list(prunable_weights(model))[:3])})")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"{what}[{name!r}] must be a bool tensor, got "
                             f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        if tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(f"{what}[{name!r}] has shape {tuple(mask.shape)}, but the weight has shape "
                             f"{tuple(params[name].shape)}")
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Set the pruned weights (mask False) to exactly zero, in place."""
    params = dict(model.named_parameters())
    for name, mask in _checked_masks(model, masks).items():
        params[name].mul_(mask.to(params[name].device))


def mask_density(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """The fraction of weights each mask keeps."""
    return {name: int(m.sum()) / m.numel() for name, m in masks.items()}


class MaskedTraining:
    """Holds pruned weights at exactly zero while a model trains.

    A tensor hook multiplies each masked weight's gradient by its mask, so a pruned weight's gradient is 0. With
    the weight itself at 0 (`apply_masks`), torch's SGD then leaves it at 0: weight decay adds wd * 0, the
    momentum buffer starts at 0 and only ever adds 0, Nesterov's look-ahead is 0 too (RMSprop divides 0 by a
    positive number). `after_step` re-applies the masks after each optimizer step as well, so an optimizer
    that moves zero-gradient weights (Adam's decoupled decay, for one) cannot revive them either; the trainer
    calls it, and it changes nothing under SGD.

    The trainer (`cnnzoo.train.train(..., start=Start(masks=...))`) builds one of these; in a loop of one's own:

        hold = MaskedTraining(model, masks)     # also zeroes the pruned weights
        loss.backward(); optimizer.step(); hold.after_step()
        hold.remove()                           # detach the hooks when done
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        masks = _checked_masks(model, masks)
        params = dict(model.named_parameters())
        self.model = model
        self.masks = {name: mask.to(params[name].device) for name, mask in masks.items()}
        self._params = {name: params[name] for name in self.masks}
        apply_masks(model, self.masks)
        self._handles = [p.register_hook(_masker(self.masks[name])) for name, p in self._params.items()]

    def parameters(self) -> list[nn.Parameter]:
        """Extra tensors to train besides the model's own: none (the masked weights train as usual)."""
        return []

    def trained_weights(self) -> set[str]:
        """Names of model parameters an optimizer must not own (none: masked weights stay in it)."""
        return set()

    def after_backward(self) -> None:
        """Nothing to do: the hooks have already masked the gradients."""

    @torch.no_grad()
    def after_step(self) -> None:
        for name, p in self._params.items():
            p.mul_(self.masks[name])

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict:
        """What a checkpoint stores to rebuild this hold: the masks (on the CPU)."""
        return {"masks": {name: mask.cpu() for name, mask in self.masks.items()}}


def _masker(mask: torch.Tensor):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * mask
    return hook


def prune_schedule(config, densities, *, state: dict | None = None, previous: dict | None = None,
                   console=None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list]:
    """Iterative pruning (Han et al. 2015, Sec. 3.3): for each density of the schedule, prune to it by magnitude
    and retrain with the masks held fixed; each stage is an ordinary run of the trainer in `config.out`/stageN.

    Args:
        config: a `cnnzoo.train.TrainConfig` for the retraining (model, data, recipe, epochs, lr, ...); its
            `out` is the folder the stages go in (required). With `config.resume`, finished stages are read
            back and the unfinished one resumes from its last checkpoint.
        densities: the schedule, e.g. [0.5, 0.25, 0.12] (each a float or a {pattern: density} dict as
            `magnitude_masks` takes), each stage's at most the previous one's.
        state: the weights to start from (a state_dict, e.g. a trained checkpoint's model_state); None: the
            run's fresh initialisation (rarely useful: prune a trained net).
        previous: masks to start from (weights pruned there stay pruned).

    Returns (state, masks, results): the last stage's weights and masks, and each stage's `RunResult`.
    """
    from dataclasses import replace

    from cnnzoo.registry import create_model
    from cnnzoo.train.checkpoint import load_checkpoint
    from cnnzoo.train.trainer import Start, TrainConfig, train

    if not isinstance(config, TrainConfig):
        raise ValueError(f"prune_schedule needs a cnnzoo.train.TrainConfig, got {type(config).__name__}")
    if not config.out:
        raise ValueError("prune_schedule needs config.out, the folder the stages' runs go in")
    if isinstance(densities, (int, float, dict)) or not len(densities):
        raise ValueError(f"densities must be a non-empty list of densities (one per stage), got {densities!r}")
    results = []
    for index, density in enumerate(densities):
        out = Path(config.out) / f"stage{index + 1}"
        stage = replace(config, out=str(out), resume=False)
        last = out / "last.pt"
        if config.resume and last.is_file():
            payload = load_checkpoint(last)
            if payload["position"][0] < payload["recipe"]["epochs"]:  # unfinished: continue it
                results.append(train(replace(stage, resume=True), console))
                payload = load_checkpoint(last)
            else:
                results.append(None)
            state, previous = payload["model_state"], payload["compression"]["masks"]
            continue
        model = create_model(config.model, num_classes=_classes(state))
        if state is not None:
            model.load_state_dict(state)
        masks = magnitude_masks(model, density, previous)
        apply_masks(model, masks)
        results.append(train(stage, console, start=Start(state=model.state_dict(), masks=masks,
                                                        source=f"pruning stage {index + 1} of {len(densities)}")))
        payload = load_checkpoint(last)
        state, previous = payload["model_state"], payload["compression"]["masks"]
    return state, previous, results


def _classes(state: dict | None) -> int | None:
    """The class count a state_dict's last Linear (or 1x1 classifier conv) implies; None without a state."""
    if state is None:
        return None
    last = [t for k, t in state.items() if k.endswith("weight") and t.dim() in (2, 4)]
    return int(last[-1].shape[0]) if last else None
