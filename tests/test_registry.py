"""The registry's contract: names, patterns, option validation."""

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo import ModelCard, Paper, create_model, list_models, model_card, register_model
from cnnzoo.registry import _MODELS


def test_public_api_is_reexported():
    for name in ("create_model", "list_models", "model_card", "register_model", "count_params"):
        assert callable(getattr(cnnzoo, name))


def test_list_models_is_sorted_and_filters():
    names = list_models()
    assert len(set(names)) == len(names)
    assert names.index("vgg11") < names.index("vgg19") and names.index("resnet18") < names.index("resnet101")
    assert list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert all(model_card(n).dataset == "imagenet" for n in list_models(dataset="imagenet"))
    assert list_models("no-such-model*") == []


def test_list_models_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenett'.*cifar10"):
        list_models(dataset="imagenett")


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown model 'vgg17'; did you mean .*vgg16"):
        create_model("vgg17")
    with pytest.raises(ValueError, match="unknown model"):
        model_card("vgg17")


def test_names_are_case_insensitive():
    assert model_card("VGG16").name == "vgg16"


@pytest.mark.parametrize("option", ["num_classes", "in_chans"])
def test_counts_must_be_positive_ints(option):
    with pytest.raises(ValueError, match=rf"{option} must be at least 1, got 0"):
        create_model("vgg11", **{option: 0})
    with pytest.raises(TypeError, match=rf"{option} must be a positive int, got str"):
        create_model("vgg11", **{option: "10"})
    with pytest.raises(TypeError, match=rf"{option} must be a positive int, got bool"):
        create_model("vgg11", **{option: True})


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"vgg16 has no option 'dropuot'; its options are: dropout"):
        create_model("vgg16", dropuot=0.5)


def test_structural_arguments_are_not_options():
    with pytest.raises(TypeError, match="has no option 'batch_norm'"):
        create_model("vgg16", batch_norm=True)


def test_option_type_and_value_are_checked():
    with pytest.raises(TypeError, match="option dropout must be float, got str"):
        create_model("vgg16", dropout="0.5")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        create_model("vgg16", dropout=1.5)


def test_register_twice_is_an_error_and_builders_need_the_common_options():
    paper = Paper(authors="A. Author", title="T", venue="V", year=2000, url="http://example.org")
    card = ModelCard(family="test", paper=paper, dataset="mnist", input_size=(1, 8, 8))

    def builder(num_classes: int = 10, in_chans: int = 1):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, num_classes))

    try:
        register_model("_tiny", card)(builder)
        with pytest.raises(KeyError, match="registered twice"):
            register_model("_tiny", card)(builder)
        model = create_model("_tiny", num_classes=3)
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
        with pytest.raises(ValueError, match=r"_tiny: input 7x8 is too small; it accepts only 8x8"):
            model(torch.randn(2, 1, 7, 8))
        with pytest.raises(ValueError, match=r"_tiny: input 8x9 is too large .*; it accepts only 8x8"):
            model(torch.randn(2, 1, 8, 9))
        with pytest.raises(TypeError, match="must accept in_chans"):
            register_model("_tiny2", card)(lambda num_classes=10: nn.Identity())
    finally:
        _MODELS.pop("_tiny", None)
        _MODELS.pop("_tiny2", None)


def test_card_rejects_unknown_dataset():
    paper = Paper(authors="A. Author", title="T", venue="V", year=2000, url="http://example.org")
    with pytest.raises(ValueError, match="unknown dataset"):
        ModelCard(family="test", paper=paper, dataset="svhn2", input_size=(1, 8, 8))


def test_count_params_counts_shared_tensors_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert cnnzoo.count_params(model) == 4 * 4 + 4
    frozen = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    frozen[0].requires_grad_(False)
    assert cnnzoo.count_params(frozen, trainable_only=True) == 3 + 1


def test_input_check_survives_state_dict_round_trip_and_train_eval():
    model = create_model("vgg11")
    model.load_state_dict(model.state_dict())
    model.train()
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 20, 20))
