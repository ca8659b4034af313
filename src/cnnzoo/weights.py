"""Pretrained weights: torchvision's for the twins, local files, and converters for the authors' originals.

`create_model(name, pretrained=...)` comes here. `pretrained` is
  - True, or the name of one of torchvision's weights ("IMAGENET1K_V1"), for a model with a torchvision twin (its
    card's `torchvision`): the file is fetched once through torchvision's weights API into torch.hub's cache
    ($TORCH_HOME/hub/checkpoints) and read from there afterwards; offline, one error names the file and the folder;
  - a URL (https://, file://), read through the same hub cache;
  - a local file, recognised by its contents: a torch `state_dict` (torchvision's or cnnzoo's names, `.pt`/`.pth`,
    read with `weights_only=True`), a cnnzoo checkpoint, a safetensors file (`pip install 'cnnzoo[safetensors]'`),
    Detectron's MSRA ImageNet ResNets (`R-50.pkl`, `R-101.pkl`: a pickle of numpy arrays named as Caffe blobs,
    read by an unpickler that rebuilds arrays and nothing else), or timm's `inception_v4` /
    `inception_resnet_v2` state_dicts (the TF-slim releases, ported) for `inception_v4_tf` /
    `inception_resnet_v2_tf`; `pretrained="timm"` reads the latter from timm when it is installed.

Every load is strict: a file that does not fit is refused with one message naming the missing, unexpected and
wrong-shaped keys. Two adaptations are made on request, each said in one log line: `num_classes` other than the
weights' keeps the backbone and leaves the builder's fresh classifier; `in_chans` other than 3 adapts the first
convolution as timm does (`adapt_input_conv`: summed over the colours for one channel, else repeated and scaled by
3 / in_chans).

The weights' preprocessing travels with them (`Weights.preprocess`), and the loaded model carries its weights'
description as `model.pretrained_weights`, which `cnnzoo predict` reads: torchvision's resize/crop/normalisation,
Caffe's BGR order, 0..255 scale and mean subtraction for the MSRA ResNets, and TF-slim's (x - 0.5) / 0.5 at 299
pixels for the Inception releases.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import sys
import urllib.error
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

__all__ = ["Preprocess", "Weights", "WeightsUnavailableError", "list_weights", "resolve_weights", "load_pretrained",
           "read_weights_file", "msra_to_state_dict", "timm_to_state_dict", "imagenet_categories"]

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Detectron2's MODEL.PIXEL_MEAN for the MSRA backbones (defaults.py: "[103.530, 116.280, 123.675]", BGR, 0..255,
# std 1 "absorbed into conv1"): the ImageNet mean above times 255, in BGR order.
CAFFE_BGR_MEAN = (103.530, 116.280, 123.675)
SQUEEZENET_BGR_MEAN = (104.0, 117.0, 123.0)  # DeepScale's train_val.prototxt, mean_value (B, G, R), crop 227


class WeightsUnavailableError(FileNotFoundError):
    """Weights whose file is neither in torch.hub's cache nor downloadable now; the message names both places."""


@dataclass(frozen=True)
class Preprocess:
    """How the weights expect an image: resize the shorter side, centre-crop, scale, normalise, order channels.

    `mean` and `std` are in the units of `pixel_scale` (1: pixels in 0..1; 255: in 0..255, as Caffe).
    """

    resize: int
    crop: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"
    pixel_scale: float = 1.0
    channel_order: str = "RGB"  # "RGB" | "BGR" (Caffe)
    channels: int = 3  # 1: grey images (a checkpoint trained on MNIST)

    def describe(self) -> str:
        scale = "0..255" if self.pixel_scale == 255 else "0..1"
        numbers = lambda xs: ", ".join(f"{x:g}" for x in xs)  # noqa: E731
        return (f"resize {self.resize} ({self.interpolation}), centre crop {self.crop}, {self.channel_order} in "
                f"{scale}, minus mean ({numbers(self.mean)}), divided by std ({numbers(self.std)})")

    def resized(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (C, H, W) with the shorter side resized to `resize`, antialiased, rounded back to uint8.

        As torchvision's `resize(image, [resize], antialias=True)` on a tensor (the longer side truncated), in
        plain torch: torchvision's import alone takes longer than a prediction."""
        h, w = image.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        other = int(self.resize * long / short)
        size = (self.resize, other) if h <= w else (other, self.resize)
        if (h, w) == size:
            return image
        x = torch.nn.functional.interpolate(image[None].float(), size=size, mode=self.interpolation,
                                            antialias=self.interpolation != "nearest",
                                            align_corners=False if self.interpolation != "nearest" else None)
        return x[0].round_().clamp_(0, 255).to(torch.uint8)

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 (..., C, crop, crop) to the float input of the network."""
        x = crops.float() * (self.pixel_scale / 255)
        if self.channel_order == "BGR":
            x = x.flip(-3)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (x - mean) / std

    def views(self, image: torch.Tensor, tta: str | None = None) -> torch.Tensor:
        """The float views (V, C, crop, crop) of one uint8 (C, H, W) image: the centre crop (V=1), it and its mirror
        image ("flip", V=2), or the four corners and centre of it and of its mirror image ("ten-crop", V=10, in
        torchvision's `ten_crop` order)."""
        image = self.resized(image)
        h, w = image.shape[-2:]
        c = self.crop
        if h < c or w < c:
            raise ValueError(f"image resized to {h}x{w} is smaller than the crop {c}x{c}")

        def crop(top, left):
            return image[..., top:top + c, left:left + c]

        centre = crop(int(round((h - c) / 2.0)), int(round((w - c) / 2.0)))
        if tta is None:
            crops = [centre]
        elif tta == "flip":
            crops = [centre, centre.flip(-1)]
        elif tta == "ten-crop":
            five = [crop(0, 0), crop(0, w - c), crop(h - c, 0), crop(h - c, w - c), centre]
            crops = five + [v.flip(-1) for v in (crop(0, w - c), crop(0, 0), crop(h - c, w - c), crop(h - c, 0),
                                                 centre)]
        else:
            raise ValueError(f"unknown test-time augmentation {tta!r}; expected None, 'flip' or 'ten-crop'")
        return self.normalise(torch.stack(crops))


@dataclass(frozen=True)
class Weights:
    """One set of trained weights for a registered model: where it comes from, what it was trained for, how it
    wants its input."""

    model: str  # the registered name the weights fit
    name: str  # torchvision's ("IMAGENET1K_V1"), or what the file is ("MSRA (Detectron R-50.pkl)")
    source: str  # "torchvision" | "url" | "file"
    num_classes: int
    in_chans: int = 3
    categories: tuple[str, ...] = field(default=(), repr=False)
    preprocess: Preprocess = Preprocess(256, 224)
    url: str | None = None
    file: str | None = None  # a local file, or the cached copy of `url`
    top1_acc: float | None = None  # % as reported by the weights' publisher, on ImageNet-1k val
    top5_acc: float | None = None
    recipe: str = ""  # where the weights were trained, how
    options: dict = field(default_factory=dict)  # builder options the weights need (GoogLeNet's transform_input)
    optional: tuple[str, ...] = ()  # key prefixes a model may leave out (GoogLeNet's auxiliary heads)

    def describe(self) -> str:
        acc = (f"top-1 {self.top1_acc:.3f}%, top-5 {self.top5_acc:.3f}%" if self.top1_acc is not None
               else "accuracy not reported")
        return f"{self.name} ({self.source}): {acc}; input: {self.preprocess.describe()}"


# --------------------------------------------------------------------------------------------- torchvision's


def list_weights(name: str) -> list[Weights]:
    """The weights published for a registered model: torchvision's for a twin (its default first), else none.

    The authors' originals converted from local files (MSRA ResNets, TF-slim Inceptions) are not listed here: they
    have no download cnnzoo could verify; `pretrained=PATH` reads them (see the module docstring)."""
    from cnnzoo.registry import model_card

    card = model_card(name)
    if card.torchvision is None:
        return []
    listed = _listing_cache().get(card.name)
    if listed is not None:
        return [_weights_from_json(w) for w in listed]
    from torchvision.models import get_model_weights

    enum = get_model_weights(card.torchvision)
    default = enum.DEFAULT
    members = [default] + [w for w in enum if w is not default]
    return [_from_torchvision(card.name, w) for w in members]


def _from_torchvision(model: str, w) -> Weights:
    meta = w.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    t = w.transforms()
    mode = getattr(t.interpolation, "value", str(t.interpolation))
    preprocess = Preprocess(resize=int(t.resize_size[0]), crop=int(t.crop_size[0]), mean=tuple(t.mean),
                            std=tuple(t.std), interpolation=mode)
    options, optional = {}, ()
    if model == "googlenet_bn":  # torchvision builds its pretrained GoogLeNet with transform_input=True and aux heads
        options, optional = {"transform_input": True}, ("aux1.", "aux2.")
    categories = tuple(meta["categories"] or ())  # None for VGG-16's IMAGENET1K_FEATURES (no valid classifier)
    return Weights(model=model, name=w.name, source="torchvision", num_classes=len(categories) or 1000,
                   categories=categories, preprocess=preprocess, url=w.url,
                   top1_acc=_reported(metrics.get("acc@1")), top5_acc=_reported(metrics.get("acc@5")),
                   recipe=meta.get("recipe", ""), options=options, optional=optional)


def _reported(value) -> float | None:
    """An accuracy as torchvision states it; NaN (VGG-16's feature-only weights) means none."""
    return None if value is None or math.isnan(value) else float(value)


def _listing_path() -> Path:
    """Where torchvision's weights listings are kept once weights have been fetched: importing torchvision to read
    them again takes longer than a prediction. One file per torchvision version, beside torch.hub's downloads."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tv = version("torchvision")
    except PackageNotFoundError:  # an unusual install: no cache
        tv = "unknown"
    return Path(torch.hub.get_dir()) / "cnnzoo" / f"torchvision-{tv}-weights.json"


def _listing_cache() -> dict:
    import json

    path = _listing_path()
    try:
        listing = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: torchvision answers
        return {}
    return listing if isinstance(listing, dict) else {}


def _remember_listing(name: str) -> None:
    """Keep torchvision's listing for `name` beside its downloaded weights (best effort: a read-only cache is
    only slower)."""
    import json
    from dataclasses import asdict

    from cnnzoo.train.checkpoint import atomic_write_text

    listing = _listing_cache()
    if name in listing:
        return
    listing[name] = [asdict(w) for w in list_weights(name)]
    path = _listing_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(listing))
    except OSError:
        pass


def _weights_from_json(d: dict) -> Weights:
    p = d["preprocess"]
    preprocess = Preprocess(**{**p, "mean": tuple(p["mean"]), "std": tuple(p["std"])})
    return Weights(**{**d, "categories": tuple(d["categories"]), "optional": tuple(d["optional"]),
                      "preprocess": preprocess})


def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard (sorted WordNet id) order, from torchvision's metadata."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def hub_file(url: str) -> Path:
    """Where torch.hub keeps (or will keep) the download of `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


def _fetch(url: str, what: str) -> Path:
    """The cached copy of `url` in torch.hub's cache, downloaded if absent; offline, one error naming the file and
    the folder to put it in."""
    cached = hub_file(url)
    if not cached.is_file():
        # torchvision's file names end in the first hex digits of their SHA-256 ("resnet18-f37072fd.pth")
        digest = re.search(r"-([a-f0-9]{8,})\.", cached.name)
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:  # torch.hub writes a temporary file and renames it once the hash is checked
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=digest.group(1) if digest else None,
                                           progress=sys.stderr.isatty())
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise WeightsUnavailableError(
                f"cannot download {what} from {url} ({reason}); download that file on a machine that can reach "
                f"it and place it as {cached} (folder {cached.parent}: torch.hub's cache, $TORCH_HOME/hub/"
                f"checkpoints)") from None
        except RuntimeError as err:  # torch.hub's "invalid hash value"
            raise ValueError(f"the download of {url} is damaged ({err}); nothing was kept, try again") from None
    return cached


# --------------------------------------------------------------------------------------------- files


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} holds Python objects other than tensors and plain values; cnnzoo refuses to "
                         f"unpickle them ({str(err).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch file (or it is truncated): "
                         f"{str(err).splitlines()[0][:160]}") from None


def read_weights_file(path: str | os.PathLike, model: str) -> tuple[dict[str, torch.Tensor], Weights]:
    """The state_dict (cnnzoo's names) in a local file, and what the file is, recognised from its contents."""
    from cnnzoo.registry import model_card

    card = model_card(model)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    head = path.open("rb").read(16)
    base = Weights(model=card.name, name=path.name, source="file", num_classes=card.num_classes, file=str(path),
                   in_chans=card.input_size[0],
                   categories=imagenet_categories() if card.dataset == "imagenet" else (),
                   preprocess=_card_preprocess(card))
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip archive
        payload = _torch_load(path)
        if isinstance(payload, dict) and payload.get("format") == "cnnzoo-checkpoint":
            return _from_checkpoint(path, base)
        return _from_state_dict(_unwrap(payload, path), base, path)
    if _is_safetensors(head):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path} is a safetensors file; reading it needs `pip install "
                              f"'cnnzoo[safetensors]'`") from None
        return _from_state_dict(load_file(str(path)), base, path)
    if head[:1] == b"\x80":  # a pickle: Detectron's blobs, or torch.save's legacy (pre-1.6) format
        try:
            blobs = _read_numpy_pickle(path)
        except pickle.UnpicklingError:
            return _from_state_dict(_unwrap(_torch_load(path), path), base, path)
        return msra_to_state_dict(blobs, card.name, path), replace(
            base, name=f"MSRA ({path.name})", preprocess=Preprocess(256, 224, mean=CAFFE_BGR_MEAN, std=(1, 1, 1),
                                                                     pixel_scale=255, channel_order="BGR"),
            recipe="He et al.'s original Caffe models, as republished by Detectron (ImageNetPretrained/MSRA)")
    if card.name == "squeezenet1_0":
        from cnnzoo.compress.release import is_released_squeezenet, read_released_squeezenet

        if is_released_squeezenet(path):
            state, _ = read_released_squeezenet(path)
            return state, replace(
                base, name=f"Deep Compression release ({path.name})",
                preprocess=Preprocess(256, 227, mean=SQUEEZENET_BGR_MEAN, std=(1, 1, 1), pixel_scale=255,
                                      channel_order="BGR"),
                recipe="the authors' 8-bit compressed SqueezeNet 1.0 (songhan/SqueezeNet-Deep-Compression), "
                       "decoded: 33% of weights kept, 256 shared values per layer")
    raise ValueError(f"{path} is not a weights file cnnzoo reads; expected a torch state_dict or cnnzoo checkpoint "
                     f"(.pt/.pth), a safetensors file, Detectron's MSRA ResNet pickle (R-50.pkl), or for "
                     f"squeezenet1_0 the authors' compressed_SqueezeNet.net")


def _is_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32


def _unwrap(payload, path: Path) -> dict:
    """A state_dict, also when saved inside {"state_dict": ...} or {"model": ...} as many training scripts do."""
    for key in ("state_dict", "model_state", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} holds no state_dict (a dict of tensors by name); it holds a "
                         f"{type(payload).__name__}")
    return {k.removeprefix("module."): v for k, v in payload.items()}  # DataParallel's prefix


def _from_state_dict(state: dict, base: Weights, path: Path) -> tuple[dict, Weights]:
    if (base.model in TIMM_MODELS or base.model in RELEASED_AS) and any(k.startswith(_TIMM_MARKS) for k in state):
        return timm_to_state_dict(state, base.model, path), replace(
            _timm_weights(base.model), name=f"timm ({path.name})", source="file", file=str(path))
    return state, base


def _from_checkpoint(path: Path, base: Weights) -> tuple[dict, Weights]:
    from cnnzoo.train.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    if payload["model"] != base.model:
        raise ValueError(f"{path} is a checkpoint of {payload['model']}, not of {base.model}; pass it as "
                         f"create_model({payload['model']!r}, pretrained=...) or build from it with "
                         f"cnnzoo.train.checkpoint.model_from_checkpoint")
    classes = tuple(payload.get("classes") or ())
    data = payload.get("data") or {}
    preprocess = base.preprocess
    if data.get("mean") and data.get("input_size"):
        c, h, _ = data["input_size"]
        preprocess = Preprocess(resize=h, crop=h, mean=tuple(data["mean"]), std=tuple(data["std"]), channels=c)
    options = dict(payload["model_options"])
    num_classes, in_chans = options.pop("num_classes", None), options.pop("in_chans", None)
    return payload["model_state"], replace(base, name=f"checkpoint ({path.name})", options=options,
                                           num_classes=num_classes or len(classes) or base.num_classes,
                                           in_chans=in_chans or base.in_chans, categories=classes,
                                           preprocess=preprocess)


def _card_preprocess(card) -> Preprocess:
    """The usual ImageNet evaluation (resize to 8/7 of the crop, centre crop) at the card's input size."""
    c, h, _ = card.input_size
    return Preprocess(resize=round(h * 256 / 224), crop=h, channels=c)


# --------------------------------------------------------------------------------------------- loading


def resolve_weights(name: str, pretrained) -> Weights:
    """What `pretrained=` names for model `name`, without loading anything (a local file is only checked to exist).

    Raises ValueError for weights the model has none of (listing those it has), TypeError for a wrong type."""
    from cnnzoo.registry import model_card

    card = model_card(name)
    if pretrained == "timm":
        if card.name not in TIMM_MODELS:
            raise ValueError(f"pretrained='timm' is for {' and '.join(sorted(TIMM_MODELS))} (timm's ports of the "
                             f"TF-slim releases), not {card.name}"
                             + (f": {_released_as(card.name)}" if card.name in RELEASED_AS else ""))
        return replace(_timm_weights(card.name), source="timm")
    if isinstance(pretrained, str) and _is_url(pretrained):
        return Weights(model=card.name, name=os.path.basename(urllib.parse.urlparse(pretrained).path), source="url",
                       url=pretrained, num_classes=card.num_classes)
    if isinstance(pretrained, bool) or isinstance(pretrained, str) and not _looks_like_path(pretrained):
        available = list_weights(card.name)
        if not available:
            raise ValueError(f"{card.name} has no published weights cnnzoo can download (no torchvision twin); "
                             f"pass pretrained=PATH to a file: a state_dict, a cnnzoo checkpoint or a safetensors file"
                             + (", or the authors' original converted from its released format"
                                if card.name in CONVERTIBLE else "")
                             + (f"; the authors' released weights do not fit it: {_released_as(card.name)}"
                                if card.name in RELEASED_AS else ""))
        if pretrained is True:
            return available[0]
        key = pretrained.upper().split(".")[-1]  # "ResNet50_Weights.IMAGENET1K_V2" or "imagenet1k_v2"
        if key == "DEFAULT":
            return available[0]
        for w in available:
            if w.name == key:
                return w
        raise ValueError(f"{card.name} has no weights {pretrained!r}; torchvision publishes "
                         f"{', '.join(w.name for w in available)} for it (or pass a file's path)")
    if isinstance(pretrained, os.PathLike) or isinstance(pretrained, str):
        return Weights(model=card.name, name=os.path.basename(pretrained), source="file", file=os.fspath(pretrained),
                       num_classes=card.num_classes)
    raise TypeError(f"pretrained must be True, a weights name like 'IMAGENET1K_V1', a URL or a file path, got "
                    f"{type(pretrained).__name__} {pretrained!r}")


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".safetensors", ".bin", ".ckpt", ".tar")


def _looks_like_path(text: str) -> bool:
    """A file rather than a weights name ("IMAGENET1K_V1", "ResNet50_Weights.IMAGENET1K_V2")."""
    return not _is_url(text) and (os.sep in text or text.lower().endswith(_FILE_SUFFIXES) or Path(text).exists())


def state_and_weights(name: str, pretrained) -> tuple[dict, Weights]:
    """The state_dict (cnnzoo's names) that `pretrained=` names for model `name`, and its description."""
    weights = resolve_weights(name, pretrained)
    if weights.source == "file":
        return read_weights_file(weights.file, name)
    if weights.source == "timm":
        try:
            import timm
        except ImportError:
            raise ImportError(f"pretrained='timm' builds timm's {TIMM_NAMES[name]} to read its weights, and timm is "
                              f"not installed (pip install timm); or pass pretrained=PATH to its state_dict") from None
        state = timm.create_model(TIMM_NAMES[name], pretrained=True).state_dict()
        return timm_to_state_dict(state, name, f"timm's {TIMM_NAMES[name]}"), weights
    if weights.source == "url":  # any format a local file may have
        state, found = read_weights_file(_fetch(weights.url, "the weights"), name)
        return state, replace(found, source="url", url=weights.url)
    cached = _fetch(weights.url, f"the {weights.name} weights of {weights.model}")
    _remember_listing(weights.model)
    return _unwrap(_torch_load(cached), cached), replace(weights, file=str(cached))


def load_pretrained(model: nn.Module, state: dict, weights: Weights, *, num_classes: int, in_chans: int) -> dict:
    """Load `state` into `model` strictly, after the two adaptations asked for (classifier, first convolution);
    a model built on the meta device takes the tensors themselves. Returns the state as loaded."""
    from cnnzoo.train.checkpoint import check_state_fits

    own = model.state_dict()
    state = {k: v for k, v in state.items()
             if not (k.startswith(weights.optional) and weights.optional and k not in own)}
    if num_classes != weights.num_classes:
        fresh = [k for k in state if k in own and state[k].dim() >= 1 and state[k].shape[0] == weights.num_classes
                 and own[k].shape[0] == num_classes and state[k].shape[1:] == own[k].shape[1:]]
        if fresh:
            state.update({k: own[k] for k in fresh})
            log.warning("%s: the classifier (%s) of the %s weights is for %d classes; re-initialised for %d, the "
                        "backbone kept", weights.model, ", ".join(fresh), weights.name, weights.num_classes,
                        num_classes)
    first = next((k for k, v in state.items() if v.dim() == 4), None)
    given = state[first].shape[1] if first is not None else in_chans
    if first in own and in_chans != given and own[first].shape[1] == in_chans:
        state[first] = adapt_input_conv(state[first], in_chans)
        how = "summed over its channels" if in_chans == 1 else f"repeated and scaled by {given}/{in_chans}"
        log.warning("%s: the first convolution (%s) of the %s weights takes %d channels; adapted to %d (%s)",
                    weights.model, first, weights.name, given, in_chans, how)
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() and own[k].is_floating_point() else v
             for k, v in state.items()}
    check_state_fits(own, state, weights.model, weights.file or weights.url or weights.name, dtypes=False)
    # A model built on the meta device takes the loaded tensors as its own (requires_grad kept); a built one copies
    # them in (taking them measured slower forwards here, within this machine's noise).
    model.load_state_dict(state, strict=True, assign=_has_meta_tensors(model))
    model.pretrained_weights = weights
    return state


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A first convolution's RGB filters for `in_chans` inputs (timm's rule): one channel gets their sum; more
    get them repeated (cut to in_chans) and scaled by 3 / in_chans, so a grey image repeated gives the same
    activations."""
    c = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / c)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (c / in_chans)


def pretrained_model(name: str, pretrained, *, num_classes: int | None, in_chans: int | None,
                     build) -> tuple[nn.Module, int]:
    """`create_model`'s pretrained path: the weights' own builder options and sizes, the build, the load; returns
    the model and its input channels.

    When the weights fill every tensor of a large model, it is built on the meta device and takes the loaded
    tensors as its own (`load_state_dict(assign=True)`): no initialisation computed only to be overwritten. A
    smaller model, or one with anything left unfilled (a fresh classifier, a tensor outside its state_dict), is
    built and initialised as usual."""
    state, weights = state_and_weights(name, pretrained)
    num_classes, in_chans = num_classes or weights.num_classes, in_chans or weights.in_chans
    if num_classes == weights.num_classes and sum(v.numel() for v in state.values()) > _META_BUILD_NUMEL:
        with torch.device("meta"):
            model = build(weights.options, num_classes=num_classes, in_chans=in_chans)
        state = load_pretrained(model, state, weights, num_classes=num_classes, in_chans=in_chans)
        if not _has_meta_tensors(model):
            return model, in_chans
    model = build(weights.options, num_classes=num_classes, in_chans=in_chans)
    load_pretrained(model, state, weights, num_classes=num_classes, in_chans=in_chans)
    return model, in_chans


# Above this many weights, building on the meta device pays: its first use in a process imports torch's meta
# kernels (~1.3 s here), while initialising ResNet-50's 25.6M weights takes ~0.25 s and VGG-16's 138M seconds.
_META_BUILD_NUMEL = 60_000_000


def _has_meta_tensors(model: nn.Module) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_meta
               for m in model.modules() for v in (*m._parameters.values(), *m._buffers.values(), *vars(m).values()))


# --------------------------------------------------------------------------------------------- MSRA (Detectron)

CONVERTIBLE = {"resnet50", "resnet101", "resnet152", "inception_v4_tf", "inception_resnet_v2_tf"}
_MSRA_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3), "resnet152": (3, 8, 36, 3)}

_NUMPY_GLOBALS = {  # what a pickle of numpy arrays refers to, and nothing else
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _NumpyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays (and the dicts, lists and strings around them); refuses every other global."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            if module == "_codecs":
                import codecs

                return codecs.encode
            import numpy as np

            if name == "ndarray":
                return np.ndarray
            if name == "dtype":
                return np.dtype
            core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
            return getattr(core, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are rebuilt")


def _read_numpy_pickle(path: Path) -> dict:
    """Detectron's weights pickle: a dict of Caffe blob names to numpy arrays, maybe inside {"blobs": ...}."""
    import numpy as np

    with path.open("rb") as f:
        try:
            data = _NumpyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError:
            raise
        except Exception as err:  # truncated or damaged
            raise ValueError(f"{path} is a damaged pickle: {type(err).__name__}: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    if not isinstance(data, dict):
        raise ValueError(f"{path} is a pickle of a {type(data).__name__}; expected Detectron's dict of blobs")
    return {k: v for k, v in data.items() if isinstance(v, np.ndarray) and not k.endswith("_momentum")}


def msra_to_state_dict(blobs: dict, model: str, source: str | os.PathLike = "the file") -> dict[str, torch.Tensor]:
    """Detectron's Caffe blob names (as its ResNet.py builds them) to cnnzoo's `resnet50/101/152`.

    conv1_w, res_conv1_bn_{s,b} -> conv1, bn1; res{2..5}_{i}_branch2{a,b,c}_w and _bn_{s,b} -> layer{1..4}.{i}.
    conv{1,2,3} and bn{1,2,3}; res{s}_0_branch1 -> downsample.0/1; fc1000_{w,b} (or pred_{w,b}) -> fc. A frozen
    batch norm (Caffe's AffineChannel: scale s, shift b) becomes running mean 0 and running variance 1 - eps,
    so y = s * x + b exactly; blobs _bn_rm and _bn_riv (running mean and variance), where present, are kept.
    """
    if model not in _MSRA_BLOCKS:
        raise ValueError(f"Detectron's MSRA weights are ResNets with stride in the first 1x1 (resnet50, resnet101, "
                         f"resnet152); {model} is not one")
    eps = 1e-5  # nn.BatchNorm2d's, as the resnet models use
    state, used = {}, set()

    def take(blob):
        if blob not in blobs:
            return None
        used.add(blob)
        return torch.from_numpy(blobs[blob].astype("float32", copy=True))

    def norm(prefix, caffe):
        scale, shift = take(f"{caffe}_bn_s"), take(f"{caffe}_bn_b")
        if scale is None or shift is None:
            return
        mean, var = take(f"{caffe}_bn_rm"), take(f"{caffe}_bn_riv")
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = scale, shift
        state[f"{prefix}.running_mean"] = mean if mean is not None else torch.zeros_like(scale)
        state[f"{prefix}.running_var"] = var if var is not None else torch.full_like(scale, 1 - eps)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    def conv(key, caffe):
        w = take(f"{caffe}_w")
        if w is not None:
            state[key] = w

    conv("conv1.weight", "conv1")
    norm("bn1", "res_conv1")
    for stage, blocks in enumerate(_MSRA_BLOCKS[model], start=1):
        for i in range(blocks):
            caffe, ours = f"res{stage + 1}_{i}", f"layer{stage}.{i}"
            for j, branch in enumerate("abc", start=1):
                conv(f"{ours}.conv{j}.weight", f"{caffe}_branch2{branch}")
                norm(f"{ours}.bn{j}", f"{caffe}_branch2{branch}")
            conv(f"{ours}.downsample.0.weight", f"{caffe}_branch1")
            norm(f"{ours}.downsample.1", f"{caffe}_branch1")
    for head in ("fc1000", "pred"):
        if f"{head}_w" in blobs:
            state["fc.weight"], state["fc.bias"] = take(f"{head}_w"), take(f"{head}_b")
            break
    left = sorted(k for k in set(blobs) - used if not k.endswith("_momentum"))  # SGD's state, as Detectron drops
    if left:  # another depth's or another network's blobs: the strict load would only see keys missing
        shown = ", ".join(left[:4]) + (f" and {len(left) - 4} more" if len(left) > 4 else "")
        raise ValueError(f"{source} does not fit {model}: blobs with no place in it: {shown}")
    return {k: v for k, v in state.items() if v is not None}


# --------------------------------------------------------------------------------------------- timm (TF-slim)

TIMM_MODELS = {"inception_v4_tf", "inception_resnet_v2_tf"}
# timm's architecture (its module tree, listed by _timm_units) behind each model its weights load into; cnnzoo's
# inception_v4 has the same tree, with three factorised pairs the other way round (see RELEASED_AS)
_TIMM_ARCH = {"inception_v4_tf": "inception_v4", "inception_v4": "inception_v4",
              "inception_resnet_v2_tf": "inception_resnet_v2"}
# The paper's networks that the released weights cannot compute, the release's variant that they load into, and why
RELEASED_AS = {"inception_v4": ("inception_v4_tf", (
    "cnnzoo's inception_v4 follows the paper's figures, whose factorised 7x1/1x7 and 3x1/1x3 pairs come in the "
    "other order in three places of the release (the stem's Mixed-4a, Inception-B, Inception-C): the released "
    "weights cannot compute the paper's network"))}
_TIMM_MARKS = ("features.", "last_linear.", "conv2d_1a.", "mixed_5b.", "conv2d_7b.", "classif.")
# timm's default_cfgs for inception_v4.tf_in1k and inception_resnet_v2.tf_in1k: 299 input, crop_pct 0.875 and
# 0.8975, bicubic, IMAGENET_INCEPTION_MEAN/STD = 0.5 (TF-slim's preprocessing, x in -1..1)
TF_INCEPTION_PREPROCESS = {
    "inception_v4_tf": Preprocess(resize=round(299 / 0.875), crop=299, mean=(0.5,) * 3, std=(0.5,) * 3,
                                  interpolation="bicubic"),
    "inception_resnet_v2_tf": Preprocess(resize=round(299 / 0.8975), crop=299, mean=(0.5,) * 3, std=(0.5,) * 3,
                                         interpolation="bicubic"),
}


def _released_as(model: str) -> str:
    """Why the released weights do not fit the paper's `model`, and which model they load into."""
    variant, why = RELEASED_AS[model]
    return f"{why}; they load into {variant}, the release's network (create_model({variant!r}, pretrained=...))"


def _timm_units(arch: str) -> list[tuple[str, str]]:
    """timm's modules with weights, in network order, as its inception_v4.py / inception_resnet_v2.py name them:
    (prefix, kind), kind "convbn" (conv + bn), "conv" (a plain convolution with bias) or "linear"."""
    def seq(prefix, n):
        return [f"{prefix}.{i}" for i in range(n)]

    units: list[str | tuple[str, str]] = []
    if arch == "inception_v4":  # features.0-21: stem, Mixed3a/4a/5a, 4 A, Reduction-A, 7 B, Reduction-B, 3 C
        f = "features"
        units += [f"{f}.0", f"{f}.1", f"{f}.2", f"{f}.3.conv", *seq(f"{f}.4.branch0", 2), *seq(f"{f}.4.branch1", 4),
                  f"{f}.5.conv"]
        for i in range(6, 10):
            units += [f"{f}.{i}.branch0", *seq(f"{f}.{i}.branch1", 2), *seq(f"{f}.{i}.branch2", 3),
                      f"{f}.{i}.branch3.1"]
        units += [f"{f}.10.branch0", *seq(f"{f}.10.branch1", 3)]
        for i in range(11, 18):
            units += [f"{f}.{i}.branch0", *seq(f"{f}.{i}.branch1", 3), *seq(f"{f}.{i}.branch2", 5),
                      f"{f}.{i}.branch3.1"]
        units += [*seq(f"{f}.18.branch0", 2), *seq(f"{f}.18.branch1", 4)]
        for i in range(19, 22):
            units += [f"{f}.{i}.{b}" for b in ("branch0", "branch1_0", "branch1_1a", "branch1_1b", "branch2_0",
                                               "branch2_1", "branch2_2", "branch2_3a", "branch2_3b", "branch3.1")]
        units.append(("last_linear", "linear"))
    else:  # inception_resnet_v2: the TF-slim scopes, lower-cased
        units += ["conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a", "mixed_5b.branch0",
                  *seq("mixed_5b.branch1", 2), *seq("mixed_5b.branch2", 3), "mixed_5b.branch3.1"]
        for i in range(10):
            units += [f"repeat.{i}.branch0", *seq(f"repeat.{i}.branch1", 2), *seq(f"repeat.{i}.branch2", 3),
                      (f"repeat.{i}.conv2d", "conv")]
        units += ["mixed_6a.branch0", *seq("mixed_6a.branch1", 3)]
        for i in range(20):
            units += [f"repeat_1.{i}.branch0", *seq(f"repeat_1.{i}.branch1", 3), (f"repeat_1.{i}.conv2d", "conv")]
        units += [*seq("mixed_7a.branch0", 2), *seq("mixed_7a.branch1", 2), *seq("mixed_7a.branch2", 3)]
        for block in [f"repeat_2.{i}" for i in range(9)] + ["block8"]:
            units += [f"{block}.branch0", *seq(f"{block}.branch1", 3), (f"{block}.conv2d", "conv")]
        units += ["conv2d_7b", ("classif", "linear")]
    return [u if isinstance(u, tuple) else (u, "convbn") for u in units]


def _own_units(model: nn.Module) -> list[tuple[str, str]]:
    """cnnzoo's modules with weights, in the order they were registered (the network's order)."""
    from cnnzoo.models.inception_v4 import ConvBN

    units, inside = [], set()
    for name, module in model.named_modules():
        if isinstance(module, ConvBN):
            units.append((name, "convbn"))
            inside.add(f"{name}.conv")
        elif isinstance(module, nn.Conv2d) and name not in inside:
            units.append((name, "conv"))
        elif isinstance(module, nn.Linear):
            units.append((name, "linear"))
    return units


_PARTS = {"convbn": ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"),
          "conv": ("weight", "bias"), "linear": ("weight", "bias")}


TIMM_NAMES = {"inception_v4_tf": "inception_v4.tf_in1k", "inception_resnet_v2_tf": "inception_resnet_v2.tf_in1k"}


def _timm_weights(model: str) -> Weights:
    return Weights(model=model, name=TIMM_NAMES[model], source="timm", num_classes=1000,
                   categories=imagenet_categories(), preprocess=TF_INCEPTION_PREPROCESS[model],
                   recipe="the TF-slim release of Szegedy et al., ported by timm")


def timm_to_state_dict(state: dict, model: str, source: str | os.PathLike = "the file") -> dict[str, torch.Tensor]:
    """timm's `inception_v4` / `inception_resnet_v2` state_dict (its port of the TF-slim release) to cnnzoo's
    `inception_v4_tf` / `inception_resnet_v2_tf`.

    timm's modules (named after TF-slim's scopes: conv2d_1a, mixed_5b.branch1.0, repeat_1.7.conv2d, classif;
    features.4.branch1.2 for Inception-v4) are matched one to one, in network order, with cnnzoo's, and every
    tensor's shape is checked. A 1001-way classifier (TF-slim's, background first) loses its background row.
    For the paper's `inception_v4` the tensors that do not fit are named, with why and where they do fit."""
    from cnnzoo.registry import create_model

    if model not in TIMM_MODELS and model not in RELEASED_AS:
        raise ValueError(f"timm's Inception weights fit {' and '.join(sorted(TIMM_MODELS))}, not {model}")
    with torch.device("meta"):
        own = create_model(model)
    ours, theirs = _own_units(own), _timm_units(_TIMM_ARCH[model])
    shapes = own.state_dict()
    if len(ours) != len(theirs):  # a layout changed on one side: name it rather than pair wrongly
        raise ValueError(f"cnnzoo's {model} has {len(ours)} weighted layers, timm's {len(theirs)}")
    converted, used, wrong = {}, set(), []
    for (o, kind), (t, tkind) in zip(ours, theirs):
        if kind != tkind:
            raise ValueError(f"{source}: timm's {t} ({tkind}) meets cnnzoo's {o} ({kind}); the layouts differ")
        for part in _PARTS[kind]:
            key = f"{t}.{part}"
            if key not in state:
                continue  # named as missing by the strict load
            value = state[key]
            if kind == "linear" and value.shape[0] == 1001:  # TF-slim's background class, first
                value = value[1:]
            target = f"{o}.{part}"
            if tuple(value.shape) != tuple(shapes[target].shape):
                wrong.append(f"{key} {tuple(value.shape)} vs {target} {tuple(shapes[target].shape)}")
            converted[target] = value
            used.add(key)
        if kind == "convbn":
            converted[f"{o}.bn.num_batches_tracked"] = state.get(f"{t}.bn.num_batches_tracked", torch.tensor(0))
            used.add(f"{t}.bn.num_batches_tracked")
    said = []
    if wrong:
        said.append(f"wrong shapes: {', '.join(wrong[:3])}" + (f" and {len(wrong) - 3} more" if len(wrong) > 3
                                                               else "") + ".")
    if model in RELEASED_AS:  # refused even when no tensor shows it: the weights cannot compute this network
        said.append(_released_as(model))
    if said:
        raise ValueError(f"{source} does not fit {model}: {' '.join(said)}")
    left = sorted(set(state) - used)
    if left:
        raise ValueError(f"{source} does not fit {model}: tensors with no place in it: {', '.join(left[:4])}"
                         + (f" and {len(left) - 4} more" if len(left) > 4 else ""))
    return converted
