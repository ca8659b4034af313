"""LeNet-5 against LeCun, Bottou, Bengio & Haffner 1998: every expected number below is the paper's."""

import pytest
import torch
from torch import nn

import cnnzoo
from cnnzoo import count_params, create_model, model_card
from cnnzoo.analysis.compare import weight_depth
from cnnzoo.models.lenet import EuclideanRBF, PartiallyConnectedConv2d, ScaledTanh, Subsampling, map_loss

# Sec. II.B and Table I: the S2 maps each C3 map takes its inputs from. Maps 0-5 take contiguous triples, 6-11
# contiguous quadruples (both wrapping around), 12-14 the discontinuous quadruples, 15 all six.
PAPER_C3_INPUTS = [
    {0, 1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4, 5}, {4, 5, 0}, {5, 0, 1},
    {0, 1, 2, 3}, {1, 2, 3, 4}, {2, 3, 4, 5}, {3, 4, 5, 0}, {4, 5, 0, 1}, {5, 0, 1, 2},
    {0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5},
    {0, 1, 2, 3, 4, 5},
]

# Sec. II.B: trainable parameters per layer, and the total.
PAPER_LAYER_PARAMS = {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48_120, "f6": 10_164}
PAPER_TOTAL_PARAMS = 60_000


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread


@pytest.fixture
def lenet():
    torch.manual_seed(0)
    return create_model("lenet5")


def test_c3_connections_follow_table_1(lenet):
    # Probe the layer itself: change one S2 map at a time and see which C3 maps respond.
    c3 = lenet.c3
    base = c3(torch.zeros(1, 6, 14, 14))
    seen_by = [set() for _ in range(16)]
    for s2_map in range(6):
        x = torch.zeros(1, 6, 14, 14)
        x[0, s2_map] = torch.randn(14, 14)
        changed = (c3(x) - base).abs().flatten(2).amax(dim=2)[0] > 0
        for c3_map in changed.nonzero().flatten().tolist():
            seen_by[c3_map].add(s2_map)
    assert seen_by == PAPER_C3_INPUTS


def test_c3_table_shape_matches_paper_text():
    # "The first six ... every contiguous subset of three ... The next six ... contiguous subset of four ..."
    sizes = [len(s) for s in PAPER_C3_INPUTS]
    assert sizes == [3] * 6 + [4] * 9 + [6]
    assert len({frozenset(s) for s in PAPER_C3_INPUTS}) == 16


@pytest.mark.parametrize("layer, expected", list(PAPER_LAYER_PARAMS.items()))
def test_layer_params_match_paper(lenet, layer, expected):
    assert count_params(getattr(lenet, layer)) == expected


def test_total_params_match_paper(lenet):
    assert count_params(lenet) == PAPER_TOTAL_PARAMS
    assert count_params(lenet, trainable_only=True) == PAPER_TOTAL_PARAMS
    assert model_card("lenet5").params == PAPER_TOTAL_PARAMS


def test_c3_has_only_connected_parameters(lenet):
    partial = lenet.c3[0]
    assert isinstance(partial, PartiallyConnectedConv2d)
    for conv, inputs in zip(partial.maps, PAPER_C3_INPUTS):
        assert conv.weight.shape == (1, len(inputs), 5, 5)


def test_rbf_codes_are_fixed_plus_minus_one_buffers(lenet):
    rbf = lenet.output
    assert isinstance(rbf, EuclideanRBF)
    assert count_params(rbf) == 0
    buffers = dict(lenet.named_buffers())
    assert "output.codes" in buffers
    codes = buffers["output.codes"]
    assert codes.shape == (10, 7 * 12)
    assert not codes.requires_grad
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(c.tolist()) for c in codes}) == 10  # one distinct code per digit


def test_forward_shape_and_finite(lenet):
    out = lenet(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_other_class_counts_and_channels():
    digits = create_model("lenet5").output.codes
    fewer = create_model("lenet5", num_classes=4)
    assert torch.equal(fewer.output.codes, digits[:4])
    more_a = create_model("lenet5", num_classes=15, in_chans=3)
    more_b = create_model("lenet5", num_classes=15, in_chans=3)
    assert torch.equal(more_a.output.codes[:10], digits)
    assert torch.equal(more_a.output.codes, more_b.output.codes)  # extra codes are seeded, not drawn anew
    assert set(more_a.output.codes.unique().tolist()) == {-1.0, 1.0}
    assert more_a.c1[0].in_channels == 3
    out = more_a(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 15) and torch.isfinite(out).all()


def test_output_is_negated_distance_to_codes(lenet):
    # Sec. II.B: y_i = sum_j (x_j - w_ij)^2 over F6's state x; forward returns -y.
    captured = {}
    lenet.f6.register_forward_hook(lambda module, args, out: captured.update(x=out))
    logits = lenet(torch.randn(3, 1, 32, 32))
    x, codes = captured["x"], lenet.output.codes
    expected = -((x[:, None, :] - codes[None]) ** 2).sum(dim=-1)
    torch.testing.assert_close(logits, expected)


def test_predicted_class_is_nearest_code(lenet):
    codes = lenet.output.codes
    penalties = lenet.output(codes)  # F6 states equal to each code in turn
    assert torch.equal(penalties.diagonal(), torch.zeros(10))
    assert torch.equal(penalties.argmin(dim=1), torch.arange(10))
    assert torch.equal((-penalties).argmax(dim=1), torch.arange(10))
    # A state near a code, not on it, is still classed by that code.
    noisy = codes + 0.2 * torch.randn_like(codes)
    assert torch.equal(lenet.output(noisy).argmin(dim=1), torch.arange(10))


def test_rbf_output_is_the_fifth_weight_layer():
    # Sec. II.B: seven layers, C1-S2-C3-S4-C5-F6-output; C1, C3, C5, F6 and the RBF output hold weights (the RBF's
    # are fixed). Each RBF unit takes 84 multiply-adds against its code: counted like lenet5_modern's linear output.
    assert weight_depth("lenet5") == weight_depth("lenet5_modern") == 5
    (rbf,) = [r for r in cnnzoo.profile("lenet5", batch_size=2).layers if r.type == "EuclideanRBF"]
    (linear,) = [r for r in cnnzoo.profile("lenet5_modern", batch_size=2).layers if r.name == "output"]
    assert rbf.macs == linear.macs == 2 * 84 * 10 and rbf.output_shape == (2, 10)


def test_squashing_function():
    # Appendix A: f(a) = A tanh(S a), A = 1.7159, S = 2/3, chosen so that f(1) = 1 and f(-1) = -1.
    f = ScaledTanh()
    values = f(torch.tensor([1.0, -1.0, 0.0, 100.0]))
    torch.testing.assert_close(values[:3], torch.tensor([1.0, -1.0, 0.0]), atol=1e-3, rtol=0)
    assert values[3].item() == pytest.approx(1.7159, abs=1e-4)  # the asymptote is the amplitude A


def test_every_layer_up_to_f6_squashes(lenet):
    for name in PAPER_LAYER_PARAMS:
        assert isinstance(getattr(lenet, name)[-1], ScaledTanh), name


def test_subsampling_is_scaled_window_sum():
    # Sec. II.B: the four inputs are added, multiplied by a trainable coefficient, and a trainable bias is added.
    layer = Subsampling(2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, -2.0]))
        layer.bias.copy_(torch.tensor([1.0, 0.25]))
    x = torch.arange(32.0).view(1, 2, 4, 4)
    out = layer(x)
    assert out.shape == (1, 2, 2, 2)
    first_window = x[0, 0, :2, :2].sum()
    last_window = x[0, 1, 2:, 2:].sum()
    assert out[0, 0, 0, 0].item() == pytest.approx(0.5 * first_window.item() + 1.0)
    assert out[0, 1, 1, 1].item() == pytest.approx(-2.0 * last_window.item() + 0.25)


def test_initialisation_within_paper_range(lenet):
    # Appendix A: uniform in +-2.4/F_i, F_i the fan-in of the unit (5x5 windows; S units read four inputs).
    def within(tensors, fan_in):
        return all(t.abs().max().item() <= 2.4 / fan_in for t in tensors)

    assert within(lenet.c1[0].parameters(), 25)
    assert within(lenet.s2[0].parameters(), 4)
    for conv, inputs in zip(lenet.c3[0].maps, PAPER_C3_INPUTS):
        assert within(conv.parameters(), 25 * len(inputs))
    assert within(lenet.s4[0].parameters(), 4)
    assert within(lenet.c5[0].parameters(), 25 * 16)
    assert within(lenet.f6[1].parameters(), 120)
    assert within(create_model("lenet5", in_chans=3).c1[0].parameters(), 75)


def test_map_loss_is_eq_9():
    # E = y_D + log(exp(-j) + sum_i exp(-y_i)), with penalties y = -logits.
    y = torch.tensor([[3.0, 1.0, 4.0], [0.5, 2.0, 6.0]])
    target = torch.tensor([1, 2])
    j = 2.0
    by_hand = [
        y[p, target[p]] + torch.log(torch.exp(torch.tensor(-j)) + torch.exp(-y[p]).sum()) for p in range(2)
    ]
    assert map_loss(-y, target, j=j).item() == pytest.approx(torch.stack(by_hand).mean().item())
    with pytest.raises(ValueError):
        map_loss(-y, target, j=0.0)


def test_lenet5_trains_on_a_tiny_batch():
    torch.manual_seed(0)
    model = create_model("lenet5")
    codes_before = model.output.codes.clone()
    x, target = torch.randn(10, 1, 32, 32), torch.arange(10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = map_loss(model(x), target, j=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:]))
    assert torch.equal(model.output.codes, codes_before)  # the codes are not trained


def test_modern_variant_has_max_pooling_and_full_c3():
    torch.manual_seed(0)
    model = create_model("lenet5_modern")
    modules = list(model.modules())
    assert sum(isinstance(m, nn.MaxPool2d) for m in modules) == 2
    assert not any(isinstance(m, (PartiallyConnectedConv2d, Subsampling, EuclideanRBF, ScaledTanh)) for m in modules)
    assert any(isinstance(m, nn.ReLU) for m in modules)
    c3 = model.c3[0]
    assert isinstance(c3, nn.Conv2d) and c3.groups == 1 and (c3.in_channels, c3.out_channels) == (6, 16)
    assert isinstance(model.output, nn.Linear) and model.output.out_features == 10
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_cards():
    card = model_card("lenet5")
    assert (card.dataset, card.input_size, card.num_classes) == ("mnist", (1, 32, 32), 10)
    assert card.top1_err == 0.95 and card.params_rounding == 1
    modern = model_card("lenet5_modern")
    assert modern.params is None and modern.paper == card.paper
    assert len(modern.deviations) >= 4
