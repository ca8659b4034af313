"""Batched data augmentation: every operation transforms a whole batch with tensor ops, no per-image Python.

An `Augment` is a sequence of named operations (AUGMENTATIONS). Applying it is two steps, so that a batch's
randomness is a pure function of a seed and the batch can be split across processes exactly:

    params = augment.draw(n, (H, W), generator)   # small CPU tensors, one row per image, drawn in a fixed order
    x = augment.apply(x, params)                  # any rows of params apply to the matching rows of x

Drawing on the CPU makes the batches identical on every device. Geometric operations keep uint8 batches uint8
(cropping and flipping are exact); resampling and colour operations work in float, in 0..1 units, and convert a
uint8 batch (x / 255) first. Normalisation is the loader's job and comes last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AUGMENTATIONS", "Augment", "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "center_crop", "flip", "ten_crop"]

AUGMENTATIONS = {  # name: one line for `cnnzoo recipes`
    "crop_pad4": "zero-pad 4 px on every side, then a random crop back to the input size (He et al. 2016, "
                 "Sec. 4.2: CIFAR)",
    "crop_pad2": "zero-pad 2 px on every side, then a random crop back to the input size (a shift of at most 2 px: "
                 "half a pixel of an 8x8 digit resized to 32x32)",
    "random_crop": "a random crop of the output size, no padding (Krizhevsky et al. 2012, Sec. 4.1: 224x224 "
                   "patches of the 256x256 images)",
    "flip": "horizontal flip of each image with probability 0.5",
    "random_resized_crop": "a random box of 8-100% of the area and aspect ratio 3/4-4/3, resized to the output "
                           "size (Szegedy et al. 2015, Sec. 6; torchvision's RandomResizedCrop)",
    "scale_jitter": "rescale so the shorter side is S ~ U[256, 512] (for a 224 output; scaled with it), then a "
                    "random crop of the output size (Simonyan & Zisserman 2015, Sec. 3.1)",
    "pca_lighting": "add sum_i alpha_i lambda_i p_i to every pixel, alpha_i ~ N(0, 0.1), with ImageNet's RGB "
                    "eigenpairs (Krizhevsky et al. 2012, Sec. 4.1)",
}

# Eigenvalues and eigenvectors (columns) of the covariance of ImageNet's RGB pixel values in 0..1 units, as
# published with fb.resnet.torch (datasets/imagenet.lua), the figures every PyTorch port of AlexNet's "PCA
# lighting" uses; AlexNet (Sec. 4.1) describes the method but does not print them.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))

Params = dict[str, torch.Tensor]
Size = tuple[int, int]


def _size(size) -> Size | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return tuple(size)


def _index(u: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Uniform integers 0..n-1 from uniform floats in [0, 1) (float64, so rounding never reaches n)."""
    return torch.minimum((u * n).floor(), n - 1).long()


def _crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-image h x w crops at (top, left), any dtype, as one index_select of whole crop rows.

    The flat images are viewed (without copying) as a matrix whose row k is the w values starting at element
    k; each crop row is then one row of it. This copies w values at a time and is 3-4x faster on the CPU than
    a per-element gather.
    """
    b, c, height, width = x.shape
    if x.numel() == 0:
        return x.new_empty((b, c, h, w))
    flat = x.contiguous().view(-1)
    rows = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
    dev = x.device
    image = (torch.arange(b, device=dev) * (c * height * width)).view(b, 1, 1)
    channel = (torch.arange(c, device=dev) * (height * width)).view(1, c, 1)
    row = (top.to(dev).view(b, 1, 1) + torch.arange(h, device=dev).view(1, 1, h)) * width + left.to(dev).view(b, 1, 1)
    return rows.index_select(0, (image + channel + row).view(-1)).view(b, c, h, w)


def _resample(x: torch.Tensor, box: torch.Tensor, out: Size) -> torch.Tensor:
    """Bilinear crops of the boxes (top, left, height, width in pixels, one row per image) resized to `out`.

    The same as cropping each box and resizing it with F.interpolate (bilinear, align_corners=False, no
    antialiasing), but one grid_sample for the batch. The grid is built with elementwise ops (not
    affine_grid's batched matmul), so each image's output is the same whatever batch it is in.
    """
    b, _, height, width = x.shape
    box = box.to(device=x.device, dtype=torch.float32)
    top, left, h, w = box.unbind(1)
    oh, ow = out
    ys = (torch.arange(oh, device=x.device, dtype=torch.float32) + 0.5) / oh
    xs = (torch.arange(ow, device=x.device, dtype=torch.float32) + 0.5) / ow
    # sample points in pixel-edge coordinates, kept within the box's outer pixel centres as resizing the crop
    # alone would (F.interpolate clamps at the crop's border), then mapped from 0..H to -1..1
    py = torch.maximum(torch.minimum(top[:, None] + ys[None, :] * h[:, None], (top + h - 0.5)[:, None]),
                       (top + 0.5)[:, None])
    px = torch.maximum(torch.minimum(left[:, None] + xs[None, :] * w[:, None], (left + w - 0.5)[:, None]),
                       (left + 0.5)[:, None])
    gy, gx = py * (2 / height) - 1, px * (2 / width) - 1
    grid = torch.stack((gx[:, None, :].expand(b, oh, ow), gy[:, :, None].expand(b, oh, ow)), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class _Op:
    """One augmentation: `draw` makes per-image parameters on the CPU, `apply` uses them on a batch."""

    name = ""

    def out_size(self, size: Size, out: Size) -> Size:
        return size

    def draw(self, n: int, size: Size, out: Size, g: torch.Generator) -> Params:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, p: Params, out: Size) -> torch.Tensor:
        raise NotImplementedError


class _CropPad(_Op):
    name = "crop_pad4"
    pad = 4

    def draw(self, n, size, out, g):
        return {"offset": torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g)}  # (top, left), 0..8

    def apply(self, x, p, out):
        b, c, h, w = x.shape
        padded = x.new_zeros((b, c, h + 2 * self.pad, w + 2 * self.pad))
        padded[:, :, self.pad:self.pad + h, self.pad:self.pad + w] = x
        return _crop(padded, p["offset"][:, 0], p["offset"][:, 1], h, w)


class _CropPad2(_CropPad):
    name = "crop_pad2"
    pad = 2


class _RandomCrop(_Op):
    name = "random_crop"

    def out_size(self, size, out):
        if out[0] > size[0] or out[1] > size[1]:
            raise ValueError(f"random_crop: the output {out[0]}x{out[1]} is larger than the images "
                             f"{size[0]}x{size[1]}; load them larger or use random_resized_crop")
        return out

    def draw(self, n, size, out, g):
        room = torch.tensor([size[0] - out[0] + 1, size[1] - out[1] + 1], dtype=torch.float64)
        return {"offset": _index(torch.rand(n, 2, generator=g, dtype=torch.float64), room)}

    def apply(self, x, p, out):
        return _crop(x, p["offset"][:, 0], p["offset"][:, 1], *out)


class _Flip(_Op):
    name = "flip"

    def draw(self, n, size, out, g):
        return {"flip": torch.rand(n, generator=g) < 0.5}

    def apply(self, x, p, out):
        mask = p["flip"].to(x.device)
        if x.dtype == torch.uint8:  # x + mask * (mirror - x), exact in modulo-256 arithmetic; 4x faster than where
            return x + (x.flip(-1) - x) * mask.to(torch.uint8).view(-1, 1, 1, 1)
        if x.device.type != "cpu":  # nonzero() would wait for the GPU; where() does not
            return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
        chosen = mask.nonzero().squeeze(1)  # on the CPU, copying the flipped images is 5x faster than where()
        return x.index_copy(0, chosen, x.index_select(0, chosen).flip(-1))


class _RandomResizedCrop(_Op):
    """Szegedy et al. 2015's crop as torchvision implements it: ten tries, then a centre crop of the whole image."""

    name = "random_resized_crop"
    scale, ratio, tries = (0.08, 1.0), (3 / 4, 4 / 3), 10

    def out_size(self, size, out):
        return out

    def draw(self, n, size, out, g):
        height, width = size
        area = torch.empty(n, self.tries, dtype=torch.float64).uniform_(*self.scale, generator=g) * height * width
        log_ratio = torch.empty(n, self.tries, dtype=torch.float64).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g)
        place = torch.rand(n, 2, generator=g, dtype=torch.float64)
        aspect = log_ratio.exp()
        w, h = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits, as torchvision's loop
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        # no try fits: the whole image, its aspect ratio clamped to the range
        if width / height < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            fw, fh = round(height * self.ratio[1]), height
        else:
            fw, fh = width, height
        any_ok = ok.any(1)
        w = torch.where(any_ok, w, torch.full_like(w, fw))
        h = torch.where(any_ok, h, torch.full_like(h, fh))
        top = torch.where(any_ok, _index(place[:, 0], height - h + 1).double(), (height - h).div(2).floor())
        left = torch.where(any_ok, _index(place[:, 1], width - w + 1).double(), (width - w).div(2).floor())
        return {"box": torch.stack((top, left, h, w), dim=1)}

    def apply(self, x, p, out):
        return _resample(_float(x), p["box"], out)


class _ScaleJitter(_Op):
    """VGG's training scale S ~ U[256, 512], then a crop: one resampled box per image (exact up to the grid)."""

    name = "scale_jitter"
    scales, reference = (256.0, 512.0), 224  # S range for a 224 crop; other output sizes scale it

    def out_size(self, size, out):
        return out

    def draw(self, n, size, out, g):
        height, width = size
        s = torch.empty(n, dtype=torch.float64).uniform_(*self.scales, generator=g) * min(out) / self.reference
        place = torch.rand(n, 2, generator=g, dtype=torch.float64)
        factor = torch.clamp(s / min(height, width), min=max(out[0] / height, out[1] / width))  # crop must fit
        h, w = out[0] / factor, out[1] / factor  # the crop's extent in the source image
        return {"box": torch.stack((place[:, 0] * (height - h), place[:, 1] * (width - w), h, w), dim=1)}

    def apply(self, x, p, out):
        return _resample(_float(x), p["box"], out)


class _PCALighting(_Op):
    name = "pca_lighting"
    std = 0.1

    def draw(self, n, size, out, g):
        alpha = torch.randn(n, 3, generator=g) * self.std
        eigval, eigvec = torch.tensor(IMAGENET_EIGVAL), torch.tensor(IMAGENET_EIGVEC)
        rgb = (eigvec[None] * (alpha * eigval)[:, None, :]).sum(-1)  # rgb_i = sum_j p_ij alpha_j lambda_j
        return {"alpha": alpha, "rgb": rgb}  # the shift is computed here, on the CPU, once per image

    def apply(self, x, p, out):
        if x.shape[1] != 3:
            raise ValueError(f"pca_lighting needs RGB images (3 channels), got {x.shape[1]}")
        return _float(x) + p["rgb"].to(x.device).view(-1, 3, 1, 1)


_OPS = {op.name: op for op in (_CropPad(), _CropPad2(), _RandomCrop(), _Flip(), _RandomResizedCrop(), _ScaleJitter(),
                               _PCALighting())}
assert set(_OPS) == set(AUGMENTATIONS)


@dataclass(frozen=True)
class Augment:
    """A sequence of named augmentations (see AUGMENTATIONS), applied to whole batches in order.

    `size` is the output (H, W) of the cropping and resizing operations; None takes the size the loader asks
    for (the model's input), else the input's.
    """

    names: tuple[str, ...]
    size: Size | None = None

    def __post_init__(self):
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        for name in names:
            if name not in _OPS:
                raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "size", _size(self.size))

    @classmethod
    def from_names(cls, names, size=None) -> Augment:
        """`Augment.from_names(["crop_pad4", "flip"])`, `(["random_resized_crop", "flip"], size=224)`."""
        return cls(tuple(names) if not isinstance(names, str) else (names,), size)

    def out_size(self, size: Size, out: Size | None = None) -> Size:
        """(H, W) of the batch this produces from size (H, W) images."""
        out = self.size or _size(out) or tuple(size)
        for name in self.names:
            size = _OPS[name].out_size(tuple(size), out)
        return tuple(size)

    def draw(self, n: int, size: Size, generator: torch.Generator, out: Size | None = None) -> list[Params]:
        """Parameters for a batch of n images of size (H, W): one dict per operation, one row per image."""
        out = self.size or _size(out) or tuple(size)
        params = []
        for name in self.names:
            op = _OPS[name]
            next_size = op.out_size(tuple(size), out)
            params.append(op.draw(n, tuple(size), out, generator))
            size = next_size
        return params

    def apply(self, x: torch.Tensor, params: list[Params], out: Size | None = None) -> torch.Tensor:
        """The batch transformed with `params` (rows aligned with x's images: slice both alike)."""
        if x.dim() != 4:
            raise ValueError(f"augmentations take a batch (B, C, H, W), got shape {tuple(x.shape)}")
        out = self.size or _size(out) or tuple(x.shape[-2:])
        for name, p in zip(self.names, params, strict=True):
            x = _OPS[name].apply(x, p, out)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, out: Size | None = None):
        """Draw and apply in one step: uint8 in, uint8 out for crops and flips; float 0..1 out otherwise."""
        params = self.draw(x.shape[0], tuple(x.shape[-2:]), generator or torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,)))), out)
        return self.apply(x, params, out)


def slice_params(params: list[Params], lo: int, hi: int) -> list[Params]:
    """The rows lo:hi of every parameter: what one process applies to its share of a global batch."""
    return [{k: v[lo:hi] for k, v in p.items()} for p in params]


def center_crop(x: torch.Tensor, size) -> torch.Tensor:
    """The centre size x size (or (h, w)) crop of a batch (..., H, W), torchvision's rounding of the offsets."""
    h, w = _size(size)
    height, width = x.shape[-2:]
    if h > height or w > width:
        raise ValueError(f"center_crop: {h}x{w} is larger than the images {height}x{width}")
    top, left = int(round((height - h) / 2)), int(round((width - w) / 2))
    return x[..., top:top + h, left:left + w]


def flip(x: torch.Tensor) -> torch.Tensor:
    """Test-time views: the batch and its mirror, stacked as (2, B, C, H, W); average the model over dim 0."""
    return torch.stack((x, x.flip(-1)))


def ten_crop(x: torch.Tensor, size) -> torch.Tensor:
    """AlexNet's test-time views (Sec. 4.1 and 6): the 4 corner and the centre crops and their mirrors.

    Returns (10, B, C, h, w): top-left, top-right, bottom-left, bottom-right, centre, then the same five
    mirrored. `.flatten(0, 1)` gives one (10 * B, C, h, w) batch, view-major.
    """
    h, w = _size(size)
    height, width = x.shape[-2:]
    if h > height or w > width:
        raise ValueError(f"ten_crop: {h}x{w} is larger than the images {height}x{width}")
    crops = [x[..., :h, :w], x[..., :h, width - w:], x[..., height - h:, :w], x[..., height - h:, width - w:],
             center_crop(x, (h, w))]
    return torch.stack(crops + [c.flip(-1) for c in crops])
