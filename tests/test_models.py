"""Generic tests over every registered model: a model added to the registry is covered without new code."""

import pytest
import torch
import torchvision

from cnnzoo import count_params, create_model, list_models, model_card
from cnnzoo.analysis.counting import meta_model
from cnnzoo.checks import input_range
from cnnzoo.registry import model_options

ALL = list_models()
WITH_PARAMS = [n for n in ALL if model_card(n).params is not None]
TWINS = [n for n in ALL if model_card(n).torchvision is not None]


def _input(card, batch=2, channels=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    c, h, w = card.input_size
    return torch.randn(batch, channels or c, h, w, generator=generator)


def _meta(name, **kwargs):
    return meta_model(name, **kwargs)  # initialisers skipped: their meta kernels are slow Python


def test_registry_is_not_empty():
    assert len(ALL) >= 10


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_at_native_size(name):
    torch.manual_seed(0)
    card = model_card(name)
    model = create_model(name)
    model.train()
    batch = 2 if card.input_size[1] < 128 else 1  # one ImageNet-sized image keeps the suite fast; BN still sees 7x7+
    out = model(_input(card, batch=batch))
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (batch, card.num_classes)
    assert torch.isfinite(logits).all()
    sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
    missing = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    model.eval()  # dropout and friends are off: evaluation is a function of the input
    x = _input(card, batch=1, seed=1)
    with torch.no_grad():
        first = model(x)
        assert isinstance(first, torch.Tensor) and torch.equal(first, model(x))


@pytest.mark.parametrize("name", ALL)
def test_num_classes_and_in_chans_options(name):
    card = model_card(name)
    channels = card.input_size[0] + 1
    model = _meta(name, num_classes=7, in_chans=channels).eval()
    out = model(torch.empty(2, channels, *card.input_size[1:], device="meta"))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_params_match_paper(name):
    card = model_card(name)
    computed = count_params(_meta(name), exclude_norm=card.params_exclude_norm)
    assert abs(computed - card.params) <= card.params_rounding / 2, (
        f"{name}: computed {computed:,}, paper {card.params:,.0f} ({card.params_source}), "
        f"rounded to {card.params_rounding:g}" + (", normalisation excluded" if card.params_exclude_norm else "")
    )


@pytest.mark.filterwarnings("ignore:The default weight initialization of GoogleNet:FutureWarning")
@pytest.mark.parametrize("name", TWINS)
def test_torchvision_twin_loads_strictly_and_agrees(name):
    card = model_card(name)
    torch.manual_seed(0)
    reference = getattr(torchvision.models, card.torchvision)(weights=None, num_classes=card.num_classes).eval()
    ours = _meta(name).eval()  # built without initialising: every tensor comes from torchvision's state_dict
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert not any(t.is_meta for t in [*ours.parameters(), *ours.buffers()])
    x = _input(card, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_card_is_complete(name):
    card = model_card(name)
    assert card.name == name and card.family
    assert card.paper.title and card.paper.authors and 1980 < card.paper.year < 2030
    assert card.url.startswith("http")
    assert card.num_classes >= 1 and all(s >= 1 for s in card.input_size)
    if card.params is not None:
        assert card.params_source and card.params_rounding >= 1
    if card.top1_err is not None or card.top5_err is not None:
        assert card.err_source
    if card.torchvision is not None:
        assert hasattr(torchvision.models, card.torchvision)
    assert all(isinstance(d, str) and d for d in card.deviations)


@pytest.mark.parametrize("name", ALL)
def test_too_small_input_names_the_smallest_that_works(name):
    card = model_card(name)
    model = _meta(name).eval()
    smallest, _ = input_range(model, axis=0)
    if smallest == 1:
        pytest.skip(f"{name} accepts inputs down to 1 pixel")
    c, h, w = card.input_size
    with pytest.raises(ValueError, match=rf"{name}: input {smallest - 1}x{w} is too small.* {smallest}x"):
        model(torch.randn(1, c, smallest - 1, w))  # a real tensor: the check runs before any layer
    assert model(torch.empty(1, c, smallest, w, device="meta")).shape == (1, card.num_classes)


@pytest.mark.parametrize("name", ALL)
def test_wrong_channels_and_rank_are_clear_errors(name):
    card = model_card(name)
    c, h, w = card.input_size
    model = _meta(name).eval()
    with pytest.raises(ValueError, match=rf"built for {c} input channel"):
        model(torch.randn(1, c + 2, h, w))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.randn(c, h, w))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, c, h, w, dtype=torch.uint8))


@pytest.mark.parametrize("name", ALL)
def test_options_reject_wrong_types(name):
    for option in model_options(name):
        with pytest.raises(TypeError, match=rf"option {option} must be"):
            create_model(name, **{option: object()})
