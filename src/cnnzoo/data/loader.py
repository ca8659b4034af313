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
import weakref

import torch

from cnnzoo.data.augment import Augment, center_crop, slice_params
from cnnzoo.data.datasets import ImageData
from cnnzoo.data.folder import BadImageError, Collate, FolderData, FolderDataset, decode_file

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

    def _augment(self, x: torch.Tensor, epoch: int, b: int, m: int, lo: int, hi: int, out,
                 kept: torch.Tensor | None = None) -> torch.Tensor:
        """Augment this rank's rows lo:hi of global batch b; `kept`: the rows of them x holds (files skipped)."""
        params = slice_params(self.augment.draw(m, tuple(x.shape[-2:]), _generator(self.seed, epoch, b), out), lo, hi)
        if kept is not None:  # each kept image gets the parameters it has in the full batch
            params = [{k: v.index_select(0, kept) for k, v in p.items()} for p in params]
        params = [{k: v.to(self.device, non_blocking=True) for k, v in p.items()} for p in params]
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
    """The StreamLoader's batch sampler: this rank's index lists from the loader's current position on.

    It holds the loader weakly: a cycle (loader -> DataLoader -> sampler -> loader) would leave the loader to the
    cyclic garbage collector, whose teardown order makes the worker shutdown wait out its 5 s timeouts.
    """

    def __init__(self, loader: StreamLoader):
        self.loader, self.epoch, self.first = weakref.proxy(loader), 0, 0

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
    skipped files. Workers decode each file to a load_size square; training batches are then augmented, test
    batches centre-cropped to the input size. The augmentation must give the input size from the load size:
    one that crops (random_crop, random_resized_crop, scale_jitter) from loads larger than the input, one that
    keeps the size (crop_pad4, flip, ...) from loads at the input size; `fit(data, input_size, augment=augment)`
    chooses the load size so (`load_size_for`).

    A file that cannot be decoded raises BadImageError (one line: the file and the reason), in a worker or not.
    With skip_bad_images=True it is dropped from its batch instead, which becomes smaller, and its path is
    appended to `skipped` (in the order met, each once). Decoding is deterministic, so a resumed run skips the
    same files in the same batches, and every other image keeps the augmentation it has in the full batch. A
    training batch (this rank's share of it) whose every file is bad is never yielded empty, as a loss over no
    images is NaN and distributed ranks must all step: it holds one stand-in instead, the first decodable file
    after the batch in the epoch's order (wrapping round), with the augmentation of the share's first image;
    a test batch of bad files only is yielded empty, as a rank's empty share of a short last batch is.

    Args:
        num_workers: decoding processes (default min(4, CPU count)); 0 decodes in this process.
        skip_bad_images: drop undecodable files (recorded in `skipped`) instead of raising BadImageError.
    """

    def __init__(self, data: FolderData, batch_size: int, *, train: bool, augment: Augment | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", drop_last: bool | None = None,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int | None = None,
                 skip_bad_images: bool = False):
        if not isinstance(data, FolderData):
            raise TypeError(f"StreamLoader takes a FolderData (load_dataset('imagefolder:PATH', ...)), got "
                            f"{type(data).__name__}; use BatchLoader for in-memory datasets")
        super().__init__(data, batch_size, train, augment, seed, device, drop_last, channels_last, rank, world_size)
        workers = min(4, os.cpu_count() or 1) if num_workers is None else _check_int("num_workers", num_workers, 0)
        if not isinstance(skip_bad_images, bool):
            raise TypeError(f"skip_bad_images must be True or False, got {skip_bad_images!r}")
        self.skip_bad_images = skip_bad_images
        self.skipped: list[str] = []  # undecodable files met so far, in order, each once (skip_bad_images=True)
        self._skipped: set[str] = set()
        self._sampler = _Sampler(self)
        self._workers = workers
        self._loader = self._data_loader()

    def _data_loader(self) -> torch.utils.data.DataLoader:
        data = self.data
        return torch.utils.data.DataLoader(
            FolderDataset(data), batch_sampler=self._sampler, num_workers=self._workers,
            collate_fn=Collate(data.channels, data.load_size), pin_memory=self.device.type == "cuda",
            persistent_workers=self._workers > 0)

    def __iter__(self):
        epoch, first = self.epoch, self.batch
        if first < len(self):
            self._sampler.epoch, self._sampler.first = epoch, first
            failed = None
            for b, (x, y, kept, bad) in enumerate(self._loader, start=first):
                try:
                    x, y = self._batch(x, y, kept, bad, epoch, b)
                except Exception as e:
                    failed = e
                    break
                self.batch = b + 1
                yield x, y
            if failed is not None:
                # a fresh DataLoader: the old one's workers stop now, while its queues are intact, rather than
                # when the garbage collector reaches the traceback's cycle (a 5 s timeout per worker)
                self._loader = self._data_loader()
                raise failed
        self.epoch, self.batch = epoch + 1, 0

    def _batch(self, x, y, kept, bad, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch b as decoded by the workers -> on the device, augmented or centre-cropped, normalised."""
        size = self.data.size
        _, m, lo, hi = self._rows(b)
        if bad:
            x, y, kept = self._bad(bad, x, y, kept, epoch, b)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.augment is None:
            return self._finish(center_crop(x, size)), y
        if self.data.load_size == max(size) and size[0] != size[1]:
            x = center_crop(x, size)  # loads at the input size (a size-keeping augmentation): a non-square input
        x = self._augment(x, epoch, b, m, lo, hi, size, kept if bad else None)
        if tuple(x.shape[-2:]) != size:
            raise ValueError(f"the augmentation {list(self.augment.names)} gives {x.shape[-2]}x{x.shape[-1]} images "
                             f"from the {self.data.load_size}px loads, but the input size is {size[0]}x{size[1]}; "
                             f"start it with random_resized_crop, scale_jitter or random_crop, or load the images "
                             f"at the size the augmentation needs with fit(data, input_size, augment=augment)")
        return self._finish(x), y

    def _bad(self, bad, x, y, kept, epoch: int, b: int):
        """Raise the batch's first undecodable file, or record them all and return what is left of the batch."""
        if not self.skip_bad_images:
            raise BadImageError(*bad[0])
        for path, _ in bad:
            self._skip(path)
        if len(kept) == 0 and self.train:
            x, y = self._stand_in(epoch, b)
            kept = torch.zeros(1, dtype=torch.int64)
        return x, y, kept

    def _skip(self, path: str) -> None:
        if path not in self._skipped:
            self._skipped.add(path)
            self.skipped.append(path)

    def _stand_in(self, epoch: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first decodable file after global batch b in the epoch's order, wrapping round (decoded here)."""
        order = self._order(epoch)
        start, m, _, _ = self._rows(b)
        data = self.data
        for k in range(self.num_samples):
            i = (start + m + k) % self.num_samples
            index = int(order[i]) if order is not None else i
            try:
                image = decode_file(data.files[index], data.load_size, data.channels)
            except BadImageError as e:
                self._skip(e.path)
                continue
            return image.unsqueeze(0), data.labels[index:index + 1].clone()
        raise ValueError(f"{data.name} {data.split}: none of its {self.num_samples:,} files decodes; the "
                         f"undecodable files are listed in the loader's `skipped`")


def make_loader(data, batch_size: int, **kwargs):
    """A BatchLoader for an in-memory ImageData, a StreamLoader for a FolderData; same arguments (num_workers and
    skip_bad_images apply to image folders only: in-memory images are decoded already)."""
    if isinstance(data, FolderData):
        return StreamLoader(data, batch_size, **kwargs)
    kwargs.pop("num_workers", None)
    kwargs.pop("skip_bad_images", None)
    return BatchLoader(data, batch_size, **kwargs)
