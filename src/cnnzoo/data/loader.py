"""Loaders that yield normalised float batches on the device and can resume at any batch, bit for bit.

No random state is carried from batch to batch, so none needs saving: epoch e's order is
`torch.randperm(N)` from a generator seeded with (seed, e) only, and batch b's augmentation draws from a
generator seeded with (seed, e, b) only. `set_position(e, b)` therefore makes the next batch exactly the one an
uninterrupted run would see there, and a checkpoint stores two ints (`state_dict()`).

Several processes (world_size > 1) share one global batch of batch_size * world_size images per step:
every rank computes the same epoch order and the same augmentation parameters for the whole global batch,
and rank r takes the contiguous rows [r * batch_size, (r + 1) * batch_size) of it. Concatenating the ranks'
batches in rank order gives exactly the single-process batch of size batch_size * world_size.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct

import torch

from cnnzoo.data.augment import Augment, center_crop, slice_params
from cnnzoo.data.datasets import ImageData
from cnnzoo.data.folder import Collate, FolderData, FolderDataset

__all__ = ["BatchLoader", "StreamLoader", "make_loader"]


def seed_of(*parts: int) -> int:
    """A 63-bit seed from a tuple of ints (seed, epoch[, batch]): nearby tuples give unrelated streams."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(*parts))


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return value


class _Schedule:
    """What both loaders share: the order of an epoch, the batches of a rank, the position and its state."""

    def __init__(self, data, batch_size, train, augment, seed, device, drop_last, channels_last, rank, world_size):
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if rank >= world_size:
            raise ValueError(f"rank must be below world_size ({world_size}), got {rank}")
        self.seed = _check_int("seed", seed, 0)
        if augment is not None and not isinstance(augment, Augment):
            raise TypeError(f"augment must be an Augment (Augment.from_names([...])) or None, got "
                            f"{type(augment).__name__}")
        if augment is not None and not train:
            raise ValueError("augment is for training; a test loader (train=False) takes augment=None")
        self.data, self.train, self.augment = data, bool(train), augment
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.device, self.channels_last = torch.device(device), bool(channels_last)
        self.num_samples = len(data)
        self.global_batch_size = batch_size * world_size
        if self.drop_last and self.global_batch_size > self.num_samples:
            procs = f" x {world_size} processes = {self.global_batch_size}" if world_size > 1 else ""
            raise ValueError(f"batch size {batch_size}{procs} is larger than the {self.num_samples:,} images of "
                             f"{data.name} {data.split}, so every batch would be dropped; use a batch size of at "
                             f"most {self.num_samples // world_size}")
        self.epoch, self.batch = 0, 0
        mean = torch.tensor(data.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as (x - 255 mean) * (1 / (255 std)): one subtraction and one multiplication
        self._mean, self._inv_std, self._mean255, self._inv_std255 = mean, 1 / std, mean * 255, 1 / (std * 255)

    def __len__(self) -> int:
        """Batches (steps) per epoch, the same on every rank."""
        if self.drop_last:
            return self.num_samples // self.global_batch_size
        return math.ceil(self.num_samples / self.global_batch_size)

    def set_position(self, epoch: int, batch: int) -> None:
        """Make the next batch yielded batch `batch` of epoch `epoch` (batch == len(self): the epoch is done)."""
        _check_int("epoch", epoch, 0)
        _check_int("batch", batch, 0)
        if batch > len(self):
            raise ValueError(f"batch must be at most {len(self)} (batches per epoch), got {batch}")
        self.epoch, self.batch = epoch, batch

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch, and what must match for it to mean the same batch on resume."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "global_batch_size": self.global_batch_size, "num_samples": self.num_samples}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "global_batch_size", "num_samples"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"loader state has {key}={state[key]} but this loader has {getattr(self, key)}; "
                                 f"resuming would not see the same batches")
        self.set_position(state["epoch"], state["batch"])

    def _order(self, epoch: int) -> torch.Tensor | None:
        """The epoch's sample order (CPU int64), or None for the test split's file order."""
        if not self.train:
            return None
        return torch.randperm(self.num_samples, generator=_generator(self.seed, epoch))

    def _rows(self, b: int) -> tuple[int, int, int]:
        """(start of global batch b in the order, its size m, this rank's rows lo:hi of it)."""
        start = b * self.global_batch_size
        m = min(self.global_batch_size, self.num_samples - start)
        lo, hi = m * self.rank // self.world_size, m * (self.rank + 1) // self.world_size
        return start, m, lo, hi

    def _augment(self, x: torch.Tensor, epoch: int, b: int, m: int, lo: int, hi: int, out) -> torch.Tensor:
        params = self.augment.draw(m, tuple(x.shape[-2:]), _generator(self.seed, epoch, b), out)
        params = [{k: v.to(self.device, non_blocking=True) for k, v in p.items()}
                  for p in slice_params(params, lo, hi)]
        return self.augment.apply(x, params, out)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """(x / 255 - mean) / std for uint8, (x - mean) / std for float in 0..1 units; channels_last if asked."""
        if x.dtype == torch.uint8:
            x = x.float().sub_(self._mean255).mul_(self._inv_std255)
        else:
            x = (x - self._mean).mul_(self._inv_std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class BatchLoader(_Schedule):
    """Batches of an in-memory dataset, indexed, augmented and normalised on the device.

    Iterating runs the rest of the current epoch, then advances to the next: `for epoch ...: for x, y in loader`.

    Args:
        batch_size: per process; a step's global batch is batch_size * world_size.
        train: shuffle each epoch (and drop the last short batch unless drop_last=False); otherwise file order.
        augment: applied to training batches; None for none.
        seed: the order and augmentation of every batch are a function of (seed, epoch, batch) alone.
        device: where the uint8 images live (moved once) and the batches are made.
        rank, world_size: this process's share of each global batch (see the module docstring). A short last
            batch (drop_last=False) is split as evenly as possible; a rank may get an empty one.
    """

    def __init__(self, data: ImageData, batch_size: int, *, train: bool, augment: Augment | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", drop_last: bool | None = None,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1):
        if not isinstance(data, ImageData):
            raise TypeError(f"BatchLoader takes an ImageData, got {type(data).__name__}"
                            + ("; use StreamLoader (or make_loader) for image folders"
                               if isinstance(data, FolderData) else ""))
        super().__init__(data, batch_size, train, augment, seed, device, drop_last, channels_last, rank, world_size)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)

    def __iter__(self):
        epoch, first = self.epoch, self.batch
        order = self._order(epoch)
        order = order.to(self.device) if order is not None else None
        size = tuple(self.images.shape[-2:])
        for b in range(first, len(self)):
            start, m, lo, hi = self._rows(b)
            if order is None:
                x, y = self.images[start + lo:start + hi], self.labels[start + lo:start + hi]
            else:
                index = order[start + lo:start + hi]
                x, y = self.images.index_select(0, index), self.labels.index_select(0, index)
            if self.augment is not None:
                x = self._augment(x, epoch, b, m, lo, hi, size)
            self.batch = b + 1
            yield self._finish(x), y
        self.epoch, self.batch = epoch + 1, 0


class _Sampler(torch.utils.data.Sampler):
    """The StreamLoader's batch sampler: this rank's index lists from the loader's current position on."""

    def __init__(self, loader: StreamLoader):
        self.loader, self.epoch, self.first = loader, 0, 0

    def __len__(self) -> int:
        return len(self.loader) - self.first

    def __iter__(self):
        loader = self.loader
        order = loader._order(self.epoch)
        for b in range(self.first, len(loader)):
            start, _, lo, hi = loader._rows(b)
            yield order[start + lo:start + hi].tolist() if order is not None else list(range(start + lo, start + hi))


class StreamLoader(_Schedule):
    """Batches of an image folder: files decoded in DataLoader workers, batches augmented on the device.

    Same interface and the same exactness as BatchLoader: the order comes from (seed, epoch), the augmentation
    from (seed, epoch, batch), and `set_position` starts the sampler at that batch, decoding none of the
    skipped files. Workers decode each file to a load_size square; training batches are then augmented (the
    augmentation must crop to the input size, e.g. random_resized_crop or random_crop), test batches are
    centre-cropped to it.

    Args:
        num_workers: decoding processes (default min(4, CPU count)); 0 decodes in this process.
    """

    def __init__(self, data: FolderData, batch_size: int, *, train: bool, augment: Augment | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", drop_last: bool | None = None,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int | None = None):
        if not isinstance(data, FolderData):
            raise TypeError(f"StreamLoader takes a FolderData (load_dataset('imagefolder:PATH', ...)), got "
                            f"{type(data).__name__}; use BatchLoader for in-memory datasets")
        super().__init__(data, batch_size, train, augment, seed, device, drop_last, channels_last, rank, world_size)
        workers = min(4, os.cpu_count() or 1) if num_workers is None else _check_int("num_workers", num_workers, 0)
        self._sampler = _Sampler(self)
        self._loader = torch.utils.data.DataLoader(
            FolderDataset(data), batch_sampler=self._sampler, num_workers=workers,
            collate_fn=Collate(data.channels, data.load_size), pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0)

    def __iter__(self):
        epoch, first = self.epoch, self.batch
        size = self.data.size
        if first < len(self):
            self._sampler.epoch, self._sampler.first = epoch, first
            for b, (x, y) in enumerate(self._loader, start=first):
                _, m, lo, hi = self._rows(b)
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.augment is not None:
                    x = self._augment(x, epoch, b, m, lo, hi, size)
                    if tuple(x.shape[-2:]) != size:
                        raise ValueError(f"the augmentation {list(self.augment.names)} gives {x.shape[-2]}x"
                                         f"{x.shape[-1]} images from the {self.data.load_size}px loads, but the "
                                         f"input size is {size[0]}x{size[1]}; start it with random_resized_crop, "
                                         f"scale_jitter or random_crop")
                else:
                    x = center_crop(x, size)
                self.batch = b + 1
                yield self._finish(x), y
        self.epoch, self.batch = epoch + 1, 0


def make_loader(data, batch_size: int, **kwargs):
    """A BatchLoader for an in-memory ImageData, a StreamLoader for a FolderData; same arguments."""
    if isinstance(data, FolderData):
        return StreamLoader(data, batch_size, **kwargs)
    kwargs.pop("num_workers", None)
    return BatchLoader(data, batch_size, **kwargs)
