"""cnnzoo.data: dataset readers on small files written in the real formats, fit, loaders, augmentations.

Nothing here downloads: MNIST idx files, CIFAR pickles and an image folder are written to tmp_path.
"""

import collections
import gzip
import pickle
import struct

import pytest
import torch
import torch.nn.functional as F

from cnnzoo.data import (AUGMENTATIONS, Augment, BatchLoader, FolderData, ImageData, StreamLoader, center_crop, fit,
                         flip, load_dataset, make_loader, ten_crop)
from cnnzoo.data import datasets as datasets_module
from cnnzoo.data.augment import IMAGENET_EIGVAL, IMAGENET_EIGVEC, slice_params


# torchvision 0.29+ deprecates its image codecs in favour of TorchCodec; they still work and the spec uses them
pytestmark = [pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]  # tiny tensors: one thread


def _images(n, c=3, h=32, w=32, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _data(n=40, c=3, h=16, w=16, seed=0, split="train"):
    labels = torch.arange(n) % 10
    return ImageData(_images(n, c, h, w, seed), labels, tuple(map(str, range(10))), name="toy", split=split,
                     mean=(0.5,) * c, std=(0.25,) * c)


# ---------------------------------------------------------------------------------------------- MNIST (idx)

def _write_idx(path, array: torch.Tensor, gz=False, magic=None):
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) if magic is None else struct.pack(">I", magic)
    raw = header + struct.pack(f">{len(dims)}I", *dims) + array.numpy().tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def _write_mnist(root, folder="MNIST", n_train=12, n_test=6, gz=False):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = _images(n, 1, 28, 28, seed=n)[:, 0]
        labels = (torch.arange(n) * 7 % 10).to(torch.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
        out[split] = images, labels
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_round_trip(tmp_path, name, folder, gz):
    written = _write_mnist(tmp_path, folder, gz=gz)
    for split in ("train", "test"):
        data = load_dataset(name, split, root=tmp_path)
        images, labels = written[split]
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(images), 1, 28, 28)
        assert data.labels.dtype == torch.int64
        assert torch.equal(data.images[:, 0], images) and torch.equal(data.labels, labels.long())
        assert len(data.classes) == 10 and data.split == split and data.name == name
    assert folder != "FashionMNIST" or data.classes[0] == "T-shirt/top"


def test_test_split_uses_train_statistics(tmp_path):
    written = _write_mnist(tmp_path)
    test = load_dataset("mnist", "test", root=tmp_path)
    train_images = written["train"][0].double() / 255
    assert test.mean == pytest.approx((train_images.mean().item(),), rel=1e-9)
    assert test.std == pytest.approx((train_images.std(unbiased=False).item(),), rel=1e-9)
    assert load_dataset("mnist", "train", root=tmp_path).mean == test.mean


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_truncated_idx_names_file_and_sizes(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    path = tmp_path / "MNIST" / "raw" / ("train-images-idx3-ubyte" + ".gz" * gz)
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    cut = raw[:-100]
    path.write_bytes(gzip.compress(cut) if gz else cut)
    with pytest.raises(ValueError, match="truncated") as e:
        load_dataset("mnist", "train", root=tmp_path)
    assert str(path) in str(e.value) and f"{len(cut):,} bytes" in str(e.value) and f"{len(raw):,}" in str(e.value)


def test_idx_wrong_magic(tmp_path):
    _write_mnist(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    _write_idx(labels, torch.zeros(12, dtype=torch.uint8), magic=0x00000803)  # images' magic on a labels file
    with pytest.raises(ValueError, match=r"magic number 0x00000803, expected 0x00000801"):
        load_dataset("mnist", "train", root=tmp_path)


@pytest.mark.parametrize("name,missing", [
    ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
    ("fashion-mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
    ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ("cifar100", "cifar-100-python/train"),
])
def test_missing_files_say_where_and_download(tmp_path, name, missing):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, "train", root=tmp_path)
    assert str(tmp_path / missing) in str(e.value) and "--download" in str(e.value)


def test_default_root_from_environment(tmp_path, monkeypatch):
    _write_mnist(tmp_path)
    monkeypatch.setenv("CNNZOO_DATA", str(tmp_path))
    assert len(load_dataset("mnist", "test")) == 6


# ---------------------------------------------------------------------------------------------- CIFAR (pickle)

def _write_cifar(root, name="cifar10", per_batch=4, protocol=2):
    pytest.importorskip("numpy")  # the real files hold numpy arrays
    if name == "cifar10":
        folder, files, labels_key, classes = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + [
            "test_batch"], b"labels", 10
        meta = ("batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": [b"c%d" % i for i in range(10)],
                                 b"num_vis": 3072})
    else:
        folder, files, labels_key, classes = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
        meta = ("meta", {b"fine_label_names": [b"f%d" % i for i in range(100)],
                         b"coarse_label_names": [b"k%d" % i for i in range(20)]})
    folder.mkdir(parents=True)
    written = {}
    for k, f in enumerate(files):
        images = _images(per_batch, seed=k)
        labels = [(k * per_batch + i) * 7 % classes for i in range(per_batch)]
        batch = {b"batch_label": f"batch {k}".encode(), labels_key: labels, b"data": images.reshape(per_batch, -1).numpy(),
                 b"filenames": [b"img%d.png" % i for i in range(per_batch)]}
        if name == "cifar100":
            batch[b"coarse_labels"] = [v % 20 for v in labels]
        (folder / f).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[f] = images, labels
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=protocol))
    return folder, written


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_cifar10_round_trip(tmp_path, protocol):
    _, written = _write_cifar(tmp_path, protocol=protocol)
    train = load_dataset("cifar10", "train", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, torch.cat([written[f"data_batch_{i}"][0] for i in range(1, 6)]))
    assert train.labels.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.classes == tuple(f"c{i}" for i in range(10))
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert torch.equal(test.images, written["test_batch"][0]) and test.mean == train.mean


def test_cifar100_fine_labels(tmp_path):
    _, written = _write_cifar(tmp_path, "cifar100", per_batch=6)
    data = load_dataset("cifar100", "test", root=tmp_path)
    assert torch.equal(data.images, written["test"][0]) and data.labels.tolist() == written["test"][1]
    assert len(data.classes) == 100 and data.classes[3] == "f3"


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("payload", [Payload(), {b"data": Payload()}, {b"x": collections.OrderedDict()}],
                         ids=["callable", "nested", "class"])
def test_pickle_with_arbitrary_class_is_refused(tmp_path, capsys, payload):
    folder, _ = _write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="refusing to load .*data_batch_3: it references"):
        load_dataset("cifar10", "train", root=tmp_path)
    assert "never run" not in capsys.readouterr().out


def test_cifar_shapes_validated(tmp_path):
    np = pytest.importorskip("numpy")
    folder, _ = _write_cifar(tmp_path)
    bad = {b"data": np.zeros((4, 100), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be .*\(N, 3072\).*got shape \(4, 100\)"):
        load_dataset("cifar10", "test", root=tmp_path)
    bad = {b"data": np.zeros((4, 3072), dtype=np.int64), b"labels": [0, 1, 2, 3]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match="expected unsigned bytes"):
        load_dataset("cifar10", "test", root=tmp_path)
    bad = {b"data": np.zeros((4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 10]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match="labels run from 0 to 10, expected 0 to 9"):
        load_dataset("cifar10", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------- names, digits, fake

def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; did you mean cifar10.*known datasets: digits"):
        load_dataset("cifar", "train")
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'; known datasets: digits, mnist, fashion-mnist"):
        load_dataset("svhn", "train")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("fake", "validation")


def test_digits():
    pytest.importorskip("sklearn", reason="digits is the file scikit-learn ships: pip install 'cnnzoo[digits]'")
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 255
    counts = torch.bincount(train.labels, minlength=10) + torch.bincount(test.labels, minlength=10)
    assert torch.equal(torch.bincount(test.labels, minlength=10), counts // 5)  # stratified: 20% of each class
    assert test.mean == train.mean
    # fits LeNet-5 and ResNet-20 inputs
    assert fit(train, (1, 32, 32)).images.shape[1:] == (1, 32, 32)
    assert fit(test, (3, 32, 32)).images.shape[1:] == (3, 32, 32)


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setattr(datasets_module, "_sklearn_origin", lambda: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'cnnzoo\[digits\]'"):
        load_dataset("digits", "train")


def test_fake():
    train, test = load_dataset("fake", "train"), load_dataset("fake:1x28x20", "test")
    assert train.images.shape == (512, 3, 32, 32) and test.images.shape == (128, 1, 28, 20)
    assert torch.equal(train.images, load_dataset("fake", "train").images)  # fixed seed
    with pytest.raises(ValueError, match="CxHxW"):
        load_dataset("fake:32x32", "train")


# ---------------------------------------------------------------------------------------------- fit

def test_fit_pad_centres_and_resize_scales():
    data = _data(4, c=1, h=28, w=28)
    padded = fit(data, (1, 32, 32), mode="pad")
    assert padded.images.shape == (4, 1, 32, 32)
    assert torch.equal(padded.images[:, :, 2:30, 2:30], data.images)
    assert padded.images.sum() == data.images.sum()  # the border is zero
    assert padded.mean == data.mean
    resized = fit(data, (1, 32, 32))
    expect = F.interpolate(data.images.float(), (32, 32), mode="bilinear", antialias=True).round().clamp(0, 255)
    assert torch.equal(resized.images, expect.to(torch.uint8))
    assert fit(data, (1, 14, 14), mode="pad").images.shape == (4, 1, 14, 14)  # smaller: resized
    assert len(data) == 4 and data.images.shape == (4, 1, 28, 28)  # the input is untouched


def test_fit_channels():
    grey = _data(3, c=1, h=8, w=8)
    rgb = fit(grey, (3, 8, 8))
    assert all(torch.equal(rgb.images[:, c], grey.images[:, 0]) for c in range(3)) and rgb.mean == grey.mean * 3
    colour = _data(3, c=3, h=8, w=8)
    luma = fit(colour, (1, 8, 8))
    expect = (0.299 * colour.images[:, 0].float() + 0.587 * colour.images[:, 1].float() +
              0.114 * colour.images[:, 2].float())
    assert (luma.images[:, 0].float() - expect).abs().max() <= 0.5 + 1e-4
    assert luma.mean == pytest.approx((0.5,))
    with pytest.raises(ValueError, match="between 1 .* and 3"):
        fit(colour, (2, 8, 8))
    with pytest.raises(ValueError, match="mode must be"):
        fit(colour, (3, 8, 8), mode="crop")


# ---------------------------------------------------------------------------------------------- BatchLoader

def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


CROP_FLIP = Augment.from_names(["crop_pad4", "flip"])
IMAGENET_STYLE = Augment.from_names(["random_resized_crop", "flip", "pca_lighting"], size=12)


@pytest.mark.parametrize("augment", [CROP_FLIP, IMAGENET_STYLE], ids=["crop_pad4+flip", "rrc+flip+pca"])
def test_loader_deterministic_and_resumable(augment):
    data = _data(50)
    make = lambda seed=3: BatchLoader(data, 8, train=True, augment=augment, seed=seed)  # noqa: E731
    loader = make()
    assert len(loader) == 6  # 50 // 8, the short batch dropped
    epoch0, epoch1 = _batches(loader), _batches(loader)
    assert loader.state_dict()["epoch"] == 2 and loader.batch == 0
    assert _same(epoch0, _batches(make())) and not _same(epoch0, epoch1)
    assert not _same(epoch0, _batches(make(seed=4)))
    x, y = epoch0[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (8, 3, *augment.out_size((16, 16)))
    # killed after batch 2 of epoch 1: a fresh loader resumes with exactly the rest of that epoch
    run = make()
    run.set_position(1, 0)
    it = iter(run)
    for _ in range(3):
        next(it)
    state = run.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 3)
    resumed = make()
    resumed.load_state_dict(state)
    assert _same(_batches(resumed), epoch1[3:])
    fresh = make()
    fresh.set_position(2, 0)
    assert resumed.epoch == 2 and _same(_batches(resumed), _batches(fresh))


def test_loader_state_mismatch_and_bounds():
    loader = BatchLoader(_data(50), 8, train=True, seed=3)
    with pytest.raises(ValueError, match="seed=4 but this loader has 3"):
        loader.load_state_dict({"epoch": 0, "batch": 1, "seed": 4})
    with pytest.raises(ValueError, match="at most 6"):
        loader.set_position(0, 7)
    loader.set_position(0, 6)  # the epoch is done: iterating yields nothing and moves on
    assert list(loader) == [] and (loader.epoch, loader.batch) == (1, 0)


def test_test_loader_is_ordered_and_normalised():
    data = _data(21, split="test")
    loader = BatchLoader(data, 8, train=False)
    batches = _batches(loader)
    assert [len(y) for _, y in batches] == [8, 8, 5]  # nothing dropped
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)
    assert torch.allclose(x, (data.images.float() / 255 - 0.5) / 0.25, atol=1e-5)
    assert BatchLoader(data, 8, train=False, channels_last=True).__iter__().__next__()[0].is_contiguous(
        memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="augment is for training"):
        BatchLoader(data, 8, train=False, augment=CROP_FLIP)


def test_batch_larger_than_dataset():
    with pytest.raises(ValueError, match="batch size 64 is larger than the 40 images of toy train"):
        BatchLoader(_data(40), 64, train=True)
    with pytest.raises(ValueError, match=r"32 x 2 processes = 64 is larger than the 40 images"):
        BatchLoader(_data(40), 32, train=True, world_size=2)
    assert len(BatchLoader(_data(40), 64, train=False)) == 1  # evaluation: one short batch


@pytest.mark.parametrize("augment", [CROP_FLIP, IMAGENET_STYLE], ids=["crop_pad4+flip", "rrc+flip+pca"])
@pytest.mark.parametrize("drop_last", [True, False])
def test_two_ranks_equal_one_process(augment, drop_last):
    data = _data(41)  # without drop_last the last global batch is one image: rank 0's share is empty
    single = BatchLoader(data, 8, train=True, augment=augment, seed=7, drop_last=drop_last)
    ranks = [BatchLoader(data, 4, train=True, augment=augment, seed=7, drop_last=drop_last, rank=r, world_size=2)
             for r in range(2)]
    for loader in [single, *ranks]:
        loader.set_position(2, 0)
    expect, shards = _batches(single), [_batches(r) for r in ranks]
    assert len(expect) == len(shards[0]) == len(shards[1]) == (5 if drop_last else 6)
    for (x, y), (x0, y0), (x1, y1) in zip(expect, *shards):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert drop_last or (shards[0][-1][0].shape[0], shards[1][-1][0].shape[0]) == (0, 1)


def test_make_loader_picks_the_loader():
    assert isinstance(make_loader(_data(40), 8, train=True, num_workers=2), BatchLoader)
    with pytest.raises(TypeError, match="StreamLoader"):
        StreamLoader(_data(40), 8, train=True)


# ---------------------------------------------------------------------------------------------- augmentations

def test_augment_names_and_shapes():
    x = _images(5, h=20, w=24)
    for name in AUGMENTATIONS:
        out = Augment.from_names([name], size=16)(x, torch.Generator().manual_seed(0))
        keeps = name in ("crop_pad4", "crop_pad2", "flip", "pca_lighting")
        assert out.shape == ((5, 3, 20, 24) if keeps else (5, 3, 16, 16)), name
        exact = ("crop_pad4", "crop_pad2", "flip", "random_crop")
        assert out.dtype == (torch.uint8 if name in exact else torch.float32), name
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'; known: crop_pad4, crop_pad2, random_crop"):
        Augment.from_names(["crop_pad4", "mixup"])
    with pytest.raises(ValueError, match="pca_lighting needs RGB"):
        Augment.from_names(["pca_lighting"])(_images(2, c=1))


@pytest.mark.parametrize("pad", [4, 2])
def test_crop_pad_matches_per_image_reference(pad):
    x = _images(16, h=10, w=12)
    aug = Augment.from_names([f"crop_pad{pad}"])
    (p,) = aug.draw(16, (10, 12), torch.Generator().manual_seed(1))
    out = aug.apply(x, [p])
    padded = F.pad(x, (pad,) * 4)
    for i, (top, left) in enumerate(p["offset"].tolist()):
        assert 0 <= top <= 2 * pad and 0 <= left <= 2 * pad
        assert torch.equal(out[i], padded[i, :, top:top + 10, left:left + 12])
    assert len(set(map(tuple, p["offset"].tolist()))) > 1


def test_random_crop_and_flip_match_reference():
    x = _images(16, h=10, w=12)
    aug = Augment.from_names(["random_crop", "flip"], size=(6, 7))
    crop, mirror = aug.draw(16, (10, 12), torch.Generator().manual_seed(2))
    out = aug.apply(x, [crop, mirror])
    for i, ((top, left), flipped) in enumerate(zip(crop["offset"].tolist(), mirror["flip"].tolist())):
        patch = x[i, :, top:top + 6, left:left + 7]
        assert torch.equal(out[i], patch.flip(-1) if flipped else patch)
    assert 0 < int(mirror["flip"].sum()) < 16
    flipped = Augment.from_names(["flip"]).apply(x.float(), [mirror])  # float path: same images
    assert torch.equal(flipped, Augment.from_names(["flip"]).apply(x, [mirror]).float())


def test_resampled_crops_match_interpolate():
    x = _images(3, h=12, w=12).float()
    aug = Augment.from_names(["random_resized_crop"], size=(12, 12))
    whole = {"box": torch.tensor([[0.0, 0.0, 12.0, 12.0]] * 3)}
    assert torch.allclose(aug.apply(x, [whole]), x, atol=1e-3)  # the whole image at its own size: identity
    box = {"box": torch.tensor([[2.0, 3.0, 6.0, 5.0]] * 3)}
    expect = F.interpolate(x[:, :, 2:8, 3:8], size=(12, 12), mode="bilinear", align_corners=False)
    assert torch.allclose(aug.apply(x, [box]), expect, atol=1e-3)
    (p,) = aug.draw(500, (12, 20), torch.Generator().manual_seed(0))
    top, left, h, w = p["box"].unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 12).all() and (left + w <= 20).all()
    area = h * w / (12 * 20)
    assert area.min() >= 0.06 and area.max() <= 1  # 8% before rounding the sides and area.std() > 0.1


def test_scale_jitter_boxes():
    (p,) = Augment.from_names(["scale_jitter"], size=224).draw(500, (256, 256), torch.Generator().manual_seed(0))
    top, left, h, w = p["box"].unbind(1)
    shorter_side = 256 * 224 / h  # the S each box stands for
    assert torch.allclose(h, w) and shorter_side.min() >= 256 - 1e-6 and shorter_side.max() <= 512 + 1e-6
    assert (top >= 0).all() and (top + h <= 256 + 1e-9).all() and (left + w <= 256 + 1e-9).all()


def test_pca_lighting_shifts_along_imagenet_eigenvectors():
    x = _images(400, h=4, w=4)
    aug = Augment.from_names(["pca_lighting"])
    (p,) = aug.draw(400, (4, 4), torch.Generator().manual_seed(0))
    shift = aug.apply(x, [p]) - x.float() / 255
    per_image = shift[:, :, 0, 0]
    assert torch.allclose(shift, per_image[:, :, None, None].expand_as(shift), atol=1e-6)  # same for every pixel
    coords = per_image @ torch.tensor(IMAGENET_EIGVEC)  # back to eigen-coordinates: alpha_i * lambda_i
    alpha = coords / torch.tensor(IMAGENET_EIGVAL)
    assert torch.allclose(alpha, p["alpha"], atol=1e-3)
    assert alpha.std(0) == pytest.approx([0.1] * 3, rel=0.15)


def test_params_slice_like_the_batch():
    x = _images(10)
    aug = Augment.from_names(["random_resized_crop", "flip", "pca_lighting"], size=8)
    params = aug.draw(10, (32, 32), torch.Generator().manual_seed(5))
    whole = aug.apply(x, params)
    assert torch.equal(aug.apply(x[3:7], slice_params(params, 3, 7)), whole[3:7])


def test_test_time_views():
    x = torch.arange(2 * 1 * 5 * 6, dtype=torch.float32).view(2, 1, 5, 6)
    assert torch.equal(center_crop(x, 3), x[..., 1:4, 2:5])
    views = flip(x)
    assert views.shape == (2, 2, 1, 5, 6) and torch.equal(views[1], x.flip(-1))
    crops = ten_crop(x, (3, 4))
    assert crops.shape == (10, 2, 1, 3, 4)
    assert torch.equal(crops[0], x[..., :3, :4]) and torch.equal(crops[3], x[..., 2:, 2:])
    assert torch.equal(crops[4], center_crop(x, (3, 4))) and torch.equal(crops[5], crops[0].flip(-1))
    with pytest.raises(ValueError, match="larger than the images"):
        ten_crop(x, 6)


# ---------------------------------------------------------------------------------------------- image folders

def _write_folder(root):
    from torchvision.io import write_png

    sizes = [(10, 14), (14, 10), (12, 12)]
    for split, n in (("train", 3), ("val", 1)):
        for k, cls in enumerate(["dog", "cat"]):  # not sorted on purpose
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                h, w = sizes[i]
                write_png(_images(1, 3, h, w, seed=10 * k + i)[0], str(root / split / cls / f"{i}.png"))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def test_image_folder_streams(tmp_path):
    _write_folder(tmp_path)
    train = load_dataset(f"imagefolder:{tmp_path}", "train")
    assert isinstance(train, FolderData) and train.classes == ("cat", "dog") and len(train) == 6
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    train = fit(train, (3, 8, 8))
    assert train.load_size == 9 and train.input_size == (3, 8, 8)
    aug = Augment.from_names(["random_resized_crop", "flip"])
    make = lambda: StreamLoader(train, 2, train=True, augment=aug, seed=1, num_workers=0)  # noqa: E731
    loader = make()
    assert len(loader) == 3
    epoch0 = _batches(loader)
    assert epoch0[0][0].shape == (2, 3, 8, 8) and epoch0[0][0].dtype == torch.float32
    assert _same(epoch0, _batches(make()))
    resumed = make()
    resumed.set_position(0, 2)
    assert _same(_batches(resumed), epoch0[2:])
    # the same batches as the in-memory loader over the same decoded images
    from cnnzoo.data.folder import decode_file

    images = torch.stack([decode_file(f, 9, 3) for f in train.files])
    memory = ImageData(images, train.labels, train.classes, name="m", split="train", mean=train.mean, std=train.std)
    assert _same(epoch0, _batches(BatchLoader(memory, 2, train=True, augment=Augment.from_names(
        ["random_resized_crop", "flip"], size=8), seed=1)))

    val = fit(load_dataset(f"imagefolder:{tmp_path}", "val"), (3, 8, 8))
    assert val.mean == train.mean and val.labels.tolist() == [0, 1]
    two_workers = _batches(StreamLoader(val, 1, train=False, num_workers=2))
    assert [x.shape for x, _ in two_workers] == [(1, 3, 8, 8)] * 2
    with pytest.raises(ValueError, match="input size is 8x8; start it with random_resized_crop"):
        next(iter(StreamLoader(train, 2, train=True, augment=Augment.from_names(["flip"]), num_workers=0)))


def test_image_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", "train")
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing .*train; expected"):
        load_dataset(f"imagefolder:{tmp_path}", "train")
