"""Deep Compression's training side: magnitude pruning masks, masks held through SGD, 1-D k-means, shared weights,
centroid fine-tuning, and the trainer running with masks or codebooks, stopped and resumed exactly."""

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.compress import quantize
from cnnzoo.compress.prune import MaskedTraining, apply_masks, magnitude_masks, prunable_weights
from cnnzoo.compress.quantize import Shared, SharedTraining, kmeans_1d, share_weights, shared_from_state
from cnnzoo.train.checkpoint import load_checkpoint
from cnnzoo.train.trainer import Start, TrainConfig, train

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")


def _lenet(seed=0):
    torch.manual_seed(seed)
    return create_model("lenet5_modern", num_classes=10)


# --- pruning ------------------------------------------------------------------------------------------------------
def test_masks_keep_the_density_of_largest_weights_per_layer():
    model = _lenet()
    densities = {"*.0.weight": 0.66, "*": 0.12}  # first matching key wins
    masks = magnitude_masks(model, densities)
    weights = prunable_weights(model)
    assert set(masks) == set(weights)
    for name, mask in masks.items():
        weight = weights[name][1].detach()
        density = 0.66 if name.endswith(".0.weight") else 0.12
        assert mask.dtype == torch.bool and mask.shape == weight.shape
        assert int(mask.sum()) == max(1, round(density * weight.numel()))
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()  # the largest magnitudes are kept


def test_masks_break_ties_by_index_and_iterate_within_the_previous_mask():
    layer = nn.Linear(4, 5, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.5)
    mask = magnitude_masks(layer, 0.25)["weight"]
    assert mask.flatten().tolist() == [True] * 5 + [False] * 15  # equal magnitudes: the lowest indices kept
    model = _lenet()
    first = magnitude_masks(model, 0.5)
    apply_masks(model, first)
    second = magnitude_masks(model, 0.2, previous=first)
    for name in first:
        assert not (second[name] & ~first[name]).any()  # pruned once, pruned for good
        assert int(second[name].sum()) == round(0.2 * second[name].numel())


@pytest.mark.parametrize("density, words", [(0.0, "in (0, 1]"), (1.5, "in (0, 1]"), (True, "in (0, 1]"),
                                            ({"nothing.*": 0.5}, "match no"), ({}, "empty")])
def test_bad_density_is_refused(density, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("]", r"\]")):
        magnitude_masks(_lenet(), density)


def test_pruned_weights_stay_zero_through_sgd_with_momentum_and_weight_decay():
    model = _lenet()
    masks = magnitude_masks(model, 0.3)
    hold = MaskedTraining(model, masks)  # zeroes the pruned weights and masks their gradients; no after_step here
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    torch.manual_seed(1)
    for _ in range(20):
        x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)  # exactly zero, by SGD alone
        assert not torch.equal(params[name][mask], before[name][mask])  # the survivors did train
    hold.remove()


# --- k-means and shared weights -----------------------------------------------------------------------------------
def _brute_lloyd(values, k, iterations):
    """Textbook Lloyd: every value against every centroid, empty clusters keep their centroid."""
    values = values.double()
    centroids = torch.linspace(float(values.min()), float(values.max()), k, dtype=torch.float64)
    for _ in range(iterations):
        labels = (values[:, None] - centroids[None, :]).abs().argmin(1)
        for j in range(k):
            if (labels == j).any():
                centroids[j] = values[labels == j].mean()
    return centroids.float()


@pytest.mark.parametrize("k", [1, 3, 15, 40])
def test_kmeans_matches_a_brute_force_lloyd(k):
    torch.manual_seed(k)
    values = torch.cat([torch.randn(300) * 0.05, torch.randn(40) * 0.3 + 0.5])
    centroids, labels = kmeans_1d(values, k, iterations=30)
    assert centroids.dtype == torch.float32 and labels.dtype == torch.int64 and centroids.shape == (k,)
    assert torch.allclose(centroids, _brute_lloyd(values, k, 30), atol=1e-6)
    assert torch.equal(labels, (values[:, None] - centroids[None, :]).abs().argmin(1))
    assert torch.all(centroids[1:] >= centroids[:-1])


def test_kmeans_on_many_values_stays_close_to_exact_lloyd(monkeypatch):
    torch.manual_seed(0)
    values = torch.randn(2 ** 20 + 5000) * 0.02  # above the exact limit: Lloyd runs on the histogram
    centroids, labels = kmeans_1d(values, 31)
    middles = (centroids[1:] + centroids[:-1]) / 2
    assert torch.equal(labels, torch.searchsorted(middles, values))  # labels exact for those centroids
    monkeypatch.setattr(quantize, "_EXACT_UP_TO", 2 ** 22)
    exact, _ = kmeans_1d(values, 31)
    cell = float(values.max() - values.min()) / 2 ** 20
    assert (centroids - exact).abs().max() <= 5 * cell  # the cells' rounding compounds a little over iterations
    assert (centroids - exact).abs().max() <= 1e-3 * (exact[1:] - exact[:-1]).min()


@pytest.mark.parametrize("values, k, words", [(torch.tensor([1.0, float("nan")]), 2, "NaN"),
                                              (torch.tensor([]), 2, "no values"),
                                              (torch.tensor([1, 2]), 2, "floating-point"),
                                              (torch.tensor([1.0, 2.0]), 0, "at least 1")])
def test_kmeans_refuses_bad_input(values, k, words):
    with pytest.raises(ValueError, match=words):
        kmeans_1d(values, k)


def test_share_weights_puts_every_weight_in_its_codebook_and_keeps_the_output():
    model = _lenet().eval()
    x = torch.randn(16, 1, 32, 32)
    masks = magnitude_masks(model, {"c1.*": 0.8, "*": 0.5})
    apply_masks(model, masks)
    pruned = model(x).detach()
    shared = share_weights(model, masks, {"conv": 8, "fc": 5})
    params = dict(model.named_parameters())
    assert set(shared) == set(masks)
    for name, entry in shared.items():
        assert entry.bits == (8 if entry.kind == "conv" else 5) and entry.codebook.shape == (2 ** entry.bits,)
        assert entry.codebook[0] == 0.0 and int(entry.labels.min()) >= 1
        assert torch.equal(params[name].detach(), entry.dense())
        assert torch.all(params[name][~masks[name]] == 0)
        assert torch.isin(params[name].detach(), entry.codebook).all()
    out = model(x).detach()
    assert (out - pruned).abs().max() < 0.05 * pruned.abs().max()
    rebuilt = shared_from_state({n: e.state() for n, e in shared.items()})
    assert all(torch.equal(rebuilt[n].dense(), shared[n].dense()) for n in shared)


def test_shared_refuses_a_codebook_without_its_filler_zero():
    with pytest.raises(ValueError, match="exactly 0.0"):
        Shared(codebook=torch.ones(4), labels=torch.ones(2, dtype=torch.int64),
               mask=torch.tensor([True, True]), kind="fc", bits=2)
    with pytest.raises(ValueError, match="the layer kinds are 'conv'"):
        share_weights(_lenet(), None, {"linear": 4})


def test_one_sgd_step_moves_each_centroid_by_the_summed_gradient():
    model = _lenet()
    masks = magnitude_masks(model, 0.5)
    shared = share_weights(model, masks, {"conv": 4, "fc": 3})
    hold = SharedTraining(model, shared)
    tied = hold.trained_weights()
    lr = 0.1
    optimizer = torch.optim.SGD([p for n, p in model.named_parameters() if n not in tied] + hold.parameters(), lr=lr)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    expected = {}
    for name, entry in shared.items():
        grad = params[name].grad[entry.mask]
        summed = torch.zeros(2 ** entry.bits).index_add_(0, entry.labels, grad)
        summed[0] = 0.0
        expected[name] = entry.codebook - lr * summed
    hold.after_backward()
    optimizer.step()
    hold.after_step()
    now = hold.shared()
    for name, entry in now.items():
        assert torch.allclose(entry.codebook, expected[name], atol=1e-7, rtol=0)
        assert entry.codebook[0] == 0.0
        assert torch.equal(params[name].detach(), entry.dense())  # every weight is still a codebook entry
        assert torch.equal(entry.labels, shared[name].labels)


# --- the trainer with masks and codebooks -------------------------------------------------------------------------
SMALL = dict(model="lenet5", data="fake", recipe="fast", epochs=2, batch_size=32, quiet=True, threads=1)


def _start(kind):
    model = create_model("lenet5", num_classes=10)
    masks = magnitude_masks(model, {"c1.*": 0.6, "*": 0.2})
    apply_masks(model, masks)
    if kind == "masks":
        return Start(state=model.state_dict(), masks=masks, source="test")
    shared = share_weights(model, masks, {"conv": 5, "fc": 4})
    return Start(state=model.state_dict(), shared=shared, source="test")


@pytest.mark.parametrize("kind", ["masks", "shared"])
def test_trainer_holds_masks_and_codebooks_and_resumes_exactly(tmp_path, kind):
    start = _start(kind)
    whole = train(TrainConfig(**SMALL, out=str(tmp_path / "whole")), start=start)
    assert whole.step == 32
    first = train(TrainConfig(**SMALL, out=str(tmp_path / "split"), max_steps=5), start=start)
    assert first.stopped == "max_steps"
    train(TrainConfig(**SMALL, out=str(tmp_path / "split"), resume=True))
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    state = a["model_state"]
    initial = start.state
    if kind == "masks":
        masks = a["compression"]["masks"]
        for name, mask in masks.items():
            assert torch.all(state[name][~mask] == 0) and not torch.equal(state[name], initial[name])
    else:
        shared = shared_from_state(a["compression"]["shared"])
        again = shared_from_state(b["compression"]["shared"])
        for name, entry in shared.items():
            assert torch.equal(state[name], entry.dense())  # the dense checkpoint is the quantised model
            assert torch.equal(entry.codebook, again[name].codebook)
            assert not torch.equal(entry.codebook, start.shared[name].codebook)  # the centroids trained
            assert torch.equal(entry.labels, start.shared[name].labels)


def test_trainer_refuses_a_start_for_a_resumed_run_and_weights_of_another_model(tmp_path):
    with pytest.raises(ValueError, match="start= is for a new run"):
        train(TrainConfig(**SMALL, out=str(tmp_path / "x"), resume=True), start=Start())
    other = create_model("lenet5_modern", num_classes=10).state_dict()
    with pytest.raises(ValueError, match="does not fit lenet5"):
        train(TrainConfig(**SMALL, out=str(tmp_path / "y")), start=Start(state=other))
