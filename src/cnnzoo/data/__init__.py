"""Datasets by name and loaders that batch, augment and normalise on the device, resumable at any batch.

    augment = Augment.from_names(["crop_pad4", "flip"])
    data = fit(load_dataset("cifar10", "train"), (3, 32, 32), augment=augment)  # image folders: the load size
    loader = make_loader(data, 128, train=True, augment=augment, seed=0, device="cuda")  # BatchLoader here
    loader.set_position(epoch, batch)        # resume: the same batches as an uninterrupted run
    for x, y in loader: ...                  # the rest of this epoch: float32 normalised x, int64 y
"""

from cnnzoo.data.augment import AUGMENTATIONS, Augment, center_crop, flip, ten_crop
from cnnzoo.data.datasets import (DATASETS, ImageData, default_root, fit, fit_mode, hold_out, load_dataset,
                                  load_size_for)
from cnnzoo.data.folder import BadImageError, FolderData
from cnnzoo.data.loader import BatchLoader, StreamLoader, make_loader

__all__ = ["AUGMENTATIONS", "Augment", "BadImageError", "BatchLoader", "DATASETS", "FolderData", "ImageData",
           "StreamLoader", "center_crop", "default_root", "fit", "fit_mode", "flip", "hold_out", "load_dataset",
           "load_size_for", "make_loader", "ten_crop"]
