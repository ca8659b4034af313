"""Image folders that must never fail silently or with a traceback: empty class folders, the load size a recipe's
augmentation needs, every image mode Pillow reads, corrupt files (raised in one line, or skipped), and fake
shapes too large for memory. Every image is a few pixels, written here with Pillow.
"""

import io
import pickle
import struct
import zlib

import pytest
import torch
from PIL import Image

from cnnzoo.data import Augment, BadImageError, StreamLoader, fit, load_dataset, load_size_for, make_loader
from cnnzoo.data import datasets as datasets_module
from cnnzoo.data.folder import IMAGE_EXTENSIONS, decode_file
from cnnzoo.data.loader import seed_of


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread


def _noise(w, h, mode="RGB", seed=0):
    g = torch.Generator().manual_seed(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    values = torch.randint(0, 256, (h, w, bands), generator=g, dtype=torch.uint8)
    return Image.frombytes(mode, (w, h), values.numpy().tobytes())


def _folder(root, per_class=3, classes=("cat", "dog"), splits=("train", "val")):
    """root/<split>/<class>/<i>.png, sizes varying around 6x5."""
    for split in splits:
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                _noise(5 + i, 6 - i % 2, seed=100 * k + i).save(root / split / cls / f"{i}.png")
    return f"imagefolder:{root}"


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


# ---------------------------------------------------------------------------------------------- A: empty class folders

def test_an_empty_train_class_folder_is_refused_by_name(tmp_path):
    spec = _folder(tmp_path)
    (tmp_path / "train" / "emu").mkdir()
    (tmp_path / "train" / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"class folder .*train/emu holds no images; .*\.png") as e:
        load_dataset(spec, "train")
    assert "train/cat" not in str(e.value)
    (tmp_path / "train" / "yak").mkdir()
    with pytest.raises(ValueError, match=r"class folders .*train/emu, .*train/yak hold no images"):
        load_dataset(spec, "val")  # the val split is refused too: the classes come from the train split


def test_an_empty_val_class_folder_is_refused_a_missing_one_is_not(tmp_path):
    spec = _folder(tmp_path)
    for f in (tmp_path / "val" / "dog").iterdir():
        f.unlink()
    assert len(load_dataset(spec, "train")) == 6
    with pytest.raises(ValueError, match=r"class folder .*val/dog holds no images"):
        load_dataset(spec, "val")
    (tmp_path / "val" / "dog").rmdir()
    val = load_dataset(spec, "val")
    assert val.classes == ("cat", "dog") and val.labels.tolist() == [0, 0, 0]


# ---------------------------------------------------------------------------------------------- B: the load size

def test_the_load_size_follows_the_augmentation(tmp_path):
    keep = [["crop_pad4", "flip"], ["crop_pad2"], ["flip"], ["flip", "pca_lighting"]]
    crop = [["random_crop", "flip"], ["random_resized_crop", "flip", "pca_lighting"], ["scale_jitter"],
            ["flip", "random_crop"]]
    for names in keep:
        assert load_size_for(Augment.from_names(names), (32, 32)) == 32, names
    for names in crop:
        assert load_size_for(Augment.from_names(names, size=224), (224, 224)) == 256, names
    assert load_size_for(None, 224) == 256 and load_size_for(None, (32, 32)) == 37
    train = load_dataset(_folder(tmp_path), "train")
    assert fit(train, (3, 32, 32)).load_size == 37  # no augmentation: as before
    assert fit(train, (3, 32, 32), augment=Augment.from_names(["crop_pad4", "flip"])).load_size == 32
    assert fit(train, (3, 32, 32), augment=Augment.from_names(["random_crop"])).load_size == 37
    with pytest.raises(TypeError, match="augment must be an Augment"):
        fit(train, (3, 32, 32), augment=["crop_pad4"])
    fake = load_dataset("fake:1x8x8", "train")  # in-memory data: the augmentation changes nothing
    assert torch.equal(fit(fake, (1, 8, 8), augment=Augment.from_names(["crop_pad2"])).images, fake.images)


def _small_recipe_augmentations():
    """(augmentation names, input size) of every recipe (paper and fast) of a 28x28 or 32x32 model."""
    from cnnzoo.registry import list_models, model_card
    from cnnzoo.train.recipes import KINDS, recipe_for

    found = set()
    for name in list_models():
        size = model_card(name).input_size
        if size[1] <= 32:
            for kind in KINDS:
                try:
                    found.add((recipe_for(name, kind).augmentation, tuple(size)))
                except ValueError:  # a model without a recipe
                    pass
    return sorted(found)


def test_every_small_net_recipe_streams_batches_of_the_input_size(tmp_path):
    cases = _small_recipe_augmentations()
    assert (("crop_pad2",), (1, 32, 32)) in cases and (("crop_pad4", "flip"), (3, 32, 32)) in cases
    cases += [(("random_resized_crop", "flip"), (3, 32, 32)), (("random_crop", "flip"), (3, 32, 32)),
              (("random_crop",), (1, 28, 28)), (("crop_pad4", "flip"), (3, 24, 32)), ((), (3, 32, 32))]
    spec = _folder(tmp_path)
    train_folder, val_folder = load_dataset(spec, "train"), load_dataset(spec, "val")
    for names, size in cases:
        augment = Augment.from_names(names, size=size[1:]) if names else None
        train = fit(train_folder, size, augment=augment)
        val = fit(val_folder, size, augment=augment)
        assert train.load_size == val.load_size
        x, y = next(iter(StreamLoader(train, 4, train=True, augment=augment, seed=0, num_workers=0)))
        assert x.shape == (4, *size) and x.dtype == torch.float32, (names, size)
        x, _ = next(iter(StreamLoader(val, 4, train=False, num_workers=0)))
        assert x.shape == (4, *size), (names, size)
    # the safety net stays: loads at 8/7 of the input (augment not passed to fit) with a size-keeping augmentation
    augment = Augment.from_names(["crop_pad4", "flip"])
    with pytest.raises(ValueError, match=r"gives 37x37 images .* input size is 32x32; .*fit\(data, input_size, "
                                         r"augment=augment\)"):
        next(iter(StreamLoader(fit(train_folder, (3, 32, 32)), 4, train=True, augment=augment, num_workers=0)))


# ---------------------------------------------------------------------------------------------- C: every image mode

def _png16_rgb(path, values):
    """A 16-bit RGB PNG (colour type 2, bit depth 16), which Pillow cannot write."""
    h, w = len(values), len(values[0])
    raw = b"".join(b"\x00" + b"".join(struct.pack(">3H", *px) for px in row) for row in values)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


# mode, file type, fill value, expected (grey, RGB) of the top-left pixel (None: lossy, not checked)
MODES = [
    ("1", "png", 1, 255, (255, 255, 255)),
    ("L", "png", 100, 100, (100, 100, 100)),
    ("LA", "png", (100, 0), 255, (255, 255, 255)),  # fully transparent: white
    ("LA", "png", (100, 255), 100, (100, 100, 100)),
    ("P", "png", 3, 124, (200, 100, 50)),
    ("P", "gif", 3, 124, (200, 100, 50)),
    ("PA", "tiff", (3, 0), 255, (255, 255, 255)),
    ("RGB", "png", (10, 20, 30), 18, (10, 20, 30)),
    ("RGB", "jpg", (10, 20, 30), None, None),
    ("RGBA", "png", (200, 100, 50, 0), 255, (255, 255, 255)),
    ("RGBA", "png", (200, 100, 50, 255), 124, (200, 100, 50)),
    ("RGBA", "webp", (200, 100, 50, 128), None, None),
    ("L", "webp", 100, None, None),  # webp has no grey format: it reads back as RGB
    ("CMYK", "jpg", (0, 0, 0, 0), None, None),
    ("CMYK", "tiff", (0, 0, 0, 0), 255, (255, 255, 255)),
    ("YCbCr", "tiff", (128, 128, 128), 128, (128, 128, 128)),
    ("I;16", "png", 40000, 156, (156,) * 3),  # 40000 * 255 / 65535 = 155.6: scaled, not clipped to 255
    ("I;16", "tiff", 65535, 255, (255,) * 3),
    ("I", "tiff", 32768, 128, (128,) * 3),
    ("F", "tiff", 0.5, 128, (128,) * 3),
    ("RGB", "bmp", (10, 20, 30), 18, (10, 20, 30)),
    ("L", "tif", 7, 7, (7, 7, 7)),
]


@pytest.mark.parametrize("mode,ext,fill,grey,rgb", MODES, ids=[f"{m[0]}-{m[1]}-{i}" for i, m in enumerate(MODES)])
def test_every_mode_decodes_to_uint8_grey_or_rgb(tmp_path, mode, ext, fill, grey, rgb):
    image = Image.new(mode, (5, 3), fill)
    if mode in ("P", "PA"):
        image.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 200, 100, 50])
    path = tmp_path / f"image.{ext}"
    image.save(path)
    for channels, expected in ((1, grey), (3, rgb)):
        x = decode_file(str(path), 4, channels)
        assert x.dtype == torch.uint8 and x.shape == (channels, 4, 4), (mode, ext, channels)
        if expected is not None:
            assert x[:, 1, 1].tolist() == ([expected] if channels == 1 else list(expected)), (mode, ext, channels)


def test_sixteen_bit_rgb_png_and_transparent_gif(tmp_path):
    _png16_rgb(tmp_path / "deep.png", [[(0, 32768, 65535)] * 3] * 2)
    assert decode_file(str(tmp_path / "deep.png"), 2, 3)[:, 0, 0].tolist() == [0, 128, 255]
    assert decode_file(str(tmp_path / "deep.png"), 2, 1).shape == (1, 2, 2)
    gif = Image.new("P", (4, 4), 0)
    gif.putpalette([0, 0, 0, 200, 100, 50])
    gif.putpixel((0, 0), 1)
    gif.save(tmp_path / "clear.gif", transparency=0)
    x = decode_file(str(tmp_path / "clear.gif"), 4, 3)
    assert x[:, 0, 0].tolist() == [200, 100, 50] and x[:, 3, 3].tolist() == [255, 255, 255]


def _mixed_folder(root):
    """Two classes, each a mix of modes and file types (16-bit PNG, grey webp, RGBA webp, palette GIF, ...)."""
    files = [("L", "webp"), ("RGBA", "webp"), ("I;16", "png"), ("P", "gif"), ("LA", "png"), ("CMYK", "jpg"),
             ("RGB", "bmp"), ("L", "tiff"), ("1", "tif"), ("RGB", "jpeg")]
    for split in ("train", "val"):
        for k, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i, (mode, ext) in enumerate(files):
                rgb = _noise(4 + i % 3, 5, seed=10 * k + i)
                image = rgb.convert(mode) if mode != "I;16" else Image.new("I;16", (5, 4), 1000 * (i + 1) + 30000 * k)
                image.save(root / split / cls / f"{i}.{ext}")
    (root / "train" / "b" / "README").write_text("not an image")
    return f"imagefolder:{root}"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_folder_mixing_modes_streams(tmp_path, workers):
    spec = _mixed_folder(tmp_path)
    assert {".bmp", ".gif", ".tif", ".tiff", ".webp"} <= set(IMAGE_EXTENSIONS)
    train = load_dataset(spec, "train")
    assert len(train) == 20
    for size in ((1, 8, 8), (3, 8, 8)):
        augment = Augment.from_names(["crop_pad2", "flip"])
        data = fit(train, size, augment=augment)
        batches = _batches(StreamLoader(data, 5, train=True, augment=augment, num_workers=workers))
        assert [x.shape for x, _ in batches] == [(5, *size)] * 4
        val = fit(load_dataset(spec, "val"), size, augment=augment)
        assert sum(len(y) for _, y in StreamLoader(val, 8, train=False, num_workers=workers)) == 20


# ---------------------------------------------------------------------------------------------- D: corrupt files

def _with_bad_file(root, kind="truncated"):
    spec = _folder(root, per_class=4)
    bad = root / "train" / "dog" / "2.jpg"
    if kind == "truncated":
        buffer = io.BytesIO()
        _noise(16, 16).save(buffer, "JPEG")
        bad.write_bytes(buffer.getvalue()[:200])
    else:
        bad.write_bytes(b"\xff\xd8\xff garbage " * 20)
    return spec, str(bad)


def test_bad_image_error_is_one_line_and_pickles(tmp_path):
    _, bad = _with_bad_file(tmp_path, "garbage")
    with pytest.raises(BadImageError) as e:
        decode_file(bad, 8, 3)
    message = str(e.value)
    assert isinstance(e.value, ValueError) and "\n" not in message and message.startswith(f"cannot decode {bad}: ")
    assert "skip_bad_images=True" in message and e.value.path == bad
    copy = pickle.loads(pickle.dumps(e.value))
    assert str(copy) == message and copy.path == bad
    assert "\n" not in str(BadImageError("a\nb.png", "line one\nline two"))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_file_raises_one_clean_line(tmp_path, workers):
    spec, bad = _with_bad_file(tmp_path)
    train = fit(load_dataset(spec, "train"), (3, 8, 8))  # the statistics leave the bad file to the loader
    loader = make_loader(train, 3, train=True, augment=Augment.from_names(["random_crop", "flip"]),
                         num_workers=workers)
    with pytest.raises(BadImageError) as e:
        _batches(loader)
    message = str(e.value)
    assert message.startswith(f"cannot decode {bad}: ") and "\n" not in message
    assert "Traceback" not in message and "worker" not in message


def test_skipping_bad_files_is_recorded_and_exactly_resumable(tmp_path):
    spec, bad = _with_bad_file(tmp_path)
    train = fit(load_dataset(spec, "train"), (3, 8, 8))
    augment = Augment.from_names(["random_resized_crop", "flip"])

    def make():
        return make_loader(train, 3, train=True, augment=augment, seed=3, num_workers=0, skip_bad_images=True)

    loader = make()
    first = _batches(loader)
    assert len(first) == len(loader) == 3 and sorted(len(y) for _, y in first) == [2, 3, 3]  # 9 files
    assert loader.skipped == [bad]
    loader.set_position(0, 0)
    assert _same(_batches(loader), first) and loader.skipped == [bad]  # met again, listed once
    at = next(b for b, (_, y) in enumerate(first) if len(y) == 2)
    resumed = make()
    resumed.set_position(0, at)
    assert _same(_batches(resumed), first[at:]) and resumed.skipped == [bad]
    # every other image keeps the augmentation it has in the full batch: mend the file and compare
    _noise(6, 6).save(bad, "PNG")
    whole = _batches(make())
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, whole) if len(a[1]) == 3)
    x, y = first[at]
    full_x, full_y = whole[at]
    kept = [i for i in range(3) if any(torch.equal(full_x[i], row) for row in x)]
    assert len(kept) == 2 and torch.equal(full_y[kept], y)


def test_a_batch_of_bad_files_only(tmp_path):
    spec, bad = _with_bad_file(tmp_path)
    train = fit(load_dataset(spec, "train"), (3, 8, 8))
    # training: never an empty batch; a stand-in, the next file in the epoch order, keeps every step
    loader = StreamLoader(train, 1, train=True, seed=0, num_workers=0, skip_bad_images=True)
    batches = _batches(loader)
    assert len(batches) == 9 and all(x.shape == (1, 3, 8, 8) for x, _ in batches) and loader.skipped == [bad]
    order = torch.randperm(9, generator=torch.Generator().manual_seed(seed_of(0, 0))).tolist()  # epoch 0's
    where = [train.files[i] for i in order].index(bad)
    after = (where + 1) % 9
    assert torch.equal(batches[where][0], batches[after][0]) and torch.equal(batches[where][1], batches[after][1])
    # a test batch of bad files only is yielded empty, as a rank's empty share is
    shapes = [tuple(x.shape) for x, _ in StreamLoader(train, 1, train=False, num_workers=0, skip_bad_images=True)]
    assert shapes.count((0, 3, 8, 8)) == 1 and len(shapes) == 9
    with pytest.raises(TypeError, match="skip_bad_images must be True or False"):
        StreamLoader(train, 1, train=False, skip_bad_images="yes")
    assert make_loader(load_dataset("fake:1x8x8", "test"), 4, train=False, skip_bad_images=True)  # in memory: moot


def test_skipping_in_two_workers_matches_the_main_process(tmp_path):
    spec, bad = _with_bad_file(tmp_path)
    train = fit(load_dataset(spec, "train"), (3, 8, 8))
    augment = Augment.from_names(["random_crop", "flip"])
    runs = []
    for workers in (0, 2):
        loader = StreamLoader(train, 3, train=True, augment=augment, seed=5, num_workers=workers,
                              skip_bad_images=True)
        runs.append((_batches(loader), loader.skipped))
    assert _same(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1] == [bad]


# ---------------------------------------------------------------------------------------------- E: fake shapes

def test_fake_shapes_too_large_for_memory_are_refused(monkeypatch):
    with pytest.raises(ValueError, match=r"fake:3x100000x100000 asks for 512 training images .* TiB, more than the "
                                         r"largest allowed, .* GiB \(a quarter of this machine's"):
        load_dataset("fake:3x100000x100000", "train")
    with pytest.raises(ValueError, match="more than 18 digits"):
        load_dataset("fake:3x99999999999999999999x99999999999999999999", "test")
    with pytest.raises(ValueError, match="largest allowed"):
        load_dataset("fake:4611686018427387904x2x2", "train")  # 512 * C * 4 bytes overflows int64
    monkeypatch.setattr(datasets_module, "_fake_limit", lambda: (512 * 3 * 8 * 8, "a test's limit"))
    assert load_dataset("fake:3x8x8", "train").images.shape == (512, 3, 8, 8)
    with pytest.raises(ValueError, match=r"= 108.0 KiB, more than the largest allowed, 96.0 KiB \(a test's "
                                         r"limit\); with 3 channels the largest square is 3x8x8"):
        load_dataset("fake:3x8x9", "train")
