"""Datasets by name, held in memory as uint8 tensors, and `fit` to convert them to a model's input.

Small datasets (the digits, MNIST, Fashion-MNIST, CIFAR) fit in memory as uint8: CIFAR-10's 50,000 training
images are 150 MB, and keeping them as bytes on the training device lets the loader index, augment and normalise
whole batches there, with no per-image Python (airbench's approach). The files are read from torchvision's
on-disk layout with our own readers (see formats.py), so a torchvision download is reused as it is.
"""

from __future__ import annotations

import difflib
import gzip
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnzoo.data.augment import Augment
from cnnzoo.data.formats import read_cifar_pickle, read_idx

__all__ = ["DATASETS", "ImageData", "default_root", "fit", "load_dataset", "load_size_for"]

DATASETS = {  # name: one line for `cnnzoo recipes` and error messages
    "digits": "scikit-learn's 1,797 8x8 handwritten digits, 10 classes; test = a fixed random 20% of each class",
    "mnist": "LeCun et al.'s 70,000 28x28 handwritten digits (60,000 train / 10,000 test), 10 classes",
    "fashion-mnist": "Xiao et al.'s 70,000 28x28 Zalando clothing images, 10 classes",
    "cifar10": "Krizhevsky's 60,000 32x32 colour images (50,000 train / 10,000 test), 10 classes",
    "cifar100": "Krizhevsky's 60,000 32x32 colour images, 100 fine classes",
    "imagefolder:PATH": "your images: PATH/train/<class>/*.jpg|png and PATH/val/<class>/...; streamed from disk",
    "fake[:CxHxW]": "random learnable images (default 3x32x32): 10 classes, 512 train / 128 test, fixed seed",
}

SPLITS = {"train": "train", "test": "test", "val": "test"}  # "val" is the name ImageNet-style folders use

# torchvision's folders under the data root, and the names of its downloaders
_MNIST_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MNIST_CLASSES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),  # Xiao, Rasul & Vollgraf 2017, Table 1
}
_CIFAR = {  # name: (folder, train files, test files, meta file, meta key, labels key, classes)
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                "batches.meta", "label_names", "labels", 10),
    "cifar100": ("cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels", 100),
}
_DOWNLOADERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale and PIL's convert("L")
LUMA = (0.299, 0.587, 0.114)


@dataclass
class ImageData:
    """A dataset split held in memory: uint8 images (N, C, H, W), int64 labels, and the train split's statistics.

    `mean` and `std` are per channel in 0..1 units and always come from the dataset's training split, so the
    test split is normalised exactly as the model saw the training data.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    classes: tuple[str, ...]
    name: str
    split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.dim() != 4:
            got = f"{self.images.dtype} tensor of shape {tuple(self.images.shape)}" if isinstance(
                self.images, torch.Tensor) else type(self.images).__name__
            raise ValueError(f"{self.name}: images must be a uint8 tensor (N, C, H, W), got a {got}")
        n, c = self.images.shape[:2]
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or \
                tuple(self.labels.shape) != (n,):
            raise ValueError(f"{self.name}: labels must be an int64 tensor of shape ({n},), one per image, got "
                             f"{getattr(self.labels, 'dtype', type(self.labels).__name__)} of shape "
                             f"{tuple(getattr(self.labels, 'shape', ()))}")
        self.classes = tuple(self.classes)
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"{self.name}: mean and std need one value per channel ({c}), got {len(self.mean)} "
                             f"and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise ValueError(f"{self.name} {self.split}: labels run from {int(self.labels.min())} to "
                             f"{int(self.labels.max())}, expected 0 to {len(self.classes) - 1} "
                             f"({len(self.classes)} classes)")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __repr__(self) -> str:
        c, h, w = self.input_size
        return (f"ImageData({self.name} {self.split}: {len(self):,} images {c}x{h}x{w}, {self.num_classes} "
                f"classes)")


def default_root() -> Path:
    """Where datasets live unless `root=` says otherwise: $CNNZOO_DATA, else ~/.cache/cnnzoo/data."""
    return Path(os.environ.get("CNNZOO_DATA") or "~/.cache/cnnzoo/data").expanduser()


def load_dataset(spec: str, split: str, *, root: str | os.PathLike | None = None, download: bool = False):
    """One split of a dataset by name (see DATASETS): an `ImageData` in memory, or a `FolderData` to stream.

    Args:
        spec: "cifar10", "mnist", "fake:1x28x28", "imagefolder:/data/imagenet", ...
        split: "train" or "test" ("val" is the same as "test").
        root: the folder holding the downloaded files in torchvision's layout (default: `default_root()`).
        download: fetch missing MNIST/Fashion-MNIST/CIFAR files with torchvision's downloaders.
    """
    name, arg = _parse_spec(spec)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test' ('val' means 'test')")
    split = SPLITS[split]
    if name == "imagefolder":
        from cnnzoo.data.folder import load_folder

        return load_folder(arg, split)
    root = Path(root).expanduser() if root is not None else default_root()
    images, labels, classes = _read(name, arg, split, root, download)
    key = (name, arg, str(root.resolve()), _signature(name, root))
    if key not in _STATS:
        train = images if split == "train" else _read(name, arg, "train", root, download)[0]
        _STATS[key] = channel_stats(train)
    mean, std = _STATS[key]
    return ImageData(images, labels, classes, name=name if name != "fake" else f"fake:{arg}", split=split,
                     mean=mean, std=std)


_STATS: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}  # train statistics, per process


def _parse_spec(spec: str) -> tuple[str, str | None]:
    if not isinstance(spec, str):
        raise TypeError(f"dataset must be a name like 'cifar10', got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    known = {k.split(":")[0].split("[")[0] for k in DATASETS}
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"unknown dataset {spec!r}; {hint}known datasets: {', '.join(DATASETS)}")
    if name == "imagefolder":
        if not arg:
            raise ValueError("imagefolder needs a folder: 'imagefolder:PATH' with PATH/train/<class>/ and "
                             "PATH/val/<class>/")
        return name, arg
    if name == "fake":
        return name, _fake_shape(arg or "3x32x32")
    if arg:
        raise ValueError(f"dataset {name!r} takes no ':' argument, got {spec!r}")
    return name, None


def _read(name, arg, split, root, download) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    if name == "digits":
        return _read_digits(split)
    if name == "fake":
        return _read_fake(split, arg)
    if name in _MNIST_DIRS:
        return _read_mnist(name, split, root, download)
    return _read_cifar(name, split, root, download)


def _signature(name: str, root: Path) -> tuple:
    """Names, sizes and modification times of a dataset's files: the statistics cache is stale if they change."""
    folder = {**{k: f"{v}/raw" for k, v in _MNIST_DIRS.items()}, **{k: v[0] for k, v in _CIFAR.items()}}.get(name)
    if folder is None or not (root / folder).is_dir():
        return ()
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted((root / folder).iterdir()))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in 0..1 units, computed exactly from histograms."""
    values = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        m = (counts * values).sum() / n
        var = (counts * (values - m) ** 2).sum() / n
        mean.append(float(m) / 255)
        std.append(max(float(var.sqrt()) / 255, 1e-6))  # a constant channel would divide by zero
    return tuple(mean), tuple(std)


def _missing(name: str, path: Path, also: str = "") -> FileNotFoundError:
    return FileNotFoundError(
        f"{name}: missing {path}{also}; put the file there (torchvision's layout under the data root) or pass "
        f"--download (load_dataset(..., download=True)) to fetch it")


def _download(name: str, root: Path) -> None:
    import torchvision.datasets

    builder = getattr(torchvision.datasets, _DOWNLOADERS[name])
    for train in (True, False):
        try:
            builder(str(root), train=train, download=True)
        except Exception as e:  # network errors come in many types; all end the same way
            raise RuntimeError(f"{name}: downloading into {root} failed: {e}") from e


def _read_mnist(name: str, split: str, root: Path, download: bool):
    folder = root / _MNIST_DIRS[name] / "raw"

    def find(stem):
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        return None

    stems = _MNIST_FILES[split]
    if download and any(find(s) is None for s in stems):
        _download(name, root)
    paths = []
    for stem in stems:
        path = find(stem)
        if path is None:
            raise _missing(name, folder / stem, also=" (or .gz)")
        paths.append(path)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name}: {paths[0]} holds {images.shape[0]} images but {paths[1]} holds "
                         f"{labels.shape[0]} labels; they must match")
    return images.unsqueeze(1).contiguous(), labels.long(), _MNIST_CLASSES[name]


def _read_cifar(name: str, split: str, root: Path, download: bool):
    folder_name, train_files, test_files, meta_file, meta_key, labels_key, num_classes = _CIFAR[name]
    folder = root / folder_name
    files = train_files if split == "train" else test_files
    if download and not all((folder / f).is_file() for f in files):
        _download(name, root)
    images, labels = [], []
    for f in files:
        path = folder / f
        if not path.is_file():
            raise _missing(name, path)
        batch = read_cifar_pickle(path)
        data, lab = batch.get("data"), batch.get(labels_key)
        if not isinstance(data, torch.Tensor) or data.dim() != 2 or data.shape[1] != 3 * 32 * 32:
            got = f"shape {tuple(data.shape)}" if isinstance(data, torch.Tensor) else type(data).__name__
            raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072) (3x32x32 images), got {got}")
        if not isinstance(lab, list) or len(lab) != data.shape[0] or not all(isinstance(v, int) for v in lab):
            raise ValueError(f"{path}: {labels_key!r} must be a list of {data.shape[0]} ints, one per image")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(torch.tensor(lab, dtype=torch.int64))
    classes = tuple(str(i) for i in range(num_classes))
    if (folder / meta_file).is_file():
        names = read_cifar_pickle(folder / meta_file).get(meta_key)
        if isinstance(names, list) and len(names) == num_classes:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return torch.cat(images), torch.cat(labels), classes


def _sklearn_origin() -> str | None:
    """scikit-learn's __init__.py, found without importing the package (which takes seconds); None if absent."""
    spec = importlib.util.find_spec("sklearn")
    return spec.origin if spec is not None else None


def _read_digits(split: str):
    """scikit-learn's copy of the UCI optical digits test set (Alpaydin & Kaynak 1998): 1,797 8x8 images, 0..16.

    The split is fixed, random and stratified (as scikit-learn's train_test_split(stratify=y) makes it): each
    class's images are shuffled by a generator seeded with 0, and the last 20% (rounded down) of them are the test
    split; the rest train (1,442 / 355). File order is not used: the file groups images by writer, and a split by
    position would test on writers never seen in training (an SVM then gets 94-96% instead of 98-99%). Values
    0..16 scale to 0..255 as round(v * 255 / 16).
    """
    origin = _sklearn_origin()
    if origin is None:
        raise ModuleNotFoundError("the digits dataset is the file scikit-learn ships; install it with "
                                  "pip install 'cnnzoo[digits]' (or pip install scikit-learn)")
    path = Path(origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"digits: {path} is missing from the scikit-learn installation; reinstall it with "
                                f"pip install --force-reinstall scikit-learn")
    with gzip.open(path, "rt") as f:
        rows = [[int(v) for v in line.split(",")] for line in f if line.strip()]
    table = torch.tensor(rows, dtype=torch.int64)
    if table.shape[1] != 65 or int(table[:, :64].max()) > 16:
        raise ValueError(f"{path}: expected rows of 64 pixel values 0..16 and a label, got {table.shape[1]} "
                         f"columns")
    pixels, labels = table[:, :64], table[:, 64]
    test = torch.zeros(len(labels), dtype=torch.bool)
    shuffle = torch.Generator().manual_seed(0)
    for c in range(10):
        where = (labels == c).nonzero().squeeze(1)
        where = where[torch.randperm(len(where), generator=shuffle)]
        test[where[len(where) - len(where) // 5:]] = True
    keep = test if split == "test" else ~test
    images = ((pixels[keep] * 255 + 8) // 16).to(torch.uint8).reshape(-1, 1, 8, 8)
    return images, labels[keep], tuple(str(i) for i in range(10))


_FAKE_IMAGES = {"train": 512, "test": 128}


def _fake_limit() -> tuple[int, str]:
    """The most bytes the fake training images may take, and why: a quarter of physical memory (2 GiB if the
    system does not say how much it has)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = -1
    if total <= 0:
        return 2 << 30, "a fixed 2 GiB (the machine's memory is unknown)"
    return total // 4, f"a quarter of this machine's {_bytes(total)} of memory"


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError


def _fake_shape(arg: str) -> str:
    if not re.fullmatch(r"\d+x\d+x\d+", arg):
        raise ValueError(f"fake takes a shape CxHxW of positive ints such as 'fake:3x32x32', got 'fake:{arg}'")
    limit, why = _fake_limit()
    if any(len(v.lstrip("0")) > 18 for v in arg.split("x")):  # int64 sizes would overflow
        raise ValueError(f"fake:{arg} has a dimension of more than 18 digits, far more than memory holds: the "
                         f"largest allowed is {_bytes(limit)} of training images ({why}); use a shape such as "
                         f"'fake:3x32x32'")
    c, h, w = (int(v) for v in arg.split("x"))
    if min(c, h, w) < 1:
        raise ValueError(f"fake takes a shape CxHxW of positive ints such as 'fake:3x32x32', got 'fake:{arg}'")
    need = _FAKE_IMAGES["train"] * c * h * w  # uint8: one byte per value (Python ints: no overflow)
    if need > limit:
        largest = math.isqrt(limit // (_FAKE_IMAGES["train"] * c)) if limit >= _FAKE_IMAGES["train"] * c else 0
        hint = f"; with {c} channels the largest square is {c}x{largest}x{largest}" if largest else ""
        raise ValueError(f"fake:{arg} asks for {_FAKE_IMAGES['train']} training images of {c}x{h}x{w} = "
                         f"{_bytes(need)}, more than the largest allowed, {_bytes(limit)} ({why}){hint}; use a "
                         f"smaller shape such as 'fake:3x32x32'")
    return f"{c}x{h}x{w}"


def _read_fake(split: str, shape: str):
    """Each class is a fixed random pattern; an image is its class's pattern averaged with uniform noise."""
    c, h, w = (int(v) for v in _fake_shape(shape).split("x"))
    n = _FAKE_IMAGES[split]
    patterns = torch.randint(0, 256, (10, c, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    g = torch.Generator().manual_seed(1 if split == "train" else 2)
    labels = torch.randint(0, 10, (n,), generator=g)
    # uint8 draws are the same numbers as int64 ones; averaging in place, a chunk at a time, keeps the peak near
    # the images' own size
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    starts, step = _chunks(n, c * h * w * 2)
    for i in starts:
        chunk = images[i:i + step]
        chunk.copy_((patterns[labels[i:i + step]].to(torch.int16) + chunk) // 2)
    return images, labels, tuple(str(i) for i in range(10))


def load_size_for(augment: Augment | None, size) -> int:
    """The square an image folder is decoded at for a model input `size` (H, W, or an int) and the training
    augmentation that will run on it (the same for every split of a run, so that they are cropped alike).

    An augmentation that keeps the size (crop_pad4, crop_pad2, flip, pca_lighting: CIFAR- and MNIST-style
    recipes) expects images at the input size, so they load at max(H, W). One that crops or resizes to the
    input (random_crop, random_resized_crop, scale_jitter: `Augment.out_size` is the output, not the input),
    and no augmentation at all, take loads of 8/7 of it, the ImageNet convention (256 for 224), from which
    the test split is centre-cropped.
    """
    if augment is not None and not isinstance(augment, Augment):
        raise TypeError(f"augment must be an Augment (Augment.from_names([...])) or None, got "
                        f"{type(augment).__name__}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    larger = round(max(h, w) * 8 / 7)
    if augment is not None and augment.out_size((larger, larger), (h, w)) == (larger, larger):
        return max(h, w)
    return larger


def fit(data, input_size: tuple[int, int, int], mode: str = "resize", augment: Augment | None = None):
    """The dataset converted once, at load time, to a model's input size (C, H, W).

    Channels: 1 -> 3 repeats the grey channel; 3 -> 1 takes the BT.601 luma (0.299 R + 0.587 G + 0.114 B).
    Size: mode="pad" centres the images in a larger zero field (LeNet-5 reads MNIST's 28x28 digits centred in
    a 32x32 field, LeCun et al. 1998, Sec. III.A); otherwise (mode="resize", or a smaller input) the images are
    resized, bilinear with antialiasing, and rounded back to uint8.

    The statistics stay the training split's, converted with the channels (grey std after 3 -> 1 is the
    luma-weighted sum of the channel stds, exact for fully correlated channels); padding and resizing keep
    them, as the usual MNIST "Pad(2) then Normalize(0.1307, 0.3081)" recipe does.

    A `FolderData` takes the channels and size; its images are decoded at `load_size_for(augment, size)`: the
    input size for a training augmentation that keeps the size (crop_pad4, flip, ...), else size * 8/7 (the
    ImageNet convention, 256 for 224, also for augment=None), and cropped to size, so `mode` does not apply.
    Pass every split of a run the training augmentation, so that they load at the same size. In-memory data
    is converted to the input size whatever the augmentation.
    """
    if not (isinstance(input_size, (tuple, list)) and len(input_size) == 3 and
            all(isinstance(v, int) and v > 0 for v in input_size)):
        raise ValueError(f"input_size must be (C, H, W) with positive ints, got {input_size!r}")
    if mode not in ("resize", "pad"):
        raise ValueError(f"mode must be 'resize' or 'pad', got {mode!r}")
    c, h, w = input_size
    from cnnzoo.data.folder import FolderData

    load_size = load_size_for(augment, (h, w))  # checks augment for either kind of data
    if isinstance(data, FolderData):
        mean, std = _convert_stats(data.mean, data.std, c, data.name)
        return replace(data, channels=c, size=(h, w), load_size=load_size, mean=mean, std=std)
    if not isinstance(data, ImageData):
        raise TypeError(f"fit() takes an ImageData or FolderData from load_dataset, got {type(data).__name__}")
    mean, std = _convert_stats(data.mean, data.std, c, data.name)
    images = _convert_channels(data.images, c)
    ih, iw = images.shape[-2:]
    if (ih, iw) != (h, w):
        if mode == "pad" and h >= ih and w >= iw:
            padded = torch.zeros(images.shape[:2] + (h, w), dtype=torch.uint8)
            top, left = (h - ih) // 2, (w - iw) // 2
            padded[:, :, top:top + ih, left:left + iw] = images
            images = padded
        else:
            images = _resize(images, (h, w))
    return replace(data, images=images, mean=mean, std=std)


def _convert_stats(mean, std, channels: int, name: str):
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1 and channels == 3:
        return mean * 3, std * 3
    if len(mean) == 3 and channels == 1:
        return (sum(w * m for w, m in zip(LUMA, mean)),), (sum(w * s for w, s in zip(LUMA, std)),)
    raise ValueError(f"{name}: cannot convert {len(mean)}-channel images to {channels} channels; fit() converts "
                     f"between 1 (grey) and 3 (RGB)")


def _chunks(n: int, per_image: int):
    step = max(1, (64 << 20) // max(1, per_image))  # about 64 MB of float32 at a time
    return range(0, n, step), step


def _convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.repeat(1, channels, 1, 1)
    weights = torch.tensor(LUMA).view(1, 3, 1, 1)
    out = torch.empty((images.shape[0], 1) + tuple(images.shape[2:]), dtype=torch.uint8)
    starts, step = _chunks(images.shape[0], images[0].numel() * 4)
    for i in starts:
        grey = (images[i:i + step].float() * weights).sum(1, keepdim=True)
        out[i:i + step] = grey.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    n, c = images.shape[:2]
    out = torch.empty((n, c) + tuple(size), dtype=torch.uint8)
    starts, step = _chunks(n, c * max(images.shape[2] * images.shape[3], size[0] * size[1]) * 4)
    for i in starts:
        x = F.interpolate(images[i:i + step].float(), size=size, mode="bilinear", antialias=True,
                          align_corners=False)
        out[i:i + step] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def hold_out(data, fraction: float):
    """(rest, held): a fixed, stratified `fraction` of each class of a training split held out for validation.

    The choice depends on the data only (a generator seeded with 0), not on a run's seed, so runs with different
    seeds are compared on the same held-out images. Works on in-memory and folder splits alike.
    """
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction!r}")
    labels = data.labels
    held = torch.zeros(len(labels), dtype=torch.bool)
    shuffle = torch.Generator().manual_seed(0)
    for c in range(len(data.classes)):
        where = (labels == c).nonzero().squeeze(1)
        where = where[torch.randperm(len(where), generator=shuffle)]
        held[where[:int(round(fraction * len(where)))]] = True
    if not held.any() or held.all():
        raise ValueError(f"{data.name}: holding out {fraction:g} of {len(labels)} images leaves "
                         f"{'nothing to validate on' if not held.any() else 'nothing to train on'}")

    def take(mask: torch.Tensor, split: str):
        index = mask.nonzero().squeeze(1)
        if hasattr(data, "images"):
            return replace(data, images=data.images[index], labels=labels[index], split=split)
        return replace(data, files=tuple(data.files[i] for i in index.tolist()), labels=labels[index], split=split)

    return take(~held, data.split), take(held, "val")


def fit_mode(data, input_size) -> str:
    """Pad images that are nearly the model's size (MNIST's 28x28 digits into LeNet-5's 32x32 field, as the paper
    centres them); resize the rest (8x8 digits, 32x32 images for a 224x224 net)."""
    if not hasattr(data, "images"):
        return "resize"
    h, w = data.images.shape[-2:]
    H, W = input_size[1:]
    return "pad" if h <= H and w <= W and h >= 0.8 * H and w >= 0.8 * W else "resize"
