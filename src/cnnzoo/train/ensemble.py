"""`cnnzoo eval`: checkpoints evaluated one by one and as an ensemble (averaged softmax outputs).

Test-time augmentation shows a model views it may never have seen in training: mirrored images (flip, and the
mirrored half of ten-crop) or off-centre crops (ten-crop). Each member's report names the views its run's training
augmentation (the checkpoint's `recipe.augmentation`) did not include, and the report carries a warning for them:
LeNet-5 trained on the digits without flipping goes from 0.85% to 7.89% error with flip TTA.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from cnnzoo.train.checkpoint import load_checkpoint, model_from_checkpoint
from cnnzoo.train.evaluate import TEN_CROP_LOAD, errors, predict
from cnnzoo.train.trainer import resolve_device

__all__ = ["evaluate_checkpoints", "tta_unseen"]

CROPPING = ("crop_pad2", "crop_pad4", "random_crop", "random_resized_crop", "scale_jitter")  # shift or crop
_TTA_VIEWS = {  # tta: (view it shows, the training augmentations that show it too)
    "flip": (("mirrored images", ("flip",)),),
    "ten-crop": (("corner crops", CROPPING), ("mirrored images", ("flip",))),
}


def tta_unseen(tta: str, augmentation) -> list[str]:
    """The views test-time augmentation `tta` shows that training with `augmentation` (names) never did;
    empty when it is unknown how the model was trained (augmentation None)."""
    if augmentation is None:
        return []
    return [view for view, taught_by in _TTA_VIEWS.get(tta, ()) if not set(taught_by) & set(augmentation)]


def evaluate_checkpoints(paths: list[str], data: str, *, tta: str = "none", batch_size: int = 256,
                         device: str = "auto", data_root: str | None = None, download: bool = False) -> dict:
    """Top-1/top-5 error (in percent) of each checkpoint and, for several, of their ensemble."""
    from cnnzoo.data import Augment, fit, fit_mode, load_dataset, make_loader
    from cnnzoo.registry import model_card

    target = resolve_device(device)
    payloads = [load_checkpoint(p) for p in paths]  # every file is checked before any evaluation runs
    test = load_dataset(data, "test", root=data_root, download=download)
    classes = int(test.labels.max()) + 1 if test.labels.numel() else 0
    members, total, labels = [], None, None
    for path, payload in zip(paths, payloads):
        card = model_card(payload["model"])
        num_classes = payload["model_options"].get("num_classes", card.num_classes)
        if classes > num_classes:
            raise ValueError(f"{path}: {data}'s labels go up to {classes - 1}, but {payload['model']} was trained "
                             f"for {num_classes} classes")
        stored = payload.get("classes")
        if stored is not None and list(test.classes) != list(stored)[:len(test.classes)]:
            raise ValueError(f"{path} was trained on classes {stored[:5]}..., {data} has {list(test.classes)[:5]}...")
        model = model_from_checkpoint(payload, device=target)
        c, h, w = payload.get("data", {}).get("input_size") or card.input_size
        load = (c, math.ceil(h * TEN_CROP_LOAD), math.ceil(w * TEN_CROP_LOAD)) if tta == "ten-crop" else (c, h, w)
        trained_with = (payload.get("recipe") or {}).get("augmentation")
        names = trained_with or ()
        augment = Augment.from_names(names, size=(h, w)) if names and tta != "ten-crop" else None
        fitted = fit(test, load, mode=fit_mode(test, (c, h, w)), augment=augment)  # a folder: the run's load size
        norm = payload.get("data", {})
        if norm.get("mean") and norm.get("std"):  # the training set's statistics, as the model was trained
            fitted = dataclasses.replace(fitted, mean=tuple(norm["mean"]), std=tuple(norm["std"]))
        loader = make_loader(fitted, batch_size, train=False, augment=None, seed=0, device=target, drop_last=False)
        loader.set_position(0, 0)
        probs, y = predict(model, loader, tta=tta, input_hw=(h, w))
        if labels is not None and not torch.equal(labels, y):
            raise ValueError("the checkpoints saw the test images in different orders; cannot ensemble them")
        labels = y
        total = probs if total is None else total + probs
        members.append({"checkpoint": str(path), "model": payload["model"],
                        "epoch": (payload.get("position") or [None])[0], **errors(probs, y).as_percent(),
                        "trained_augmentation": None if trained_with is None else list(trained_with),
                        "tta_unseen": tta_unseen(tta, trained_with)})
    warnings = [f"{m['checkpoint']}: {tta} test-time augmentation shows {' and '.join(m['tta_unseen'])}, which "
                f"its training augmentation ({', '.join(m['trained_augmentation']) or 'none'}) never did; its error "
                f"may be higher than without it" for m in members if m["tta_unseen"]]
    report = {"data": data, "tta": tta, "images": int(labels.numel()), "members": members, "ensemble": None,
              "warnings": warnings}
    if len(members) > 1:
        report["ensemble"] = errors(total / len(members), labels).as_percent()
    return report

