"""Image folders (ImageNet-style: PATH/train/<class>/*.jpg, PATH/val/<class>/...), streamed from disk.

Such datasets do not fit in memory, so `load_dataset("imagefolder:PATH", split)` returns a `FolderData`: the
file list, labels and statistics. `StreamLoader` (loader.py) decodes the files in DataLoader workers, each to a
fixed uint8 `load_size` square (shorter side resized to load_size, antialiased, then centre-cropped), and then
crops, augments and normalises whole batches on the device like the in-memory loader.

Files are decoded with Pillow, whatever their mode (bilevel, grey, palette, RGB, CMYK, YCbCr, 16-bit, 32-bit
integer or float, with or without alpha), to 8-bit grey or RGB, then resized with torchvision as before. Pillow,
not torchvision.io: it reads every mode (torchvision.io gives uint16 for 16-bit PNGs and 3 channels for a grey
WebP), and it is not deprecated (torchvision 0.29 deprecates its codecs). A file it cannot decode raises
`BadImageError`, one line naming the file and the reason, which the loader raises or, if asked, skips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["BadImageError", "FolderData", "IMAGE_EXTENSIONS", "decode_file", "load_folder"]

# what Pillow reads on every build (its wheels bundle libjpeg, zlib, libwebp and libtiff)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_STATS_IMAGES = 256  # statistics come from this many evenly spaced training images (decoded at 64x64)
_BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white, as image viewers show them
_LISTED = 5  # an error names at most this many folders


class BadImageError(ValueError):
    """An image file that cannot be read or decoded; the message is one line naming the file and the reason."""

    def __init__(self, path, reason):
        self.path, self.reason = str(path), " ".join(str(reason).split()) or "unknown error"
        shown = self.path.replace("\n", "\\n").replace("\r", "\\r")
        super().__init__(f"cannot decode {shown}: {self.reason}; replace or delete the file, or skip undecodable "
                         f"files with skip_bad_images=True")

    def __reduce__(self):  # rebuilt from (path, reason), not from the message, when it crosses processes
        return BadImageError, (self.path, self.reason)


@dataclass
class FolderData:
    """A split of an image folder: paths and labels, the train split's statistics, and the sizes to load at.

    `size` is the model's input (H, W) (the test split is centre-cropped to it); `load_size` is the square the
    files are decoded to before cropping. `fit()` sets both from a model's input size and the training
    augmentation (`load_size_for`).
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


def _listing(paths: list[Path]) -> str:
    more = f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else ""
    return ", ".join(str(p) for p in paths[:_LISTED]) + more


def _list(folder: Path, classes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[str], list[int]]:
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = tuple(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: class folders {', '.join(unknown)} have no counterpart in the train folder; "
                         f"both splits must use the train split's classes")
    files, labels, empty = [], [], []
    for label, cls in enumerate(classes):
        if not (folder / cls).is_dir():  # a test split may lack a class
            continue
        count = len(files)
        for path in sorted((folder / cls).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                files.append(str(path))
                labels.append(label)
        if len(files) == count:
            empty.append(folder / cls)
    if empty:
        s = "s" if len(empty) > 1 else ""
        raise ValueError(f"imagefolder: class folder{s} {_listing(empty)} hold{'' if s else 's'} no images; every "
                         f"class folder needs at least one image file ({', '.join(IMAGE_EXTENSIONS)}): add images "
                         f"or remove the folder{s}")
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
    """One split of an image folder; every class folder must hold at least one image (the test split may lack a
    class folder, not have an empty one)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: no folder {root}; expected {root}/train/<class>/*.jpg and "
                                f"{root}/val/<class>/*.jpg")
    train_dir = _split_folder(root, "train")
    classes, train_files, train_labels = _list(train_dir, None)
    if not classes:
        raise ValueError(f"imagefolder: {train_dir} has no class folders; expected {train_dir}/<class>/*.jpg")
    if split == "train":
        files, labels = train_files, train_labels
    else:
        _, files, labels = _list(_split_folder(root, split), classes)
        if not files:
            raise ValueError(f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) under "
                             f"{_split_folder(root, split)}; expected {_split_folder(root, split)}/<class>/*.jpg")
    key = (str(root.resolve()), tuple(train_files))
    if key not in _CACHE:
        _CACHE[key] = _stats(train_files)
    mean, std = _CACHE[key]
    return FolderData(root=root, files=tuple(files), labels=torch.tensor(labels, dtype=torch.int64), classes=classes,
                      name=f"imagefolder:{path}", split=split, mean=mean, std=std)


def _stats(files: list[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel statistics of evenly spaced training images; undecodable ones are left to the loader to report."""
    from cnnzoo.data.datasets import channel_stats

    step = max(1, len(files) // _STATS_IMAGES)
    images, first_bad = [], ""
    for f in files[::step][:_STATS_IMAGES]:
        try:
            images.append(decode_file(f, 64, 3))
        except BadImageError as e:
            first_bad = first_bad or str(e)
    if not images:
        raise ValueError(f"imagefolder: none of the {len(files[::step][:_STATS_IMAGES])} images sampled for the "
                         f"statistics decodes; the first: {first_bad}")
    return channel_stats(torch.stack(images))


def decode_file(path: str, load_size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 (channels, load_size, load_size): shorter side resized (antialiased), centre crop.

    Every mode Pillow reads becomes 8-bit grey (channels=1, BT.601 luma) or RGB (channels=3): palettes are
    expanded; 16-bit data (PNG, TIFF, PGM) is scaled to 0..255 (v * 255 / 65535), 32-bit integer images likewise
    as 16-bit data, float images from 0..1; an integer or float image with values outside that nominal range is
    scaled from its own minimum..maximum. Alpha (LA, PA, RGBA, transparent palette entries) is composited over
    white. Multi-frame files (GIF, TIFF) give their first frame; EXIF orientation is not applied. A JPEG is
    decoded at a reduced DCT scale while that leaves at least twice load_size (Pillow's draft mode, as its
    `thumbnail` does).

    Raises BadImageError (one line: the file and the reason) for a file that cannot be read or decoded.
    """
    from torchvision.transforms.v2.functional import center_crop, resize

    image = read_image(path, channels, draft=2 * load_size)
    image = resize(image, [load_size], antialias=True)
    return center_crop(image, [load_size, load_size])


def read_image(path: str, channels: int, draft: int | None = None) -> torch.Tensor:
    """One image file as uint8 (channels, H, W), every Pillow mode made 8-bit grey or RGB as `decode_file` says;
    `draft`: let a JPEG decode at a reduced DCT scale that keeps at least this side. Raises BadImageError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if draft:
                image.draft("L" if channels == 1 else "RGB", (draft, draft))
            image.load()
            image = _to_mode(image, "L" if channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image file Pillow can read (unknown format or corrupt header)") from None
    except OSError as e:
        raise BadImageError(path, e.strerror if e.strerror else e) from None
    except Exception as e:  # corrupt data surfaces as many types (SyntaxError, ValueError, EOFError, struct.error)
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    # (H, W, C) as Pillow lays it out, viewed as (C, H, W): channels-last memory, torchvision's fast uint8 resize
    array = torch.from_numpy(_array(image))
    return array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1)


def _array(image):
    import numpy as np

    return np.array(image, dtype=np.uint8)  # (H, W) for "L", (H, W, 3) for "RGB"


def _to_mode(image, mode: str):
    """A loaded Pillow image as 8-bit "L" or "RGB" (see decode_file)."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scale_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("L", "RGB") and "transparency" in image.info:  # a tRNS colour key
        image = image.convert("RGBA")
    bands = image.getbands()
    if "A" in bands or "a" in bands:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, _BACKGROUND + (255,)), rgba).convert("RGB")
    if image.mode not in ("1", "L", "RGB"):  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        image = image.convert("RGB")
    return image if image.mode == mode else image.convert(mode)


def _scale_to_8bit(image):
    """A 16/32-bit integer or float image as 8-bit "L": scaled from its nominal range (see decode_file)."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image).astype(np.float64)
    low, high = (0.0, 1.0) if image.mode == "F" else (0.0, 65535.0)
    if values.size and (values.min() < low or values.max() > high or not np.isfinite(values).all()):
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # 2-D uint8: mode "L"


class FolderDataset(torch.utils.data.Dataset):
    """Index -> (uint8 image at load_size, label), or a BadImageError for an undecodable file (returned, not
    raised, so that the loader decides: raise it or skip the file); what the StreamLoader's workers run."""

    def __init__(self, data: FolderData):
        self.files, self.labels = data.files, data.labels.tolist()
        self.load_size, self.channels = data.load_size, data.channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return decode_file(self.files[i], self.load_size, self.channels), self.labels[i]
        except BadImageError as e:  # a fresh one: no traceback or context, whose frames would keep the caller's
            return BadImageError(e.path, e.reason)


class Collate:
    """Stacks a batch's decoded images: (images, labels, kept, bad).

    `kept` holds the positions in the batch of the decoded images (all of them unless files were bad), `bad`
    the (path, reason) of each undecodable file in batch order. An empty batch (a rank's share of a short last
    batch, or one of bad files only) keeps its shape.
    """

    def __init__(self, channels: int, load_size: int):
        self.shape = (0, channels, load_size, load_size)

    def __call__(self, samples):
        good = [(i, s) for i, s in enumerate(samples) if not isinstance(s, BadImageError)]
        bad = [(s.path, s.reason) for s in samples if isinstance(s, BadImageError)]
        kept = torch.tensor([i for i, _ in good], dtype=torch.int64)
        if not good:
            return torch.empty(self.shape, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), kept, bad
        images, labels = zip(*(s for _, s in good))
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64), kept, bad
