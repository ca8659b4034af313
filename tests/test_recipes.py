"""Training recipes: coverage of the registry, the papers' figures, the schedule conventions, validation, dicts."""

import dataclasses
import json
import math

import pytest
import torch

from cnnzoo import list_models, model_card
from cnnzoo.registry import model_options
from cnnzoo.train.recipes import AUGMENTATIONS, Recipe, Schedule, list_recipes, recipe_for

MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_has_a_paper_and_a_fast_recipe(name):
    card = model_card(name)
    paper, fast = recipe_for(name), recipe_for(name, "fast")
    assert paper == recipe_for(name, "paper")
    assert (paper.name, fast.name) == ("paper", "fast")
    assert paper.family == fast.family == card.family and paper.dataset == fast.dataset == card.dataset
    assert paper.source and paper.init
    # fast is ours: short, cosine, the paper's optimizer family and regularisers, and it says so
    assert fast.optimizer == paper.optimizer and fast.momentum == paper.momentum
    assert fast.weight_decay == paper.weight_decay and fast.nesterov == paper.nesterov
    assert fast.model_options() == paper.model_options() and fast.aux_loss_weight == paper.aux_loss_weight
    assert fast.epochs <= 30 and 32 <= fast.batch_size <= 128 and fast.schedule.kind == "cosine"
    assert fast.warmup_iters == 0 and "not the paper's" in fast.notes[0]
    assert paper.label_smoothing == fast.label_smoothing == 0.0


@pytest.mark.parametrize("name", MODELS)
def test_recipe_regularisers_are_options_of_the_model(name):
    options = model_options(name)
    for kind in ("paper", "fast"):
        for key, value in recipe_for(name, kind).model_options().items():
            assert key in options, f"{name}: recipe sets {key}, which the model does not take"
            assert isinstance(options[key].default, float) and not isinstance(options[key].default, bool)


def test_paper_dropout_is_the_models_default():
    # the models are built as their papers say, so a paper recipe's dropout never changes them
    for name in MODELS:
        recipe = recipe_for(name)
        if recipe.dropout is not None:
            assert model_options(name)["dropout"].default == recipe.dropout, name


def test_augmentations_are_the_data_vocabulary():
    augment = pytest.importorskip("cnnzoo.data.augment")
    assert set(AUGMENTATIONS) <= set(augment.AUGMENTATIONS)
    used = {a for n in MODELS for k in ("paper", "fast") for a in recipe_for(n, k).augmentation}
    assert used <= set(augment.AUGMENTATIONS)


def _steps(recipe: Recipe, total: int, epochs: int):
    """(recipe with `epochs`, steps_per_epoch) so that the run is exactly `total` optimizer steps."""
    assert total % epochs == 0
    return recipe.override(epochs=epochs), total // epochs


# ----------------------------------------------------------------------------------------------------------------
# The papers' figures (papers.md and the papers themselves), as literals next to their source.

def test_lenet5():
    r = recipe_for("lenet5")
    # LeCun et al. 1998, Sec. III.B: 20 passes; eta 5e-4, 2e-4, 1e-4, 5e-5, 1e-5 after passes 2, 5, 8, 12
    assert r.epochs == 20 and r.batch_size == 1
    assert [m * 20 for m in r.schedule.milestones] == pytest.approx([2, 5, 8, 12])
    assert [r.lr * f for f in (1, *r.schedule.factors)] == pytest.approx([x * r.lr / 5e-4 for x in
                                                                          (5e-4, 2e-4, 1e-4, 5e-5, 1e-5)])
    # SDLM replaced by SGD with momentum, in both recipes, and the notes say why
    assert r.optimizer == recipe_for("lenet5", "fast").optimizer == "sgd" and r.momentum == 0.9
    assert any("Levenberg-Marquardt" in n for n in r.notes) and "optimizer" in r.assumed


def test_lenet5_fast():
    r = recipe_for("lenet5", "fast")
    assert (r.optimizer, r.momentum, r.batch_size, r.epochs) == ("sgd", 0.9, 32, 30)
    assert r.augmentation == ("crop_pad2",)  # 2-px shifts: half a pixel of an 8x8 digit at 32x32
    assert r.lr * 1 == r.lr_at(0, 45)


def test_alexnet():
    r = recipe_for("alexnet")
    # Krizhevsky et al. 2012, Sec. 5 (L9 agrees): batch 128, momentum 0.9, wd 5e-4, lr 0.01, /10 three times, ~90
    assert (r.batch_size, r.momentum, r.weight_decay, r.lr) == (128, 0.9, 5e-4, 0.01)
    assert (r.schedule.kind, r.schedule.gamma, r.schedule.max_reductions) == ("plateau", 0.1, 3)
    assert r.epochs == 90 and r.dropout == 0.5  # Sec. 4.2
    assert r.augmentation == ("random_crop", "flip", "pca_lighting")  # Sec. 4.1


def test_zfnet():
    r = recipe_for("zfnet")
    # Zeiler & Fergus 2013, Sec. 3: batch 128, lr 1e-2, momentum 0.9, dropout 0.5, 70 epochs
    assert (r.batch_size, r.lr, r.momentum, r.dropout, r.epochs) == (128, 0.01, 0.9, 0.5, 70)
    assert "weight_decay" in r.assumed  # not stated


def test_vgg():
    for name in ("vgg11", "vgg16", "vgg19", "vgg16_c", "vgg11_lrn"):
        r = recipe_for(name)
        # Simonyan & Zisserman 2015, Sec. 3.1: batch 256, momentum 0.9, wd 5e-4, dropout 0.5, lr 0.01 /10 x3,
        # 370K iterations = 74 epochs
        assert (r.batch_size, r.lr, r.momentum, r.weight_decay, r.dropout) == (256, 0.01, 0.9, 5e-4, 0.5)
        assert r.schedule.kind == "plateau" and r.schedule.max_reductions == 3 and r.epochs == 74
        assert round(370_000 * 256 / 1_281_167) == r.epochs


def test_nin():
    r = recipe_for("nin")
    # Lin et al. 2014, Sec. 4.1: batch 128; /10 when training accuracy stops improving, twice
    assert r.batch_size == 128 and r.dropout == 0.5
    assert (r.schedule.kind, r.schedule.monitor, r.schedule.max_reductions) == ("plateau", "train_top1_err", 2)
    assert r.augmentation == ()  # the card's 10.41% is without augmentation


def test_googlenet():
    r = recipe_for("googlenet")
    # Szegedy et al. 2015, Sec. 6: momentum 0.9, lr -4% every 8 epochs; Sec. 5: aux loss weight 0.3
    assert r.momentum == 0.9 and (r.schedule.kind, r.schedule.every, r.schedule.gamma) == ("step", 8, 0.96)
    assert r.aux_loss_weight == 0.3 and r.dropout == 0.4
    assert r.augmentation == ("random_resized_crop", "flip")
    assert recipe_for("googlenet_bn").dropout is None  # torchvision's net keeps its own 0.2


def test_inception_v4():
    for name in ("inception_v4", "inception_v4_tf", "inception_resnet_v2", "inception_resnet_v2_tf"):
        r = recipe_for(name)
        # Szegedy et al. 2017, Sec. 4: RMSProp decay 0.9, eps 1.0, lr 0.045 x0.94 every 2 epochs
        assert (r.optimizer, r.rmsprop_decay, r.rmsprop_eps, r.lr) == ("rmsprop", 0.9, 1.0, 0.045)
        assert (r.schedule.kind, r.schedule.every, r.schedule.gamma) == ("step", 2, 0.94)
        assert "batch_size" in r.assumed and "epochs" in r.assumed


def test_resnet_imagenet():
    for name in ("resnet18", "resnet50", "resnet152", "resnet50_v1_5", "plain34"):
        r = recipe_for(name)
        # He et al. 2016, Sec. 3.4: batch 256, lr 0.1 /10 on plateau, wd 1e-4, momentum 0.9, up to 60e4 iterations
        assert (r.batch_size, r.lr, r.weight_decay, r.momentum) == (256, 0.1, 1e-4, 0.9)
        assert r.schedule.kind == "plateau" and r.dropout is None
        assert round(60e4 * 256 / 1_281_167) == r.epochs
        # the lecture's 1e-5 is recorded, the paper's 1e-4 used
        assert any("1e-5" in n and "lecture" in n for n in r.notes)


def test_resnet_cifar():
    for name in ("resnet20", "resnet56", "resnet110", "plain20", "plain56"):
        r = recipe_for(name)
        # He et al. 2016, Sec. 4.2: batch 128, lr 0.1, /10 at 32k and 48k iterations, stop at 64k, wd 1e-4
        assert (r.batch_size, r.lr, r.weight_decay, r.momentum) == (128, 0.1, 1e-4, 0.9)
        assert [m * 64_000 for m in r.schedule.milestones] == [32_000, 48_000] and r.schedule.gamma == 0.1
        assert r.epochs == round(64_000 * 128 / 50_000)
        assert r.augmentation == ("crop_pad4", "flip")
        run, per_epoch = _steps(r, 64_000, 160)
        assert run.lr_at(31_999, per_epoch) == 0.1 and run.lr_at(32_000, per_epoch) == pytest.approx(0.01)
        assert run.lr_at(47_999, per_epoch) == pytest.approx(0.01)
        assert run.lr_at(48_000, per_epoch) == pytest.approx(0.001)


def test_resnet110_warmup():
    r = recipe_for("resnet110")
    # Sec. 4.2: lr 0.01 until training error < 80% (about 400 iterations), then 0.1: a fixed 400 iterations
    assert (r.warmup_iters, r.warmup_lr) == (400, 0.01)
    assert r.lr_at(0, 391) == r.lr_at(399, 391) == 0.01 and r.lr_at(400, 391) == 0.1
    assert recipe_for("resnet56").warmup_iters == 0


def test_preact_resnet():
    for name in ("preact_resnet110", "preact_resnet164", "preact_resnet1001"):
        r = recipe_for(name)
        # He et al. 2016b, Appendix: as ResNet CIFAR, with lr 0.01 for the first 400 iterations
        assert (r.batch_size, r.lr, r.weight_decay, r.schedule.milestones) == (128, 0.1, 1e-4, (0.5, 0.75))
        assert (r.warmup_iters, r.warmup_lr) == (400, 0.01)
    assert recipe_for("preact_resnet200").batch_size == 256  # "the same hyper-parameters as [1]"


def test_wide_resnet():
    for name in ("wrn28_10", "wrn16_8", "wrn40_4"):
        r = recipe_for(name)
        # Zagoruyko & Komodakis 2016, Sec. 3: lr 0.1 x0.2 at 60/120/160 of 200 epochs, wd 5e-4, Nesterov, batch 128
        assert (r.lr, r.weight_decay, r.nesterov, r.batch_size, r.epochs) == (0.1, 5e-4, True, 128, 200)
        assert [m * 200 for m in r.schedule.milestones] == pytest.approx([60, 120, 160]) and r.schedule.gamma == 0.2
        assert r.dropout is None  # Table 5 (the cards): no dropout


def test_resnext():
    r = recipe_for("resnext29_8x64d")
    # Xie et al. 2017, Appendix A: lr 0.1, /10 at 150 and 225 of 300 epochs, wd 5e-4
    assert (r.lr, r.weight_decay, r.epochs) == (0.1, 5e-4, 300)
    assert [m * 300 for m in r.schedule.milestones] == [150, 225]
    r = recipe_for("resnext50_32x4d")
    # Sec. 4: batch 256, wd 1e-4, momentum 0.9, lr 0.1 divided by 10 three times
    assert (r.batch_size, r.weight_decay, r.momentum, r.lr) == (256, 1e-4, 0.9, 0.1)
    assert len(r.schedule.milestones) == 3 and r.augmentation[0] == "random_resized_crop"


def test_stochastic_depth():
    for name in ("resnet110_sd", "resnet1202_sd"):
        r = recipe_for(name)
        # Huang et al. 2016, Sec. 4 (and the authors' main.lua): 500 epochs, batch 128, /10 at 250 and 375,
        # Nesterov momentum 0.9, wd 1e-4, p_L = 0.5
        assert (r.epochs, r.batch_size, r.lr, r.nesterov, r.momentum, r.weight_decay) == (500, 128, 0.1, True, 0.9,
                                                                                          1e-4)
        assert [m * 500 for m in r.schedule.milestones] == [250, 375] and r.survival_prob == 0.5


def test_densenet():
    for name in ("densenet40_k12", "densenet_bc100_k12", "densenet_bc190_k40"):
        r = recipe_for(name)
        # Huang et al. 2017, Sec. 4.2: batch 64, 300 epochs, lr 0.1 /10 at 50% and 75%, wd 1e-4, Nesterov 0.9
        assert (r.batch_size, r.epochs, r.lr, r.weight_decay, r.nesterov, r.momentum) == (64, 300, 0.1, 1e-4, True,
                                                                                          0.9)
        assert r.schedule.milestones == (0.5, 0.75)
    r = recipe_for("densenet121")
    # Sec. 4.2: ImageNet batch 256, 90 epochs, /10 at epochs 30 and 60
    assert (r.batch_size, r.epochs) == (256, 90)
    assert [m * 90 for m in r.schedule.milestones] == pytest.approx([30, 60])


def test_fractalnet():
    r = recipe_for("fractalnet20")
    # Larsson et al. 2017, Sec. 4: batch 100, lr 0.02, 400 epochs, momentum 0.9; local drop-path 15%, global 50%
    assert (r.batch_size, r.lr, r.epochs, r.momentum) == (100, 0.02, 400, 0.9)
    assert (r.drop_path, r.global_drop_path) == (0.15, 0.5)
    # "/10 each time the remaining epochs halve": at 200, 300, 350, 375
    assert [m * 400 for m in r.schedule.milestones] == [200, 300, 350, 375]


def test_squeezenet():
    for name in ("squeezenet1_0", "squeezenet1_1"):
        r = recipe_for(name)
        # papers.md Sec. 16 (the authors' solver): batch 512, lr 0.04, poly power 1, 170k iterations, momentum 0.9,
        # wd 2e-4; the paper's Sec. 3.3: dropout 50% after fire9
        assert (r.batch_size, r.lr, r.momentum, r.weight_decay, r.dropout) == (512, 0.04, 0.9, 2e-4, 0.5)
        assert (r.schedule.kind, r.schedule.power) == ("poly", 1.0)
        assert r.epochs == round(170_000 * 512 / 1_281_167)


def test_where_the_lecture_differs_notes_say_so():
    lecture = {n for n in MODELS if any("lecture" in note for note in recipe_for(n).notes)}
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "alexnet"} <= lecture


def test_list_recipes():
    listed = list_recipes()
    keys = [(f, d) for f, d, _ in listed]
    assert keys == sorted(set(keys))
    assert set(keys) == {(model_card(n).family, model_card(n).dataset) for n in MODELS}
    assert all(r.name == "paper" and (r.family, r.dataset) == k for k, (*_, r) in zip(keys, listed))
    assert all(r.name == "fast" for _, _, r in list_recipes("fast"))
    with pytest.raises(ValueError, match="'paper', 'fast'"):
        list_recipes("slow")


def test_unknown_model_and_kind():
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        recipe_for("resnet21")
    with pytest.raises(ValueError, match="unknown recipe kind 'quick'.*'paper', 'fast'"):
        recipe_for("resnet20", "quick")


# ----------------------------------------------------------------------------------------------------------------
# Schedules

def test_schedule_kinds():
    per_epoch, epochs = 10, 20
    total = per_epoch * epochs
    assert Schedule().factor(123, total, per_epoch) == 1.0
    step = Schedule("step", every=2, gamma=0.94)
    assert [step.factor(s, total, per_epoch) for s in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, .94, .94, .94**2])
    exp = Schedule("exponential", every=2, gamma=0.94)
    assert exp.factor(10, total, per_epoch) == pytest.approx(0.94 ** 0.5)
    poly = Schedule("poly", power=1.0)
    assert [poly.factor(s, total, per_epoch) for s in (0, 100, 200)] == [1.0, 0.5, 0.0]
    cos = Schedule("cosine")
    assert [cos.factor(s, total, per_epoch) for s in (0, 100, 200)] == pytest.approx([1.0, 0.5, 0.0])
    multi = Schedule("multistep", milestones=(0.25, 0.5), factors=(0.4, 0.02))
    assert [multi.factor(s, total, per_epoch) for s in (49, 50, 99, 100)] == [1.0, 0.4, 0.4, 0.02]
    plateau = Schedule("plateau", gamma=0.1, max_reductions=2)
    assert [plateau.factor(0, total, per_epoch, r) for r in (0, 1, 2, 3)] == pytest.approx([1, .1, .01, .01])


def test_plateau_matches_torch():
    values = [0.9, 0.8, 0.75, 0.75, 0.7495, 0.76, 0.75, 0.75, 0.6, 0.6, 0.6, 0.6, 0.6, 0.59, 0.6, 0.6, 0.6, 0.6,
              0.6, 0.6, 0.6, 0.6]
    schedule = Schedule("plateau", patience=2, threshold=1e-3, gamma=0.1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2,
                                                               threshold=1e-3, threshold_mode="abs")
    for i, value in enumerate(values):
        torch_plateau.step(value)
        cuts = schedule.plateau_reductions(values[:i + 1])
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 ** cuts), i
    assert schedule.plateau_reductions(values) >= 3
    capped = dataclasses.replace(schedule, max_reductions=1)
    assert capped.plateau_reductions(values) == 1


def test_schedule_validation():
    with pytest.raises(ValueError, match="kind must be one of"):
        Schedule("linear")
    with pytest.raises(ValueError, match="at least one milestone"):
        Schedule("multistep")
    with pytest.raises(ValueError, match=r"milestones must be in \(0, 1\)"):
        Schedule("multistep", milestones=(32_000, 48_000))
    with pytest.raises(ValueError, match="must increase"):
        Schedule("multistep", milestones=(0.75, 0.5))
    with pytest.raises(ValueError, match="one factor per milestone"):
        Schedule("multistep", milestones=(0.5,), factors=(0.1, 0.01))
    with pytest.raises(ValueError, match="apply to kind 'multistep' only"):
        Schedule("cosine", milestones=(0.5,))
    with pytest.raises(ValueError, match="every .* is required"):
        Schedule("step")
    with pytest.raises(ValueError, match="monitor must be one of"):
        Schedule("plateau", monitor="val_loss")


# ----------------------------------------------------------------------------------------------------------------
# Overrides, validation, dicts

def test_override():
    r = recipe_for("resnet20")
    changed = r.override(lr=0.05, batch_size=64, epochs=10, nesterov=True)
    assert (changed.lr, changed.batch_size, changed.epochs, changed.nesterov) == (0.05, 64, 10, True)
    assert changed.schedule == r.schedule and r.lr == 0.1  # a copy; milestones stay fractions of the new run
    assert r.override(schedule={"milestones": (0.3, 0.6, 0.8), "gamma": 0.2}).schedule.gamma == 0.2
    assert r.override(schedule={"kind": "cosine"}).schedule == Schedule("cosine")
    assert r.override(augmentation=["flip"]).augmentation == ("flip",)
    assert isinstance(r.override(lr=1).lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lr = 1.0


@pytest.mark.parametrize("changes, message", [
    ({"lrr": 0.1}, r"no field 'lrr' \(did you mean 'lr'\?\); valid fields: name, family"),
    ({"lr": 0}, r"lr must be in \(0, inf\], got 0"),
    ({"lr": -0.1}, "lr must be in"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": "0.1"}, "lr must be a finite number"),
    ({"batch_size": 0}, "batch_size must be an int >= 1, got 0"),
    ({"batch_size": 64.0}, "batch_size must be an int >= 1"),
    ({"epochs": True}, "epochs must be an int >= 1"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
    ({"momentum": -0.1}, "momentum must be in"),
    ({"weight_decay": -1e-4}, "weight_decay must be in"),
    ({"momentum": 0.0, "nesterov": True}, "nesterov needs optimizer 'sgd' with momentum > 0"),
    ({"nesterov": 1}, "nesterov must be True or False"),
    ({"optimizer": "adam"}, "optimizer must be one of 'sgd', 'rmsprop'"),
    ({"optimizer": "rmsprop"}, "rmsprop_decay and rmsprop_eps must be set"),
    ({"rmsprop_decay": 0.9}, "apply to optimizer 'rmsprop' only"),
    ({"name": "slow"}, "name must be one of 'paper', 'fast'"),
    ({"dataset": "svhn"}, "dataset must be one of"),
    ({"augmentation": ("flip", "cutout")}, "augmentation must be one of"),
    ({"augmentation": ("flip", "flip")}, "lists a name twice"),
    ({"augmentation": "flip"}, "augmentation must be a tuple of strings"),
    ({"warmup_iters": 400}, "warmup_lr must be set"),
    ({"warmup_lr": 0.01}, "warmup_lr needs warmup_iters > 0"),
    ({"dropout": 1.0}, "dropout must be in"),
    ({"survival_prob": 0.0}, "survival_prob must be in"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"aux_loss_weight": -0.3}, "aux_loss_weight must be in"),
    ({"assumed": ("batch",)}, "assumed names 'batch'"),
    ({"schedule": {"gama": 0.2}}, r"Schedule has no field 'gama' \(did you mean 'gamma'\?\)"),
    ({"schedule": "cosine"}, "schedule must be a Schedule or a dict"),
])
def test_override_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        recipe_for("resnet20").override(**changes)


def test_rmsprop_override():
    r = recipe_for("resnet20").override(optimizer="rmsprop", rmsprop_decay=0.9, rmsprop_eps=1.0, nesterov=False)
    assert r.optimizer == "rmsprop"
    back = recipe_for("inception_v4").override(optimizer="sgd", rmsprop_decay=None, rmsprop_eps=None)
    assert back.optimizer == "sgd"


@pytest.mark.parametrize("name", MODELS)
def test_dict_round_trip(name):
    for kind in ("paper", "fast"):
        recipe = recipe_for(name, kind)
        data = recipe.to_dict()
        assert isinstance(data["schedule"], dict) and isinstance(data["augmentation"], list)
        text = json.dumps(data)  # plain JSON, as checkpoints store it
        assert Recipe.from_dict(json.loads(text)) == recipe


def test_from_dict_errors():
    data = recipe_for("resnet20").to_dict()
    with pytest.raises(ValueError, match="no field 'colour'"):
        Recipe.from_dict({**data, "colour": "red"})
    del data["lr"]
    with pytest.raises(ValueError, match="lacks lr"):
        Recipe.from_dict(data)
    with pytest.raises(ValueError, match="must be a dict"):
        Recipe.from_dict([("lr", 0.1)])


def test_lr_at_is_the_reference_schedule():
    r = recipe_for("alexnet")
    assert r.lr_at(0, 100) == 0.01 and r.lr_at(5000, 100, reductions=1) == pytest.approx(0.001)
    assert r.lr_at(5000, 100, reductions=9) == pytest.approx(0.01 * 0.1 ** 3)  # at most three cuts
    sq = recipe_for("squeezenet1_0")
    total = sq.epochs * 100
    assert sq.lr_at(total // 2, 100) == pytest.approx(0.02) and math.isclose(sq.lr_at(total, 100), 0.0)
    with pytest.raises(ValueError, match="steps_per_epoch must be an int >= 1"):
        r.lr_at(0, 0)
