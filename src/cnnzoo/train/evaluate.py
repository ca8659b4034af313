"""Evaluation: top-1 and top-5 error, test-time augmentation, and ensembles of checkpoints.

An ensemble averages the softmax outputs of its members, as AlexNet's seven CNNs (Sec. 6) and ResNet's six
models (Sec. 4.1) did; test-time augmentation averages over views of each image in the same way: `flip` (the
image and its mirror) and `ten-crop` (the four corners and the centre, and their mirrors: AlexNet's test
protocol, Sec. 4.1), taken from images loaded at 256/224 of the model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TTA_MODES", "Errors", "errors", "predict", "topk_correct"]

TTA_MODES = ("none", "flip", "ten-crop")
TEN_CROP_LOAD = 256 / 224  # images are loaded this much larger than the model's input, then cropped


@dataclass(frozen=True)
class Errors:
    top1: float  # error rate, 0..1
    top5: float
    count: int

    def as_percent(self) -> dict:
        return {"top1_err": 100 * self.top1, "top5_err": 100 * self.top5, "images": self.count}


def topk_correct(logits: Tensor, target: Tensor) -> tuple[int, int]:
    """How many targets are the top-1 and among the top-5 predictions (top-k capped at the class count)."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == target[:, None]
    return int(hit[:, 0].sum()), int(hit.any(dim=1).sum())


def errors(probabilities: Tensor, labels: Tensor) -> Errors:
    top1, top5 = topk_correct(probabilities, labels)
    n = labels.numel()
    return Errors(1 - top1 / n, 1 - top5 / n, n)


def _views(x: Tensor, tta: str, size: tuple[int, int]) -> list[Tensor]:
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x.flip(-1)]
    if tta == "ten-crop":
        h, w = size
        H, W = x.shape[-2:]
        if H < h or W < w:
            raise ValueError(f"ten-crop needs images at least {h}x{w}, got {H}x{W}")
        tops = (0, 0, H - h, H - h, (H - h) // 2)
        lefts = (0, W - w, 0, W - w, (W - w) // 2)
        crops = [x[..., t:t + h, l:l + w] for t, l in zip(tops, lefts)]
        return crops + [c.flip(-1) for c in crops]
    raise ValueError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_MODES)}")


@torch.no_grad()
def predict(model: nn.Module, batches, *, tta: str = "none", input_hw: tuple[int, int] | None = None,
            amp: bool = False) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (averaged over the TTA views) and labels for every image the batches hold."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for x, y in batches:
            size = input_hw or tuple(x.shape[-2:])
            views = _views(x, tta, size)
            total = None
            for view in views:
                with torch.autocast(x.device.type, enabled=amp,
                                    dtype=torch.float16 if x.device.type == "cuda" else torch.bfloat16):
                    p = F.softmax(model(view.contiguous(memory_format=_format(x))).float(), dim=1)
                total = p if total is None else total + p
            probs.append((total / len(views)).cpu())
            labels.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs), torch.cat(labels)


def _format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
