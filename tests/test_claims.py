"""`cnnzoo.analysis.claims`: every lecture figure recomputed from the real models, checked against hand arithmetic."""

import dataclasses

import pytest
import torch

import cnnzoo
from cnnzoo.analysis import claims as claims_module
from cnnzoo.analysis.claims import VERDICTS, Claim, claims
from cnnzoo.models import alexnet


@pytest.fixture(scope="module")
def rows() -> list[Claim]:
    return claims()


def _row(rows, start: str) -> Claim:
    matches = [r for r in rows if r.claim.startswith(start)]
    assert len(matches) == 1, f"{start!r}: {len(matches)} rows"
    return matches[0]


def test_rows_are_complete(rows):
    assert len(rows) >= 15
    for r in rows:
        assert r.claim and r.lecture and r.computed, r
        assert r.verdict in VERDICTS, r
        if r.verdict != "agrees":
            assert r.explanation, f"{r.claim!r} is {r.verdict} without an explanation"
        for value in (r.lecture_value, r.computed_value):
            assert value is None or isinstance(value, float)


def test_alexnet_conv1(rows):
    params = _row(rows, "AlexNet CONV1 parameters")
    assert params.computed_value == 11 * 11 * 3 * 96 == 34_848
    assert f"{34_848 + 96:,}" in params.computed  # 34,944 with biases
    assert _row(rows, "AlexNet CONV1 (96").computed == "55x55x96"
    assert _row(rows, "The paper's 224x224").computed_value == (224 - 11) / 4 + 1 == 54.25
    assert _row(rows, "AlexNet POOL1").computed_value == 0


def test_inception_depths_and_macs(rows):
    depth = _row(rows, "Inception on 28x28x256")
    assert depth.computed == f"{128 + 192 + 96 + 256} vs {128 + 192 + 96 + 64}" == "672 vs 480"
    hw = 28 * 28
    naive = hw * (128 * 256 + 192 * 256 * 9 + 96 * 256 * 25)
    bottleneck = hw * (128 * 256 + 64 * 256 + 192 * 64 * 9 + 64 * 256 + 96 * 64 * 25 + 64 * 256)
    assert _row(rows, "Naive inception").computed_value == naive  # 854M: the lecture agrees
    row = _row(rows, "Inception module with 1x1")
    assert row.computed_value == bottleneck and row.verdict == "wrong"  # 271M, not the lecture's 358M


@pytest.mark.parametrize("c", [5, 64])
def test_three_3x3_vs_one_7x7(c):
    rf, params = claims_module._stack_vs_single(channels=c, size=16)
    assert rf.computed_value == 7
    assert f"{3 * 9 * c * c:,} vs {49 * c * c:,} at C={c}" in params.computed


def test_googlenet_differs_with_ratio(rows):
    row = _row(rows, "GoogLeNet parameters")
    assert row.verdict == "differs" and "8.7x" in row.computed
    assert _row(rows, "GoogLeNet depth").computed_value == 22


def test_rows_are_computed_not_typed(monkeypatch):
    """Narrow AlexNet's CONV1 to 64 filters: the CONV1 rows follow the model."""
    layers = list(alexnet.LAYERS_2012)
    layers[0] = layers[0]._replace(out_channels=64)
    monkeypatch.setattr(alexnet, "LAYERS_2012", layers)
    claims_module._profile.cache_clear()
    try:
        rows = claims_module._alexnet()
    finally:
        claims_module._profile.cache_clear()
    assert _row(rows, "AlexNet CONV1 (96").computed == "55x55x64"
    assert _row(rows, "AlexNet CONV1 parameters").computed_value == 11 * 11 * 3 * 64
    assert _row(rows, "AlexNet POOL1").computed.startswith("27x27x64")


def _forward_bytes(name: str, batch: int = 1) -> tuple[int, int]:
    """(weights, activations) of one forward pass: the model's own tensors counted from the built model, the
    activations from the profiler."""
    options = {"aux_logits": False} if name == "googlenet" else {}
    with torch.device("meta"):
        model = cnnzoo.create_model(name, **options)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return weights, cnnzoo.profile(model, input_size=cnnzoo.model_card(name).input_size,
                                   batch_size=batch).activation_bytes


def test_highest_memory_counts_weights_and_activations(rows):
    row = _row(rows, "Complexity comparison: highest memory")
    forward = {n: _forward_bytes(n) for n in claims_module.COMPLEXITY_NETS}
    total = {n: w + a for n, (w, a) in forward.items()}
    assert forward["vgg16"][0] == 138_357_544 * 4  # VGG-16's weights: the lecture's 138M parameters, float32
    assert max(total, key=total.get) == "vgg16" and row.verdict == "agrees"
    assert row.computed_value == total["vgg16"]
    assert max(forward, key=lambda n: forward[n][1]) == "resnet152"  # by activations alone
    # every net's figures as shown add up: weights + activations = total, in MiB to 0.1
    for name, (w, a) in forward.items():
        w, a = round(w / 2**20, 1), round(a / 2**20, 1)
        assert f"{name}{':' if name == 'vgg16' else ''} " in row.computed
        assert f"{w:,.1f} + {a:,.1f} = {w + a:,.1f}" in row.computed
    # the batch from which resnet152's forward pass needs more than vgg16's, checked by profiling both there
    batch = next(b for b in range(1, 100) if sum(_forward_bytes("resnet152", b)) > sum(_forward_bytes("vgg16", b)))
    assert batch > 1 and f"from batch {batch} on resnet152" in row.explanation


def test_highest_memory_verdict_follows_the_models():
    """Make VGG-16's weights light: the verdict turns, and says which net needs the most."""
    profs = {n: claims_module._complexity_profile(n) for n in claims_module.COMPLEXITY_NETS}
    profs["vgg16"] = dataclasses.replace(profs["vgg16"], param_bytes=0)
    row = claims_module._highest_memory(profs)
    assert row.verdict == "differs" and row.computed.startswith("resnet152: ")
    assert row.explanation == "resnet152, not vgg16, needs the most memory for a forward pass"
