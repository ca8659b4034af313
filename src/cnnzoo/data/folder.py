"""Image folders (ImageNet-style: PATH/train/<class>/*.jpg, PATH/val/<class>/...), streamed from disk.

Such datasets do not fit in memory, so `load_dataset("imagefolder:PATH", split)` returns a `FolderData`: the
file list, labels and statistics. `StreamLoader` (loader.py) decodes the files in DataLoader workers, each to a
fixed uint8 `load_size` square (shorter side resized to load_size, antialiased, then centre-cropped), and then
crops, augments and normalises whole batches on the device like the in-memory loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["FolderData", "IMAGE_EXTENSIONS", "decode_file", "load_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")  # what torchvision.io.decode_image reads on every build
_STATS_IMAGES = 256  # statistics come from this many evenly spaced training images (decoded at 64x64)


@dataclass
class FolderData:
    """A split of an image folder: paths and labels, the train split's statistics, and the sizes to load at.

    `size` is the model's input (H, W) (the test split is centre-cropped to it); `load_size` is the square the
    files are decoded to before cropping. `fit()` sets both from a model's input size.
    """

    root: Path
    files: tuple[str, ...] = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    name: str
    split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    size: tuple[int, int] = (224, 224)
    load_size: int = 256

    def __post_init__(self):
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean and std need one value per channel ({self.channels})")
        if self.channels not in (1, 3):
            raise ValueError(f"{self.name}: channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.load_size < max(self.size):
            raise ValueError(f"{self.name}: load_size {self.load_size} is smaller than the input size "
                             f"{self.size[0]}x{self.size[1]}")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def __repr__(self) -> str:
        return (f"FolderData({self.name} {self.split}: {len(self):,} files, {self.num_classes} classes, loaded at "
                f"{self.load_size}x{self.load_size}, input {self.channels}x{self.size[0]}x{self.size[1]})")


def _list(folder: Path, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[str], list[int]]:
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = tuple(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: class folders {', '.join(unknown)} have no counterpart in the train folder; "
                         f"both splits must use the train split's classes")
    files, labels = [], []
    for label, cls in enumerate(classes):
        if not (folder / cls).is_dir():
            continue
        for path in sorted((folder / cls).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                files.append(str(path))
                labels.append(label)
    return classes, files, labels


def _split_folder(root: Path, split: str) -> Path:
    names = ("train",) if split == "train" else ("val", "test")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"imagefolder: missing {root / names[0]}; expected {root}/train/<class>/*.jpg and "
                            f"{root}/val/<class>/*.jpg (one folder per class)")


_CACHE: dict[tuple, tuple] = {}  # per process: (root, split) -> (classes, files, labels), root -> stats


def load_folder(path: str, split: str) -> FolderData:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: no folder {root}; expected {root}/train/<class>/*.jpg and "
                                f"{root}/val/<class>/*.jpg")
    train_dir = _split_folder(root, "train")
    classes, train_files, train_labels = _list(train_dir, None)
    if not classes:
        raise ValueError(f"imagefolder: {train_dir} has no class folders; expected {train_dir}/<class>/*.jpg")
    if not train_files:
        raise ValueError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {train_dir}")
    if split == "train":
        files, labels = train_files, train_labels
    else:
        _, files, labels = _list(_split_folder(root, split), classes)
        if not files:
            raise ValueError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under "
                             f"{_split_folder(root, split)}")
    key = (str(root.resolve()), tuple(train_files))
    if key not in _CACHE:
        _CACHE[key] = _stats(train_files)
    mean, std = _CACHE[key]
    return FolderData(root=root, files=tuple(files), labels=torch.tensor(labels, dtype=torch.int64), classes=classes,
                      name=f"imagefolder:{path}", split=split, mean=mean, std=std)


def _stats(files: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from cnnzoo.data.datasets import channel_stats

    step = max(1, len(files) // _STATS_IMAGES)
    images = torch.stack([decode_file(f, 64, 3) for f in files[::step][:_STATS_IMAGES]])
    return channel_stats(images)


def decode_file(path: str, load_size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 (channels, load_size, load_size): shorter side resized (antialiased), centre crop."""
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2.functional import center_crop, resize

    try:
        image = decode_image(read_file(path), mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)
    except RuntimeError as e:
        raise ValueError(f"cannot decode {path}: {e}") from None
    image = resize(image, [load_size], antialias=True)
    return center_crop(image, [load_size, load_size])


class FolderDataset(torch.utils.data.Dataset):
    """Index -> (uint8 image at load_size, label); what the StreamLoader's DataLoader workers run."""

    def __init__(self, data: FolderData):
        self.files, self.labels = data.files, data.labels.tolist()
        self.load_size, self.channels = data.load_size, data.channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return decode_file(self.files[i], self.load_size, self.channels), self.labels[i]


class Collate:
    """Stacks a batch; an empty batch (a rank's share of a short last batch) keeps its shape."""

    def __init__(self, channels: int, load_size: int):
        self.shape = (0, channels, load_size, load_size)

    def __call__(self, samples):
        if not samples:
            return torch.empty(self.shape, dtype=torch.uint8), torch.empty(0, dtype=torch.int64)
        images, labels = zip(*samples)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)
