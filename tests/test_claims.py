"""`cnnzoo.analysis.claims`: every lecture figure recomputed from the real models, checked against hand arithmetic."""

import pytest

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
