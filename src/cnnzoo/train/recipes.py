"""Training recipes: each family's training procedure as its paper states it, as data.

    recipe_for("resnet110")            # the paper's recipe for that model (chosen by its card's family and dataset)
    recipe_for("lenet5", "fast")       # cnnzoo's short schedule for a CPU demo
    recipe_for("vgg16").override(batch_size=64, lr=0.0025)

A `Recipe` is a frozen dataclass: optimizer and its settings, batch size, epochs, the learning-rate `Schedule`, an
optional constant-lr warm-up, the regularisers the paper sets (dropout, auxiliary-loss weight, drop-path, stochastic
depth), the training augmentations (names from `cnnzoo.data`'s vocabulary), the initialisation in words, where
the paper says all this (`source`), which values the paper does *not* state (`assumed`; `notes` says where they
come from) and `notes` (deviations, and where the lecture differs). The models already initialise as their
papers say; `init` only records it.

Two kinds per model. "paper": the paper's recipe, for the dataset the paper trains that model on (a family with
ImageNet and CIFAR models has one recipe for each; the model card's `dataset` picks). "fast": ours, not any
paper's: a short cosine schedule (a few epochs, batch 32-128) that finishes a CPU demo on small data in minutes,
keeping the paper's optimizer, momentum, weight decay and regularisers.

Conventions (what a trainer implements; `Recipe.lr_at` is the reference):
- `epochs` counts passes over the training set; `steps_per_epoch` is the trainer's. T = epochs * steps_per_epoch.
- Milestones are **fractions of the whole run** in (0, 1): the lr changes at step round(m * T). So ResNet's
  "divide by 10 at 32k and 48k of 64k iterations" is (0.5, 0.75) and still means the same after
  `override(epochs=...)`. A paper's absolute epochs are its fractions: WRN's 60/120/160 of 200 is (0.3, 0.6, 0.8).
- Warm-up: for the first `warmup_iters` optimizer steps the lr is the constant `warmup_lr`; from step
  `warmup_iters` on it is `lr * schedule factor(step)`. The schedule's clock counts from step 0, warm-up
  included (ResNet-110's 400 iterations at 0.01 do not shift the 32k/48k milestones). He et al. warm up "until the
  training error is below 80% (about 400 iterations)"; we model that as a fixed 400 iterations.
- Plateau: once per epoch, after it, with the epoch's `monitor` value (an error in [0, 1], lower is better):
  exactly torch's ReduceLROnPlateau(mode="min", factor=gamma, patience, threshold, threshold_mode="abs",
  cooldown=0); after `max_reductions` cuts (None: no limit) the lr stays. The new lr applies from the next epoch.
  `Schedule.plateau_reductions(values)` replays it.

The lecture (L9) quotes ResNet's weight decay as 1e-5; He et al. 2016 (Sec. 3.4) say 0.0001. The recipes follow the
papers, and each recipe whose lecture figure differs says so in `notes`.

Values the papers state are cited by section; everything else is in `assumed` and explained in `notes`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, Sequence

from cnnzoo.registry import DATASET_CLASSES, list_models, model_card

__all__ = ["Recipe", "Schedule", "recipe_for", "list_recipes", "AUGMENTATIONS", "KINDS", "SCHEDULE_KINDS",
           "OPTIMIZERS"]

KINDS = ("paper", "fast")
OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULE_KINDS = ("constant", "multistep", "step", "plateau", "poly", "exponential", "cosine")
MONITORS = ("val_top1_err", "train_top1_err")
# The augmentation names of cnnzoo.data (Augment.from_names); evaluation transforms are the loader's business.
AUGMENTATIONS = ("crop_pad4", "crop_pad2", "random_crop", "flip", "random_resized_crop", "scale_jitter", "pca_lighting")


def _fail(message: str):
    raise ValueError(message)


def _number(owner: str, name: str, value, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(f"{owner}.{name} must be a finite number, got {value!r}")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else format(low, 'g')}, {'inf' if high is None else format(high, 'g')}{hi}"
    if low is not None and (value < low or (low_open and value == low)):
        _fail(f"{owner}.{name} must be in {interval}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        _fail(f"{owner}.{name} must be in {interval}, got {value!r}")
    return float(value)


def _integer(owner: str, name: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{owner}.{name} must be an int >= {low}, got {value!r}")
    if value < low:
        _fail(f"{owner}.{name} must be an int >= {low}, got {value}")
    return value


def _choice(owner: str, name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        _fail(f"{owner}.{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _strings(owner: str, name: str, value) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        _fail(f"{owner}.{name} must be a tuple of strings, got {value!r}")
    return tuple(value)


def _unknown(owner: str, names, valid: Sequence[str]) -> None:
    for key in names:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(f"{owner} has no field {key!r}{hint}; valid fields: {', '.join(valid)}")


@dataclass(frozen=True)
class Schedule:
    """The learning rate as a factor of the base lr; see the module docstring for the exact semantics.

    kind: "constant"; "multistep" (factor gamma**k after the k-th milestone, or factors[k-1]); "step" (gamma every
    `every` epochs, a staircase); "exponential" (gamma**(t / every), t in epochs, smooth); "poly"
    ((1 - t/T)**power); "cosine" (0.5 (1 + cos(pi t/T)), to 0); "plateau" (gamma per reduction, see Recipe docs).
    """

    kind: str = "constant"
    milestones: tuple[float, ...] = ()  # multistep: increasing fractions of the run, each in (0, 1)
    gamma: float = 0.1  # multistep, step, exponential, plateau: the factor per milestone / period / reduction
    factors: tuple[float, ...] = ()  # multistep: the cumulative factor after each milestone; () means gamma**k
    every: float | None = None  # step, exponential: the period, in epochs
    power: float = 1.0  # poly
    monitor: str = "val_top1_err"  # plateau: the metric watched, once per epoch ("train_top1_err" for NiN)
    patience: int = 5  # plateau: torch's meaning, epochs without improvement tolerated before a cut
    threshold: float = 1e-3  # plateau: an improvement must lower the error by more than this (absolute)
    max_reductions: int | None = None  # plateau: cuts allowed in all (None: no limit)

    def __post_init__(self):
        own = "Schedule"
        _choice(own, "kind", self.kind, SCHEDULE_KINDS)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen: normalise in place)
        set_("milestones", tuple(_number(own, "milestones", m, low=0, high=1, low_open=True, high_open=True)
                                 for m in _sequence(own, "milestones", self.milestones)))
        set_("factors", tuple(_number(own, "factors", f, low=0, low_open=True)
                              for f in _sequence(own, "factors", self.factors)))
        set_("gamma", _number(own, "gamma", self.gamma, low=0, low_open=True))
        set_("power", _number(own, "power", self.power, low=0, low_open=True))
        set_("threshold", _number(own, "threshold", self.threshold, low=0))
        _integer(own, "patience", self.patience, low=0)
        _choice(own, "monitor", self.monitor, MONITORS)
        if self.max_reductions is not None:
            _integer(own, "max_reductions", self.max_reductions, low=0)
        if self.kind == "multistep":
            if not self.milestones:
                _fail("Schedule.milestones: a multistep schedule needs at least one milestone (fractions of the run)")
            if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
                _fail(f"Schedule.milestones must increase, got {self.milestones}")
            if self.factors and len(self.factors) != len(self.milestones):
                _fail(f"Schedule.factors needs one factor per milestone ({len(self.milestones)}), "
                      f"got {len(self.factors)}")
        elif self.milestones or self.factors:
            _fail(f"Schedule.milestones and factors apply to kind 'multistep' only, not {self.kind!r}")
        if self.kind in ("step", "exponential"):
            if self.every is None:
                _fail(f"Schedule.every (the period in epochs) is required for kind {self.kind!r}")
            set_("every", _number(own, "every", self.every, low=0, low_open=True))
        elif self.every is not None:
            _fail(f"Schedule.every applies to kinds 'step' and 'exponential' only, not {self.kind!r}")

    def factor(self, step: int, total_steps: int, steps_per_epoch: int, reductions: int = 0) -> float:
        """The lr multiplier at optimizer step `step` (0-based) of `total_steps`; plateau: after `reductions` cuts."""
        if self.kind == "constant":
            return 1.0
        if self.kind == "multistep":
            k = sum(step >= round(m * total_steps) for m in self.milestones)
            return 1.0 if k == 0 else (self.factors[k - 1] if self.factors else self.gamma ** k)
        if self.kind == "step":
            return self.gamma ** math.floor(step / (self.every * steps_per_epoch) + 1e-9)
        if self.kind == "exponential":
            return self.gamma ** (step / (self.every * steps_per_epoch))
        if self.kind == "poly":
            return max(0.0, 1.0 - step / total_steps) ** self.power
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        cuts = reductions if self.max_reductions is None else min(reductions, self.max_reductions)
        return self.gamma ** cuts

    def plateau_reductions(self, values: Sequence[float]) -> int:
        """How many cuts the plateau rule has made after these end-of-epoch `monitor` values, oldest first."""
        best, bad, cuts = math.inf, 0, 0
        for value in values:
            if value < best - self.threshold:
                best, bad = value, 0
                continue
            bad += 1
            if bad > self.patience:
                if self.max_reductions is None or cuts < self.max_reductions:
                    cuts += 1
                bad = 0
        return cuts

    def in_words(self) -> str:
        """The schedule as `cnnzoo recipes` and the report print it (milestones are fractions of the run)."""
        if self.kind == "multistep":
            at = ", ".join(f"{100 * m:.3g}%" for m in self.milestones)
            factors = "/".join(f"{f:g}" for f in self.factors) if self.factors else f"{self.gamma:g} each"
            return f"x{factors} at {at} of training"
        if self.kind == "step":
            return f"x{self.gamma:g} every {self.every:g} epoch{'' if self.every == 1 else 's'}"
        if self.kind == "exponential":
            return f"x{self.gamma:g} per {self.every:g} epoch{'' if self.every == 1 else 's'}, smoothly"
        if self.kind == "poly":
            return f"poly to 0, power {self.power:g}"
        if self.kind == "cosine":
            return "cosine to 0"
        if self.kind == "plateau":
            watched = (self.monitor.replace("_top1_err", " error").replace("val", "validation")
                       .replace("train", "training"))
            cap = f", at most {self.max_reductions} times" if self.max_reductions is not None else ""
            return f"x{self.gamma:g} when the {watched} plateaus (patience {self.patience}){cap}"
        return "constant"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        if not isinstance(data, dict):
            _fail(f"a schedule must be a dict or Schedule, got {type(data).__name__}")
        _unknown("Schedule", data, [f.name for f in fields(cls)])
        return cls(**data)


def _sequence(owner: str, name: str, value) -> tuple:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        _fail(f"{owner}.{name} must be a tuple of numbers, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class Recipe:
    """One training recipe. Field values are validated on construction, `override` and `from_dict`."""

    name: str  # "paper" or "fast"
    family: str  # the model card's family
    dataset: str  # the dataset this recipe is for: "imagenet", "cifar10", "mnist"
    optimizer: str  # "sgd" or "rmsprop"
    lr: float  # base learning rate
    momentum: float
    weight_decay: float  # L2, coupled as torch.optim's weight_decay
    batch_size: int  # global mini-batch
    epochs: int
    schedule: Schedule
    nesterov: bool = False
    warmup_iters: int = 0  # optimizer steps at the constant warmup_lr before the schedule's lr applies
    warmup_lr: float | None = None
    rmsprop_decay: float | None = None  # RMSProp's moving-average decay (torch's alpha); rmsprop only
    rmsprop_eps: float | None = None  # rmsprop only; torch adds it outside the square root, TensorFlow inside
    label_smoothing: float = 0.0  # 0 in every paper here
    dropout: float | None = None  # the model's `dropout` option (a ratio), where the paper sets one
    aux_loss_weight: float | None = None  # GoogLeNet's auxiliary classifiers (Sec. 5: 0.3)
    drop_path: float | None = None  # FractalNet's local drop-path rate (the model option of that name)
    global_drop_path: float | None = None  # FractalNet's share of mini-batches with global drop-path
    survival_prob: float | None = None  # stochastic depth's p_L, the last block's survival probability
    augmentation: tuple[str, ...] = ()  # training augmentations, applied in this order (AUGMENTATIONS)
    init: str = ""  # the paper's initialisation, in words (the models already do it)
    source: str = ""  # where in the paper: "Sec. 3.4"
    assumed: tuple[str, ...] = ()  # fields (or "schedule.<field>") whose values the paper does not state
    notes: tuple[str, ...] = ()  # deviations, sources of assumed values, where the lecture differs

    def __post_init__(self):
        own = "Recipe"
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        _choice(own, "name", self.name, KINDS)
        if not isinstance(self.family, str) or not self.family:
            _fail(f"Recipe.family must be a non-empty string, got {self.family!r}")
        _choice(own, "dataset", self.dataset, tuple(DATASET_CLASSES))
        _choice(own, "optimizer", self.optimizer, OPTIMIZERS)
        set_("lr", _number(own, "lr", self.lr, low=0, low_open=True))
        set_("momentum", _number(own, "momentum", self.momentum, low=0, high=1, high_open=True))
        set_("weight_decay", _number(own, "weight_decay", self.weight_decay, low=0))
        _integer(own, "batch_size", self.batch_size, low=1)
        _integer(own, "epochs", self.epochs, low=1)
        if isinstance(self.schedule, dict):
            set_("schedule", Schedule.from_dict(self.schedule))
        if not isinstance(self.schedule, Schedule):
            _fail(f"Recipe.schedule must be a Schedule or a dict, got {type(self.schedule).__name__}")
        if not isinstance(self.nesterov, bool):
            _fail(f"Recipe.nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            _fail("Recipe.nesterov needs optimizer 'sgd' with momentum > 0")
        _integer(own, "warmup_iters", self.warmup_iters, low=0)
        if self.warmup_iters:
            if self.warmup_lr is None:
                _fail("Recipe.warmup_lr must be set (a positive number) when warmup_iters > 0")
            set_("warmup_lr", _number(own, "warmup_lr", self.warmup_lr, low=0, low_open=True))
        elif self.warmup_lr is not None:
            _fail("Recipe.warmup_lr needs warmup_iters > 0 (set both, or neither)")
        if self.optimizer == "rmsprop":
            if self.rmsprop_decay is None or self.rmsprop_eps is None:
                _fail("Recipe.rmsprop_decay and rmsprop_eps must be set for optimizer 'rmsprop'")
            set_("rmsprop_decay", _number(own, "rmsprop_decay", self.rmsprop_decay, low=0, high=1,
                                          low_open=True, high_open=True))
            set_("rmsprop_eps", _number(own, "rmsprop_eps", self.rmsprop_eps, low=0, low_open=True))
        elif self.rmsprop_decay is not None or self.rmsprop_eps is not None:
            _fail(f"Recipe.rmsprop_decay and rmsprop_eps apply to optimizer 'rmsprop' only; with "
                  f"{self.optimizer!r} set them to None")
        set_("label_smoothing", _number(own, "label_smoothing", self.label_smoothing, low=0, high=1,
                                        high_open=True))
        for key, high_open in (("dropout", True), ("drop_path", True), ("global_drop_path", False)):
            if getattr(self, key) is not None:
                set_(key, _number(own, key, getattr(self, key), low=0, high=1, high_open=high_open))
        if self.aux_loss_weight is not None:
            set_("aux_loss_weight", _number(own, "aux_loss_weight", self.aux_loss_weight, low=0))
        if self.survival_prob is not None:
            set_("survival_prob", _number(own, "survival_prob", self.survival_prob, low=0, high=1, low_open=True))
        set_("augmentation", _strings(own, "augmentation", self.augmentation))
        for name in self.augmentation:
            _choice(own, "augmentation", name, AUGMENTATIONS)
        if len(set(self.augmentation)) != len(self.augmentation):
            _fail(f"Recipe.augmentation lists a name twice: {self.augmentation}")
        for key in ("init", "source"):
            if not isinstance(getattr(self, key), str):
                _fail(f"Recipe.{key} must be a string, got {getattr(self, key)!r}")
        set_("notes", _strings(own, "notes", self.notes))
        set_("assumed", _strings(own, "assumed", self.assumed))
        valid = {f.name for f in fields(Recipe)} | {f"schedule.{f.name}" for f in fields(Schedule)}
        for key in self.assumed:
            if key not in valid:
                _fail(f"Recipe.assumed names {key!r}, which is not a field (or schedule.<field>)")

    def override(self, **changes) -> Recipe:
        """A copy with `changes`, validated. `schedule=` takes a Schedule, or a dict of changes to this one's
        (a dict with another `kind` starts from Schedule's defaults)."""
        _unknown("Recipe", changes, [f.name for f in fields(self)])
        if isinstance(changes.get("schedule"), dict):
            given = changes["schedule"]
            _unknown("Schedule", given, [f.name for f in fields(Schedule)])
            if given.get("kind", self.schedule.kind) != self.schedule.kind:
                changes["schedule"] = Schedule(**given)
            else:
                changes["schedule"] = replace(self.schedule, **given)
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples as lists, the schedule as a dict); `from_dict` inverts it."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Schedule) else (
                list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        if not isinstance(data, dict):
            _fail(f"a recipe must be a dict, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        _unknown("Recipe", data, valid)
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            _fail(f"recipe dict lacks {', '.join(missing)}")
        return cls(**data)

    def lr_at(self, step: int, steps_per_epoch: int, reductions: int = 0) -> float:
        """The lr of optimizer step `step` (0-based, counted from the first step, warm-up included)."""
        _integer("lr_at", "step", step, low=0)
        _integer("lr_at", "steps_per_epoch", steps_per_epoch, low=1)
        if step < self.warmup_iters:
            return self.warmup_lr
        return self.lr * self.schedule.factor(step, self.epochs * steps_per_epoch, steps_per_epoch, reductions)

    def model_options(self) -> dict[str, float]:
        """The recipe's settings that are model options of the same name (pass those the model accepts)."""
        keys = ("dropout", "drop_path", "global_drop_path", "survival_prob")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


# ---------------------------------------------------------------------------------------------------------------
# The papers' recipes, one per (family, dataset), each citing its paper's training section.

IMAGENET_TRAIN_IMAGES = 1_281_167
CIFAR_TRAIN_IMAGES = 50_000

_FB_RESNET = ("fb.resnet.torch (the Torch code the paper's runs are built on) uses Nesterov momentum, "
              "dampening 0, and Inception-style scale/aspect crops with colour jitter and PCA lighting; colour "
              "jitter has no name in the augmentation vocabulary and is left out")
_PLATEAU_OURS = ("the paper divides the lr by hand when the error stops improving; patience and threshold are ours "
                 "(torch ReduceLROnPlateau semantics, see the module docstring)")
_HE_INIT = "He et al. 2015: N(0, 2/n), n = k*k*out_channels; BN weight 1, bias 0"
_LECTURE_RESNET_WD = ("the lecture (L9) quotes ResNet's weight decay as 1e-5; the paper (Sec. 3.4) says 0.0001, "
                      "which this recipe follows")

_PAPER: dict[tuple[str, str], Recipe] = {}


def _paper(family: str, dataset: str, **values) -> None:
    _PAPER[(family, dataset)] = Recipe(name="paper", family=family, dataset=dataset, **values)


# LeCun et al. 1998, Sec. III.B: 20 passes; global eta 5e-4 (passes 1-2), 2e-4 (3-5), 1e-4 (6-8), 5e-5 (9-12), 1e-5.
_paper("lenet", "mnist", optimizer="sgd", lr=1e-4, momentum=0.9, weight_decay=0.0, batch_size=1, epochs=20,
       schedule=Schedule("multistep", milestones=(2 / 20, 5 / 20, 8 / 20, 12 / 20), factors=(0.4, 0.2, 0.1, 0.02)),
       augmentation=(), init="uniform in +-2.4/F_i, F_i the unit's fan-in (Appendix A)",
       source="Sec. III.B (schedule, 20 passes); Appendix C (stochastic diagonal Levenberg-Marquardt)",
       assumed=("optimizer", "lr", "momentum"),
       notes=("the paper trains with stochastic diagonal Levenberg-Marquardt: a per-parameter step eta / (mu + h_kk) "
              "from a Gauss-Newton estimate of the Hessian's diagonal, re-estimated on 500 samples before each "
              "pass (mu = 0.02); torch.optim has no such optimizer, so both recipes use SGD with momentum 0.9, its "
              "nearest standard stand-in, which keeps one optimizer family across the zoo",
              "the paper's eta values are SDLM step sizes, not SGD learning rates: only their ratios are kept "
              "(factors 0.4, 0.2, 0.1, 0.02 after passes 2, 5, 8, 12); lr 1e-4 at batch 1 is ours",
              "batch 1: the paper updates after every pattern (on-line)",
              "the paper's loss is the MAP criterion of eq. (9) (cnnzoo.models.lenet.map_loss, which needs its "
              "constant j); a trainer using cross-entropy on the -y logits is that criterion without the rubbish "
              "class",
              "no distortions for the card's 0.95%; the paper's distorted training set gives 0.8%",
              "the paper scales inputs so the background is -0.1 and the ink 1.175; the loader normalises by "
              "mean and std instead"))
# Krizhevsky et al. 2012, Sec. 5 (and 4.1, 4.2); L9 agrees: batch 128, momentum 0.9, wd 5e-4, lr 0.01.
_paper("alexnet", "imagenet", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=90,
       schedule=Schedule("plateau", gamma=0.1, max_reductions=3), dropout=0.5,
       augmentation=("random_crop", "flip", "pca_lighting"),
       init="weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden FC layers, 0 elsewhere",
       source="Sec. 5 (details of learning); Sec. 4.1 (augmentation); Sec. 4.2 (dropout)",
       assumed=("schedule.patience", "schedule.threshold"),
       notes=("lr divided by 10 when the validation error stopped improving, three times before termination; "
              "'roughly 90 cycles' through 1.2 million images", _PLATEAU_OURS,
              "random 224x224 patches (and their reflections) of the 256x256 images; PCA colour noise sigma 0.1",
              "the lecture (L9) gives the same batch, momentum, lr and weight decay"))
# Zeiler & Fergus 2013, Sec. 3.
_paper("zfnet", "imagenet", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=70,
       schedule=Schedule("plateau", gamma=0.1), dropout=0.5, augmentation=("random_crop", "flip"),
       init="weights 1e-2 (read as N(0, 0.01)), biases 0", source="Sec. 3 (training details)",
       assumed=("weight_decay", "schedule.gamma", "schedule.patience", "schedule.threshold"),
       notes=("the paper anneals the lr 'manually when the validation error plateaus' without a factor; /10 "
              "assumed", "weight decay is not stated; AlexNet's 5e-4 assumed", _PLATEAU_OURS,
              "the paper trains on 10 sub-crops 224x224 (corners, centre, flips) of the centre 256x256 region; "
              "random_crop + flip is the continuous version",
              "not applied: conv filters whose RMS exceeds 0.1 are renormalised to 0.1 (Sec. 3)"))
# Simonyan & Zisserman 2015, Sec. 3.1: 370K iterations (74 epochs).
_paper("vgg", "imagenet", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=74,
       schedule=Schedule("plateau", gamma=0.1, max_reductions=3), dropout=0.5,
       augmentation=("random_crop", "flip", "pca_lighting"),
       init="net A: N(0, 0.01), biases 0; deeper nets start from A's first four conv and last three FC layers",
       source="Sec. 3.1 (training)", assumed=("schedule.patience", "schedule.threshold"),
       notes=("lr decreased by 10 when the validation accuracy stopped improving, three times; stopped after 370K "
              "iterations (74 epochs)", _PLATEAU_OURS,
              "single-scale training at S = 256 (random 224 crops of the image rescaled so its shorter side is 256), "
              "as for the cards' Table 3 figures; configs C-E with S ~ U[256, 512] use "
              "override(augmentation=('scale_jitter', 'flip', 'pca_lighting'))",
              "'random RGB colour shift' is AlexNet's PCA lighting",
              "not reproduced: initialising deeper nets from net A; the paper notes Glorot init works without it"))
# Lin et al. 2014, Sec. 4.1/4.2; the unstated values are the authors' cuda-convnet settings.
_paper("nin", "cifar10", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-3, batch_size=128, epochs=120,
       schedule=Schedule("plateau", monitor="train_top1_err", gamma=0.1, max_reductions=2), dropout=0.5,
       augmentation=(), init="zero-mean Gaussians, per-layer stds of the authors' settings (nin.py's table)",
       source="Sec. 4.1 (overview: mini-batch 128, lr schedule); Sec. 4.2 (CIFAR-10)",
       assumed=("lr", "momentum", "weight_decay", "epochs", "schedule.patience", "schedule.threshold"),
       notes=("lr divided by 10 when the accuracy on the training set stops improving, twice (final lr 1% of the "
              "initial)", "lr 0.01, momentum 0.9 and weight decay 0.001 are epsW, momW and wc of the authors' "
              "cuda-convnet layer file (mavenlin/cuda-convnet NIN/cifar-100_params; no CIFAR-10 file is "
              "published); its loss coefficient 2 doubles the gradient, so cuda-convnet's step corresponds to "
              "lr 0.02 here; epochs are not stated (120 assumed)",
              "no augmentation, as for the card's 10.41% (8.81% with flips and translations)",
              "the paper preprocesses with global contrast normalisation and ZCA whitening (as Maxout); the "
              "loader normalises by mean and std"))
_paper("nin", "imagenet", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=90,
       schedule=Schedule("plateau", gamma=0.1, max_reductions=3), dropout=0.5,
       augmentation=("random_crop", "flip"), init="zero-mean Gaussians (nin.py's table)",
       source="none: the paper trains no ImageNet network",
       assumed=("optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "schedule", "dropout",
                "augmentation"),
       notes=("nin_imagenet is the authors' Caffe model-zoo release; its solver is not published, so this is "
              "AlexNet's recipe (Krizhevsky et al. 2012, Sec. 5)",))
# Szegedy et al. 2015, Sec. 6 (and Sec. 5 for the auxiliary classifiers).
_paper("googlenet", "imagenet", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=2e-4, batch_size=32,
       epochs=250, schedule=Schedule("step", every=8, gamma=0.96), dropout=0.4, aux_loss_weight=0.3,
       augmentation=("random_resized_crop", "flip"),
       init="not stated in the paper; the BVLC Caffe model uses Xavier", source="Sec. 6 (training methodology); "
       "Sec. 5 (auxiliary classifiers, loss weight 0.3)",
       assumed=("lr", "weight_decay", "batch_size", "epochs"),
       notes=("stated: asynchronous SGD with momentum 0.9, lr decreased by 4% every 8 epochs, Polyak averaging "
              "for the final model (not applied here)",
              "lr 0.01, weight decay 2e-4 and batch 32 are BVLC's Caffe solver for GoogLeNet "
              "(models/bvlc_googlenet/solver.prototxt: step 320k iterations x 32 images = 8 epochs, gamma 0.96); "
              "its max_iter of 10M iterations (250 epochs) is a cap, the paper states no length",
              "random crops of 8-100% of the area with aspect ratio 3/4-4/3; the paper adds Howard's photometric "
              "distortions and random interpolation methods, which have no names here"))
# Szegedy et al. 2017, Sec. 4.
_paper("inception_v4", "imagenet", optimizer="rmsprop", lr=0.045, momentum=0.9, weight_decay=4e-5, batch_size=32,
       epochs=100, schedule=Schedule("step", every=2, gamma=0.94), rmsprop_decay=0.9, rmsprop_eps=1.0, dropout=0.2,
       augmentation=("random_resized_crop", "flip"), init="not stated in the paper",
       source="Sec. 4 (training methodology)",
       assumed=("momentum", "weight_decay", "batch_size", "epochs", "augmentation"),
       notes=("stated: RMSProp with decay 0.9 and epsilon 1.0, lr 0.045 decayed every two epochs by 0.94, "
              "evaluation with a running average of the parameters (not applied here); 'earlier experiments used "
              "momentum with a decay of 0.9'",
              "TensorFlow adds epsilon inside the square root (sqrt(v + eps)), torch.optim.RMSprop outside "
              "(sqrt(v) + eps): with eps = 1.0 the two differ",
              "not stated, from Inception-v3 (Szegedy et al. 2016, Sec. 8) and TF-slim: batch 32 per replica, 100 "
              "epochs, RMSProp momentum 0.9, weight decay 4e-5, Inception crops; Inception-v3 also clips "
              "gradients at 2.0 and smooths labels by 0.1, neither stated for v4 nor applied"))
# He et al. 2016, Sec. 3.4: "up to 60 x 10^4 iterations" of 256 images = 120 epochs.
_paper("resnet", "imagenet", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=256, epochs=120,
       schedule=Schedule("plateau", gamma=0.1), augmentation=("scale_jitter", "flip", "pca_lighting"),
       init=_HE_INIT, source="Sec. 3.4 (implementation)",
       assumed=("schedule.patience", "schedule.threshold"),
       notes=("lr divided by 10 when the error plateaus; trained for up to 60e4 iterations (120 epochs); no "
              "dropout", _PLATEAU_OURS,
              "the shorter side is sampled in [256, 480] (the vocabulary's scale_jitter samples [256, 512])",
              _LECTURE_RESNET_WD,
              "fb.resnet.torch and torchvision reproduce it with 90 epochs and /10 at epochs 30 and 60"))
# He et al. 2016, Sec. 4.2: 32k/48k/64k iterations at 128 = 163.8 epochs of 50k images.
_paper("resnet", "cifar10", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128, epochs=164,
       schedule=Schedule("multistep", milestones=(0.5, 0.75), gamma=0.1), augmentation=("crop_pad4", "flip"),
       init=_HE_INIT, source="Sec. 4.2 (CIFAR-10 and analysis)",
       notes=("lr 0.1, divided by 10 at 32k and 48k iterations, stopped at 64k (163.8 epochs of 50k images at "
              "batch 128), a schedule chosen on a 45k/5k split; no dropout",
              "plain nets (no shortcuts) are trained the same way",
              "per-pixel mean subtraction in the paper; the loader normalises by mean and std"))
# He et al. 2016b (identity mappings), Appendix.
_paper("preact_resnet", "cifar10", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
       epochs=164, schedule=Schedule("multistep", milestones=(0.5, 0.75), gamma=0.1), warmup_iters=400,
       warmup_lr=0.01, augmentation=("crop_pad4", "flip"), init=_HE_INIT, source="Appendix (implementation details)",
       notes=("as He et al. 2016 Sec. 4.2 (lr 0.1, /10 at 32k and 48k iterations, stop at 64k, batch 128 on 2 "
              "GPUs), with lr 0.01 for the first 400 iterations in every CIFAR run",
              "the authors' later Torch code (KaimingHe/resnet-1k-layers) trains 200 epochs at batch 64; "
              "ResNet-1001 then reaches 4.62% instead of 4.92%"))
_paper("preact_resnet", "imagenet", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=256,
       epochs=120, schedule=Schedule("plateau", gamma=0.1), augmentation=("scale_jitter", "flip", "pca_lighting"),
       init=_HE_INIT, source="Appendix (ImageNet: 'the same hyper-parameters and implementations as [1]')",
       assumed=("schedule.patience", "schedule.threshold"),
       notes=("He et al. 2016 Sec. 3.4's recipe, which the paper reuses", _PLATEAU_OURS,
              "the card's 20.7% is with scale augmentation; scale and aspect-ratio augmentation gives 20.1% "
              "(override(augmentation=('random_resized_crop', 'flip', 'pca_lighting')))"))
# Zagoruyko & Komodakis 2016, Sec. 3.
_paper("wide_resnet", "cifar10", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
       batch_size=128, epochs=200, schedule=Schedule("multistep", milestones=(0.3, 0.6, 0.8), gamma=0.2),
       augmentation=("crop_pad4", "flip"), init=_HE_INIT, source="Sec. 3 (experimental results: training)",
       notes=("SGD with Nesterov momentum 0.9, dampening 0, lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160 of "
              "200, weight decay 5e-4, batch 128",
              "no dropout, as the cards' Table 5 figures; Table 6's dropout variant is override(dropout=0.3)",
              "the authors' code pads by reflection, crop_pad4 by zeros; mean/std normalisation as the paper"))
_paper("wide_resnet", "imagenet", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
       batch_size=256, epochs=90, schedule=Schedule("multistep", milestones=(1 / 3, 2 / 3), gamma=0.1),
       augmentation=("random_resized_crop", "flip", "pca_lighting"), init=_HE_INIT,
       source="Sec. 3 (ImageNet experiments, trained with fb.resnet.torch)",
       assumed=("lr", "nesterov", "weight_decay", "batch_size", "epochs", "schedule"),
       notes=("the paper gives no ImageNet hyper-parameters; these are fb.resnet.torch's defaults (90 epochs, "
              "/10 every 30), which the authors' ImageNet code builds on", _FB_RESNET))
# Xie et al. 2017, Sec. 4 (ImageNet) and Appendix A (CIFAR).
_paper("resnext", "imagenet", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
       batch_size=256, epochs=100, schedule=Schedule("multistep", milestones=(0.3, 0.6, 0.9), gamma=0.1),
       augmentation=("random_resized_crop", "flip", "pca_lighting"), init=_HE_INIT,
       source="Sec. 4 (implementation details)", assumed=("nesterov", "epochs"),
       notes=("lr 0.1 divided by 10 three times on fb.resnet.torch's schedule (every 30 epochs), batch 256 on 8 "
              "GPUs, weight decay 1e-4, momentum 0.9; the paper states no length: three cuts at 30, 60, 90 need "
              "more than 90 epochs, 100 assumed (torchvision's ResNeXt recipe length)", _FB_RESNET))
_paper("resnext", "cifar10", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
       batch_size=128, epochs=300, schedule=Schedule("multistep", milestones=(0.5, 0.75), gamma=0.1),
       augmentation=("crop_pad4", "flip"), init=_HE_INIT, source="Appendix A (CIFAR implementation details)",
       assumed=("nesterov",),
       notes=("lr 0.1, /10 at epochs 150 and 225 of 300, weight decay 5e-4, momentum 0.9, 8 GPUs",
              "the authors' README: the arXiv paper's CIFAR runs used pre-activation bottlenecks and batch 256; "
              "the original bottlenecks built here do better at batch 128, its training command's setting",
              _FB_RESNET))
# Huang et al. 2016, Sec. 4; the authors' main.lua (yueatsprograms/Stochastic_Depth) agrees.
_paper("stochastic_depth", "cifar10", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
       batch_size=128, epochs=500, schedule=Schedule("multistep", milestones=(0.5, 0.75), gamma=0.1),
       survival_prob=0.5, augmentation=("crop_pad4", "flip"), init=_HE_INIT, source="Sec. 4 (CIFAR-10)",
       notes=("500 epochs, lr 0.1 divided by 10 at epochs 250 and 375, Nesterov momentum 0.9 (dampening 0), weight "
              "decay 1e-4, batch 128, linear decay of the survival probability to p_L = 0.5",
              "the reported error is at the epoch of best validation error on a 45k/5k split"))
_paper("stochastic_depth", "imagenet", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
       batch_size=256, epochs=90, schedule=Schedule("multistep", milestones=(1 / 3, 2 / 3), gamma=0.1),
       survival_prob=0.5, augmentation=("random_resized_crop", "flip", "pca_lighting"), init=_HE_INIT,
       source="Sec. 4 (ImageNet)", assumed=("lr", "nesterov", "weight_decay", "batch_size", "schedule"),
       notes=("the paper trains ResNet-152 for 90 epochs with stochastic depth (no gain over constant depth in "
              "that budget); the other values are fb.resnet.torch's defaults", _FB_RESNET))
# Huang et al. 2017, Sec. 4.2.
_paper("densenet", "cifar10", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
       batch_size=64, epochs=300, schedule=Schedule("multistep", milestones=(0.5, 0.75), gamma=0.1),
       augmentation=("crop_pad4", "flip"), init=_HE_INIT, source="Sec. 4.2 (training)",
       notes=("batch 64 for 300 epochs, lr 0.1 divided by 10 at 50% and 75% of the epochs, weight decay 1e-4, "
              "Nesterov momentum 0.9 without dampening",
              "with augmentation (C10+, the cards' figures) no dropout; without it, dropout 0.2 after every conv "
              "but the first: override(dropout=0.2, augmentation=())"))
_paper("densenet", "imagenet", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
       batch_size=256, epochs=90, schedule=Schedule("multistep", milestones=(1 / 3, 2 / 3), gamma=0.1),
       augmentation=("random_resized_crop", "flip", "pca_lighting"), init=_HE_INIT,
       source="Sec. 4.2 (training); Sec. 4.1 (augmentation as fb.resnet.torch)",
       notes=("batch 256 for 90 epochs, lr 0.1 divided by 10 at epochs 30 and 60, weight decay 1e-4, Nesterov "
              "momentum 0.9", _FB_RESNET))
# Larsson et al. 2017, Sec. 4 (and the authors' Caffe generator, gustavla/fractalnet).
_paper("fractalnet", "cifar10", optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=0.0, batch_size=100,
       epochs=400, schedule=Schedule("multistep", milestones=(0.5, 0.75, 0.875, 0.9375), gamma=0.1),
       drop_path=0.15, global_drop_path=0.5, augmentation=("crop_pad4", "flip"),
       init="Xavier (Caffe's filler: U(-sqrt(3/fan_in), sqrt(3/fan_in))), biases 0",
       source="Sec. 4 (training: 400 epochs, batch 100, lr 0.02, momentum 0.9; drop-path)",
       assumed=("weight_decay",),
       notes=("lr divided by 10 each time the remaining epochs halve: at 200, 300, 350 and 375 of 400",
              "local drop-path 15%, global drop-path on half of the mini-batches, dropout 0/10/20/30/40% per block: "
              "the models' defaults (their `dropout` option is a switch, so this recipe leaves it alone)",
              "weight decay is not stated; the authors' generator marks weights for decay but its solver is not "
              "published: 0 assumed"))
# Iandola et al. 2016, Sec. 3.3 defers to the Caffe files (forresti/SqueezeNet SqueezeNet_v1.0/solver.prototxt).
_paper("squeezenet", "imagenet", optimizer="sgd", lr=0.04, momentum=0.9, weight_decay=2e-4, batch_size=512,
       epochs=68, schedule=Schedule("poly", power=1.0), dropout=0.5, augmentation=("random_crop",),
       init="Xavier (Caffe's filler); conv10 N(0, 0.01)",
       source="Sec. 3.3 (dropout 50% after fire9; other settings in the authors' Caffe solver and train_val files)",
       notes=("the authors' solver: base lr 0.04, 'poly' decay with power 1 to 0, 170k iterations of 512 images "
              "(32 x iter_size 16) = 68 epochs, momentum 0.9, weight decay 2e-4",
              "an earlier revision of that solver: lr 0.08, power 0.5, 85k iterations of 1024 images",
              "random 227x227 crops of the 256x256 images; the train_val file does not mirror"))


# Model-specific changes on top of the family's paper recipe: (changes, extra notes).
_TORCHVISION = "torchvision's weights for this model come from torchvision's own recipe, not this one"
_MODEL: dict[str, tuple[dict, tuple[str, ...]]] = {
    "lenet5_modern": ({}, ("not in the paper: the modern LeNet is trained here with LeNet-5's recipe",)),
    "alexnet_owt": ({}, ("torchvision's AlexNet (Krizhevsky 2014, 'one weird trick'); "
                         + _TORCHVISION + " (90 epochs, batch 256, lr 0.01 / 10 every 30 epochs)",)),
    "googlenet_bn": ({"dropout": None}, ("torchvision's batch-normalised GoogLeNet keeps its own dropout (0.2); "
                                         "its weights are ported from TensorFlow, not trained with this recipe",)),
    "inception_resnet_v2_tf": ({}, ("the TF-slim release's network; trained with the same paper recipe",)),
    "inception_v4_tf": ({}, ("the TF-slim release's network; trained with the same paper recipe",)),
    "nin_caffe": ({}, ("the authors' Caffe release of the CIFAR-10 network",)),
    "resnet110": ({"warmup_iters": 400, "warmup_lr": 0.01},
                  ("Sec. 4.2: lr 0.01 until the training error is below 80% (about 400 iterations), then 0.1; "
                   "modelled as 400 iterations",)),
    "resnet1202": ({"warmup_iters": 400, "warmup_lr": 0.01, "assumed": ("warmup_iters", "warmup_lr")},
                   ("Sec. 4.2 trains the 1202-layer net 'as above'; ResNet-110's warm-up is assumed to apply",)),
    "plain110": ({"warmup_iters": 400, "warmup_lr": 0.01, "assumed": ("warmup_iters", "warmup_lr")},
                 ("the paper's plain nets stop at 56 layers; ResNet-110's warm-up is assumed for this depth",)),
    "resnet1202_sd": ({}, ("the 1202-layer run is assumed to use the 110-layer recipe",)),
    "densenet161": ({}, ("not in the paper (the authors' release); trained as the other ImageNet DenseNets",)),
    "wide_resnet101_2": ({}, ("not in the paper (torchvision's); " + _TORCHVISION,)),
    "resnext101_32x8d": ({}, ("not in the paper (torchvision's); " + _TORCHVISION,)),
    "squeezenet1_1": ({}, ("SqueezeNet v1.1 (the authors' release); the same solver is assumed",)),
}
for _name in ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"):
    _MODEL[_name] = ({}, ("not in the paper: batch normalisation is torchvision's addition; " + _TORCHVISION,))
for _name in ("resnet50_v1_5", "resnet101_v1_5", "resnet152_v1_5"):
    _MODEL[_name] = ({}, ("torchvision's ResNet v1.5 (stride on the 3x3); " + _TORCHVISION
                          + " (90 epochs, /10 every 30)",))


# ---------------------------------------------------------------------------------------------------------------
# "fast": ours. Per family: (lr, batch size, epochs); the paper's optimizer, momentum, Nesterov, weight decay and
# regularisers stay; cosine to 0, no warm-up. Measured only where a note says so.

_FAST: dict[tuple[str, str], tuple[float, int, int]] = {
    ("lenet", "mnist"): (0.002, 32, 30),
    ("alexnet", "imagenet"): (0.01, 64, 5),
    ("zfnet", "imagenet"): (0.01, 64, 5),
    ("vgg", "imagenet"): (0.01, 64, 5),
    ("nin", "cifar10"): (0.01, 128, 10),
    ("nin", "imagenet"): (0.01, 64, 5),
    ("googlenet", "imagenet"): (0.01, 64, 5),
    ("inception_v4", "imagenet"): (0.045, 64, 5),
    ("resnet", "imagenet"): (0.05, 64, 5),
    ("resnet", "cifar10"): (0.05, 128, 10),
    ("preact_resnet", "imagenet"): (0.05, 64, 5),
    ("preact_resnet", "cifar10"): (0.05, 128, 10),
    ("wide_resnet", "imagenet"): (0.05, 64, 5),
    ("wide_resnet", "cifar10"): (0.05, 128, 10),
    ("resnext", "imagenet"): (0.05, 64, 5),
    ("resnext", "cifar10"): (0.05, 128, 10),
    ("stochastic_depth", "imagenet"): (0.05, 64, 5),
    ("stochastic_depth", "cifar10"): (0.05, 128, 10),
    ("densenet", "imagenet"): (0.05, 64, 5),
    ("densenet", "cifar10"): (0.05, 64, 10),
    ("fractalnet", "cifar10"): (0.02, 100, 10),
    ("squeezenet", "imagenet"): (0.01, 64, 5),
}
_FAST_AUGMENTATION = {"mnist": ("crop_pad2",), "cifar10": ("crop_pad4", "flip"), "cifar100": ("crop_pad4", "flip"),
                      "imagenet": ("random_crop", "flip")}
_FAST_MODEL: dict[str, dict] = {
    "lenet5_modern": {"lr": 0.02},  # ReLU and a linear output take a 10x larger step than lenet5
}
_FAST_NOTES: dict[str, tuple[str, ...]] = {
    "lenet": ("lenet5 on `digits` (1,442 training images resized to 32x32, 355 held out): 98.0-99.7% test accuracy "
              "after 30 epochs over seeds 0-4, 98% reached within 9-18 s on 2 idle CPU cores "
              "(benchmarks/digits_time.py); 15 epochs leave one seed in five at 97.5%; shifts of up to 2 px "
              "(crop_pad2) and not 4: 4 px is a whole pixel of an 8x8 digit, and LeNet-5 then reaches 96-97%",
              "with the 8x8 digits padded (not resized) into the 32x32 field LeNet-5 reaches about 80%"),
}


def recipe_for(model_name: str, kind: str = "paper") -> Recipe:
    """The training recipe of a registered model: "paper" (its paper's, for its card's dataset) or "fast" (ours)."""
    if kind not in KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}; expected one of {', '.join(repr(k) for k in KINDS)}")
    card = model_card(model_name)  # unknown names: the registry's ValueError with the nearest names
    key = (card.family, card.dataset)
    if key not in _PAPER:
        raise ValueError(f"no training recipe for family {card.family!r} on {card.dataset!r} (model {card.name!r})")
    recipe = _PAPER[key]
    changes, notes = _MODEL.get(card.name, ({}, ()))
    if changes or notes:
        changes = dict(changes)
        changes["assumed"] = recipe.assumed + tuple(changes.get("assumed", ()))
        recipe = recipe.override(notes=recipe.notes + notes, **changes)
    return _fast(recipe, card.name) if kind == "fast" else recipe


def _fast(paper: Recipe, model_name: str) -> Recipe:
    lr, batch_size, epochs = _FAST[(paper.family, paper.dataset)]
    changes = dict(name="fast", lr=lr, batch_size=batch_size, epochs=epochs, schedule=Schedule("cosine"),
                   warmup_iters=0, warmup_lr=None, augmentation=_FAST_AUGMENTATION[paper.dataset],
                   source="cnnzoo's fast recipe, not the paper's", assumed=("lr", "batch_size", "epochs", "schedule",
                                                                             "augmentation"),
                   notes=("ours, not the paper's: a short cosine schedule for a CPU demo on small data; the paper's "
                          f"optimizer ({paper.optimizer}), momentum, weight decay and regularisers are kept "
                          f"(paper recipe: {paper.source})",) + _FAST_NOTES.get(paper.family, ()))
    changes.update(_FAST_MODEL.get(model_name, {}))
    return paper.override(**changes)


def list_recipes(kind: str = "paper") -> list[tuple[str, str, Recipe]]:
    """(family, dataset, recipe) for every family and dataset the registry has models of, sorted.

    These are the family recipes; `recipe_for(name)` adds a model's own changes (e.g. ResNet-110's warm-up).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}; expected one of {', '.join(repr(k) for k in KINDS)}")
    keys = sorted({(model_card(n).family, model_card(n).dataset) for n in list_models()})
    out = []
    for family, dataset in keys:
        recipe = _PAPER[(family, dataset)]
        out.append((family, dataset, _fast(recipe, "") if kind == "fast" else recipe))
    return out
