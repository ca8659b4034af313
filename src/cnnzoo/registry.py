"""The model registry: every network is registered under its paper name with a model card.

A model card holds what the paper says (citation, native input, the figures it reports and where it
reports them) and how our build differs from it. The numbers we compute ourselves never live here:
they come from the model, and the tests compare the two.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported with the first model: `cnnzoo --help` and DATASET_CLASSES do without it
    from torch import nn

__all__ = ["Paper", "ModelCard", "register_model", "create_model", "list_models", "model_card"]

DATASET_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}


@dataclass(frozen=True)
class Paper:
    """A publication: who, what, where, when, and a link to read it."""

    authors: str  # "LeCun, Bottou, Bengio, Haffner"
    title: str
    venue: str  # where it appeared, with that year if it differs: "ICLR 2015"
    year: int  # first public version (the year the lecture gives)
    url: str
    arxiv: str | None = None  # "1409.1556"

    @property
    def short(self) -> str:
        """"LeCun et al. 1998" or "Lin, Chen & Yan 2013"-style short citation."""
        names = [a.split()[-1] for a in self.authors.split(",")]  # surnames
        if len(names) > 3:
            return f"{names[0]} et al. {self.year}"
        if len(names) == 1:
            return f"{names[0]} {self.year}"
        return f"{', '.join(names[:-1])} & {names[-1]} {self.year}"

    def cite(self) -> str:
        arxiv = f" arXiv:{self.arxiv}." if self.arxiv else ""
        return f"{self.authors} ({self.year}). {self.title}. {self.venue}.{arxiv}"


@dataclass(frozen=True)
class ModelCard:
    """What the paper specifies and reports for one registered network.

    Reported figures are as the paper states them; each has the place it is stated. `params_rounding`
    is the unit the paper rounds its parameter count to (1 for an exact count, 1e6 for "133M"): the
    card test accepts a computed count within half that unit. `params_exclude_norm` marks the papers whose
    counts only fit without normalisation layers' parameters (the family module shows the arithmetic).
    """

    family: str  # module-level family: "vgg", "lenet", ...
    paper: Paper
    dataset: str  # "mnist" | "cifar10" | "cifar100" | "imagenet"
    input_size: tuple[int, int, int]  # native (C, H, W)
    num_classes: int | None = None  # default: the dataset's class count
    params: float | None = None  # as reported; None when the paper gives none
    params_source: str = ""  # "Sec. II.B", "Table 2"
    params_rounding: float = 1.0
    params_exclude_norm: bool = False  # the paper's count evidently leaves out batch norm's scales and shifts
    macs: float | None = None  # classic papers' "FLOPs" are multiply-adds, so these are MACs
    macs_source: str = ""
    top1_err: float | None = None  # % on the card's dataset
    top5_err: float | None = None
    err_source: str = ""  # "Table 2, one CNN, ILSVRC-2012 val"
    # A top-1 error that another source states for this network, only where the paper reports none (GoogLeNet's
    # gives top-5 only). Never a figure of the paper: charts mark it as such and name `other_top1_source`.
    other_top1_err: float | None = None
    other_top1_source: str = ""  # who states it, for which trained copy of the net, evaluated how
    torchvision: str | None = None  # torchvision builder with an identical state_dict
    deviations: tuple[str, ...] = ()  # every known difference from the paper, in words
    name: str = ""  # filled in by register_model

    def __post_init__(self):
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {sorted(DATASET_CLASSES)}")
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", DATASET_CLASSES[self.dataset])
        if len(self.input_size) != 3:
            raise ValueError(f"input_size must be (C, H, W), got {self.input_size!r}")
        if self.other_top1_err is not None and (self.top1_err is not None or not self.other_top1_source):
            raise ValueError("other_top1_err is for a net whose paper reports no top-1 error, and needs "
                             "other_top1_source")

    @property
    def year(self) -> int:
        return self.paper.year

    @property
    def url(self) -> str:
        return self.paper.url


_MODELS: dict[str, tuple[Callable[..., nn.Module], ModelCard]] = {}
_OWN: set[str] = set()  # names registered by cnnzoo's own model modules


def register_model(name: str, card: ModelCard):
    """Decorator that registers `builder(num_classes=..., in_chans=..., **options)` under `name`."""
    caller = sys._getframe(1).f_globals.get("__name__", "")

    def add(builder):
        if name in _MODELS:
            raise KeyError(f"model {name!r} registered twice")
        accepted = _options(builder)
        for required in ("num_classes", "in_chans"):
            if required not in accepted:
                raise TypeError(f"builder for {name!r} must accept {required}=")
        _MODELS[name] = (builder, replace(card, name=name))
        if caller.startswith("cnnzoo.models."):
            _OWN.add(name)
        return builder

    return add


def list_models(pattern: str | None = None, *, dataset: str | None = None) -> list[str]:
    """Sorted registered names, filtered by an fnmatch pattern ("resnet*") and/or a dataset."""
    _load_models()
    if dataset is not None and dataset not in DATASET_CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(DATASET_CLASSES))}")
    names = sorted(_MODELS, key=_natural)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern.lower())]
    if dataset:
        names = [n for n in names if _MODELS[n][1].dataset == dataset]
    return names


def _natural(name: str) -> list:
    """Sort key that puts resnet18 before resnet101: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def model_card(name: str) -> ModelCard:
    return _lookup(name)[1]


def registered_by_cnnzoo(name: str) -> bool:
    """Whether cnnzoo's own model modules registered `name` (so the package's source defines it entirely)."""
    return _lookup(name)[1].name in _OWN


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The options `create_model(name, ...)` accepts besides num_classes and in_chans."""
    builder = _lookup(name)[0]
    return {k: p for k, p in _options(builder).items() if k not in ("num_classes", "in_chans")}


def create_model(name: str, *, num_classes: int | None = None, in_chans: int | None = None, pretrained=None,
                 **kwargs) -> nn.Module:
    """Build a registered network as its paper specified.

    Args:
        num_classes: size of the output layer (default: the card's, or the pretrained weights').
        in_chans: input channels (default: the card's, e.g. 1 for LeNet-5, 3 for ImageNet nets).
        pretrained: True or a weights name ("IMAGENET1K_V1") for torchvision's weights of a twin, a URL, or a file
            (a state_dict, a cnnzoo checkpoint, safetensors, or an original converted: see `cnnzoo.weights`).
        **kwargs: the family's own options; `cnnzoo info NAME` lists them.
    """
    from cnnzoo.checks import InputCheck

    builder, card = _lookup(name)
    num_classes = _positive_int("num_classes", num_classes, None)
    in_chans = _positive_int("in_chans", in_chans, None)
    accepted = _options(builder)
    hints = _hints(builder)
    for key, value in kwargs.items():
        if key not in accepted or key in ("num_classes", "in_chans"):
            own = sorted(k for k in accepted if k not in ("num_classes", "in_chans"))
            choices = ", ".join(own) if own else "none besides num_classes and in_chans"
            raise TypeError(f"{name} has no option {key!r}; its options are: {choices}")
        if key in hints:
            _check_type(name, key, value, hints[key])
    if pretrained is not None and pretrained is not False:
        from cnnzoo.weights import pretrained_model

        model, in_chans = pretrained_model(card.name, pretrained, num_classes=num_classes, in_chans=in_chans,
                                           build=lambda options, **sizes: builder(**sizes, **{**options, **kwargs}))
    else:
        in_chans = in_chans or card.input_size[0]
        model = builder(num_classes=num_classes or card.num_classes, in_chans=in_chans, **kwargs)
    model.register_forward_pre_hook(InputCheck(name, in_chans, card.input_size[1:]))
    return model


def _lookup(name: str):
    _load_models()
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    key = name.lower()
    if key not in _MODELS:
        raise UnknownModelError(name, suggest(key))
    return _MODELS[key]


class UnknownModelError(ValueError):
    """A name that is not registered; `suggestions` holds the nearest registered names (maybe none)."""

    def __init__(self, name: str, suggestions: list[str]):
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else "; list_models() gives every name"
        super().__init__(f"unknown model {name!r}{hint}")
        self.name, self.suggestions = name, suggestions


def suggest(text: str, limit: int = 5) -> list[str]:
    """Registered names a user may have meant by `text`, best first: the names it begins (`lenet` -> lenet5),
    the family it names or begins with (`vgg17` -> vgg11 ... vgg19, `stochastic_depth` -> resnet110_sd ...), and,
    when it begins no name, near misses (`resnet110_sdd` -> resnet110_sd). They are ranked by the length of the
    beginning they share with `text`, then by similarity; edit distance alone decides only when nothing else
    is near."""
    _load_models()
    key = text.lower()
    names = sorted(_MODELS, key=_natural)
    similarity = {n: difflib.SequenceMatcher(None, key, n).ratio() for n in names}
    prefixed = any(n.startswith(key) for n in names)
    found = [n for n in names if n.startswith(key) or key.startswith(_MODELS[n][1].family)
             or (not prefixed and similarity[n] >= _NEAR)]
    found.sort(key=lambda n: (-len(os.path.commonprefix([key, n])), -similarity[n]))  # stable: ties stay natural
    if not found:
        found = difflib.get_close_matches(key, names, n=limit, cutoff=0.5)
    return found[:limit]


_NEAR = 0.8  # difflib's ratio of a one-character slip in a name of ten: vgg17 ~ vgg16, googlnet ~ googlenet


def _load_models():
    import cnnzoo.models  # noqa: F401  (each family module registers itself on import)


def _options(builder) -> dict[str, inspect.Parameter]:
    """Keyword options of a builder; structure bound by functools.partial is not an option."""
    bound = builder.keywords if isinstance(builder, functools.partial) else {}
    params = inspect.signature(builder).parameters
    return {
        k: p
        for k, p in params.items()
        if k not in bound and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _hints(builder) -> dict:
    target = builder.func if isinstance(builder, functools.partial) else builder
    target = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: skip type checks rather than fail to build
        return {}


def _positive_int(option: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{option} must be at least 1, got {value}")
    return value


def _check_type(model: str, option: str, value, hint) -> None:
    if _matches(value, hint):
        return
    raise TypeError(f"{model}: option {option} must be {_describe(hint)}, got {type(value).__name__} {value!r}")


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))
