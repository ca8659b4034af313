"""Datasets by name and loaders that batch, augment and normalise on the device, resumable at any batch.

    data = fit(load_dataset("cifar10", "train"), (3, 32, 32))
    loader = BatchLoader(data, 128, train=True, augment=Augment.from_names(["crop_pad4", "flip"]), seed=0,
                         device="cuda")
    loader.set_position(epoch, batch)        # resume: the same batches as an uninterrupted run
    for x, y in loader: ...                  # the rest of this epoch: float32 normalised x, int64 y
"""

from cnnzoo.data.augment import AUGMENTATIONS, Augment, center_crop, flip, ten_crop
from cnnzoo.data.datasets import DATASETS, ImageData, default_root, fit, fit_mode, hold_out, load_dataset
from cnnzoo.data.folder import FolderData
from cnnzoo.data.loader import BatchLoader, StreamLoader, make_loader

__all__ = ["AUGMENTATIONS", "Augment", "BatchLoader", "DATASETS", "FolderData", "ImageData", "StreamLoader",
           "center_crop", "default_root", "fit", "fit_mode", "flip", "hold_out", "load_dataset", "make_loader", "ten_crop"]
