"""The fast inference path: batch norm folding, channels-last, bfloat16, and what they change in the answers."""

import importlib
import os
import warnings

import pytest
import torch
from torch import nn

from cnnzoo import create_model, list_models, model_card
from cnnzoo.deploy import OptimizedModel, bf16_support, fold_batchnorm, optimize
from cnnzoo.deploy.images import precision_drift, real_images
from conftest import HEAVY_MODELS

ALL = list_models()
# The nets that take seconds each (tests/conftest.py): checked against eager with CNNZOO_OPTIMIZE_ALL=1, left out
# of the suite, which must fit in 15 minutes on 2 cores; every family is covered by its other nets.
EVERY = os.environ.get("CNNZOO_OPTIMIZE_ALL") == "1"
IN_SUITE = [n if EVERY or n not in HEAVY_MODELS else
            pytest.param(n, marks=pytest.mark.skip(reason="seconds each on a CPU: CNNZOO_OPTIMIZE_ALL=1 checks it"))
            for n in ALL]
fast_module = importlib.import_module("cnnzoo.deploy.optimize")  # the attribute is the function


def _with_running_statistics(model: nn.Module, x: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """Batch norms as after training (freshly built ones are the identity, which would hide a wrong fold): scales
    and shifts away from 1 and 0, and running statistics either near the identity's or, given `x`, those of the
    activations of `x`."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            n = m.num_features
            if m.affine:
                m.weight.copy_(torch.rand(n, generator=generator) * 0.4 + 0.8)
                m.bias.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
            m.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
            m.momentum = 1.0  # a forward in training mode makes its batch statistics the running ones
        if x is not None:
            model.train()(x)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _native_input(name: str) -> torch.Tensor:
    """One image at the net's native size: the input check knows it fits without probing (probing costs more)."""
    return torch.randn(1, *model_card(name).input_size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", IN_SUITE)
def test_fast_path_agrees_with_eager(name):
    """Within 1e-4 of the logits' scale; or, for a net that amplifies rounding more than that, within twice the
    error float32 eager itself makes against float64 (the fast path may round differently, not worse)."""
    torch.manual_seed(0)
    x = _native_input(name)
    model = _with_running_statistics(create_model(name))
    with torch.no_grad():
        expected = model(x)
    if not torch.isfinite(expected).all():
        # preact_resnet1001: with batch norms near the identity, each of 333 units adds a branch as large as its
        # input and the logits overflow; statistics of real activations keep them finite, as training would
        model = _with_running_statistics(model, real_images(4, x.shape[-1], channels=x.shape[1]))
        with torch.no_grad():
            expected = model(x)
    assert torch.isfinite(expected).all()
    fast = optimize(model)
    got = fast(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    scale = float(expected.abs().max())
    difference = float((got - expected).abs().max())
    if difference > 1e-4 * scale:
        with torch.no_grad():
            exact = model.double()(x.double())
        eager_error = float((expected.double() - exact).abs().max())
        assert difference <= 2 * eager_error, f"{name}: {difference:.3g} vs eager's own {eager_error:.3g}"
    remaining = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = int(fast.notes[0].split()[4])
    # what the note says was folded is gone from the net (and, with fusion, what eval mode never runs: GoogLeNet's
    # auxiliary heads are not in the rewritten graph)
    assert remaining <= before - folded


@pytest.mark.parametrize("name", ["resnet18", "resnet50_v1_5", "vgg16_bn", "googlenet_bn", "resnet20", "resnet110_sd"])
def test_every_batch_norm_after_a_convolution_is_folded(name):
    fast = optimize(create_model(name).eval())
    left = [path for path, m in fast.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(".aux" in path for path in left), left  # GoogLeNet's auxiliary heads do not run in eval mode


def test_pre_activation_batch_norms_stay():
    """BN-ReLU-conv: a batch norm read by an activation has no convolution to fold into (He et al. 2016b)."""
    model = create_model("preact_resnet164").eval()
    fast = optimize(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    left = [m for m in fast.modules() if isinstance(m, nn.BatchNorm2d)]
    assert 0 < len(left) < len(bns)


class _Tiny(nn.Module):
    def __init__(self, groups=1, bias=False, affine=True):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(8, affine=affine)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


class _Shared(nn.Module):
    """The convolution's output feeds the batch norm and the sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


@pytest.mark.parametrize("groups,bias,affine", [(1, False, True), (2, True, True), (4, True, False)])
def test_fold_is_exact_on_a_small_net(groups, bias, affine):
    x = torch.randn(2, 4, 9, 9)
    model = _with_running_statistics(_Tiny(groups, bias, affine), x)
    with torch.no_grad():
        expected = model(x)
    assert fold_batchnorm(model) == 1
    assert isinstance(model.bn, nn.Identity) and model.conv.bias is not None
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_a_convolution_read_twice_is_not_folded():
    x = torch.randn(2, 3, 8, 8)
    model = _with_running_statistics(_Shared(), x)
    with torch.no_grad():
        expected = model(x)
    assert fold_batchnorm(model) == 0
    assert isinstance(model.bn, nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_the_original_model_is_left_as_it_was():
    model = create_model("resnet20").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 19
    assert fast.model is not model


def test_the_input_check_still_speaks_for_the_model():
    fast = optimize(create_model("resnet20"))
    with pytest.raises(ValueError, match="resnet20 was built for 3 input channel"):
        fast(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="resnet20 expects a batch of images"):
        fast(torch.randn(3, 32, 32))


def test_channels_last_and_float32_as_asked():
    fast = optimize(create_model("resnet20"), fold_bn=False, channels_last=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert _first_conv(fast).weight.is_contiguous()
    fast = optimize(create_model("resnet20"))
    assert _first_conv(fast).weight.is_contiguous(memory_format=torch.channels_last)


def test_training_an_optimized_model_is_refused():
    fast = optimize(create_model("lenet5"))
    with pytest.raises(ValueError, match="inference only"):
        fast.train()
    fast.eval()  # eval is fine


@pytest.mark.parametrize("kwargs,error,match", [
    ({"dtype": torch.int8}, ValueError, "dtype must be"),
    ({"fold_bn": "yes"}, TypeError, "fold_bn must be True or False"),
    ({"compile": 1}, TypeError, "compile must be True or False"),
])
def test_bad_options_are_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        optimize(create_model("lenet5"), **kwargs)


def test_not_a_module_and_twice_optimized_are_refused():
    with pytest.raises(TypeError, match="expects an nn.Module"):
        optimize("resnet20")
    with pytest.raises(ValueError, match="optimized already"):
        optimize(optimize(create_model("lenet5")))


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(create_model("resnet20"))


def test_bfloat16_on_a_cpu_without_it_keeps_float32_and_says_so(monkeypatch):
    monkeypatch.setattr(fast_module, "cpu_flags", lambda: frozenset({"avx2"}))
    assert bf16_support("cpu")[0] is False
    with pytest.warns(UserWarning, match="bfloat16 not applied, float32 kept: this CPU has neither"):
        fast = optimize(create_model("resnet20"), dtype=torch.bfloat16)
    assert fast.dtype == torch.float32 and _first_conv(fast).weight.dtype == torch.float32
    assert any("bfloat16 not applied" in note for note in fast.notes)


def test_bfloat16_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(fast_module, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = optimize(create_model("resnet20"), dtype=torch.bfloat16)
    assert fast.dtype == torch.bfloat16 and _first_conv(fast).weight.dtype == torch.bfloat16
    out = fast(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_real_images_are_fixed_and_varied():
    a, b = real_images(24, 48), real_images(24, 48)
    assert a.shape == (24, 3, 48, 48) and torch.equal(a, b)
    assert len({hash(tuple(img.flatten().tolist())) for img in a}) == 24  # no two alike
    assert real_images(5, 32, channels=1).shape == (5, 1, 32, 32)
    with pytest.raises(ValueError, match="count must be a positive int"):
        real_images(0)


@pytest.mark.skipif(not bf16_support("cpu")[0], reason="this CPU has no native bfloat16")
def test_bfloat16_drift_is_small_on_real_images():
    """bfloat16 keeps 8 bits of mantissa: logits move, the top-1 answers on photographs mostly do not."""
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    images = real_images(64, 32)
    drift = precision_drift(model, optimize(model, dtype=torch.bfloat16), images)
    assert 0 < drift.max_rel < 0.1
    assert drift.top1_agreement >= 0.9, drift
    exact = precision_drift(model, optimize(model), images)
    assert exact.max_rel < 1e-4 and exact.top1_agreement == 1.0


@pytest.mark.slow
def test_compiled_fast_path_agrees_with_eager():
    """torch.compile with freezing (seconds to compile even a small net on a CPU)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = _with_running_statistics(create_model("resnet20"))
    with torch.no_grad():
        expected = model(x)
    fast = optimize(model, compile=True)
    assert "torch.compile" in fast.notes
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


class _Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


@pytest.mark.slow
def test_each_compiled_model_is_compiled_however_many_share_its_code(monkeypatch):
    """torch.compile keeps its compiled graphs per Python function and recompiles up to a limit (8): every net of
    one family shares its forward, so the ninth compiled ResNet of a process ran uncompiled, with only a logged
    warning (seen in benchmarks/fast_path.py). Here with the limit at 1: the second instance must still be compiled."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    torch._dynamo.reset()
    x = torch.randn(2, 3, 8, 8)
    for seed in range(2):
        torch.manual_seed(seed)
        model = _Small().eval()
        fast = optimize(model, compile=True)
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == before + 1, f"instance {seed} not compiled"
