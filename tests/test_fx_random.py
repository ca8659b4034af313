"""Traced nets keep their randomness: under torch.fx (symbolic_trace, torchvision's feature extraction) in training
mode, stochastic depth and FractalNet's drop-path are graph nodes that draw on every call, as eager draws.

What is checked: node names do not depend on the seed and are the same in train and eval mode; the traced graphs
draw at the schedule's rates; given the same random state they draw what eager draws and (no dropout) compute what
eager computes; feature extractors on the natural stage outputs run in both modes on every registered model, and
train with drops that change from step to step.
"""

import math
import os

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import cnnzoo.layers as layers
import cnnzoo.models.fractalnet as fractalnet
from cnnzoo import create_model, list_models, model_card
from cnnzoo.analysis.counting import registered_params
from cnnzoo.models.fractalnet import FractalNet
from conftest import HEAVY_MODELS
from helpers import cheapest_per_family, small_side

pytestmark = [pytest.mark.usefixtures("one_thread"),  # torchvision's note on GoogLeNet (auxiliary heads in training):
              pytest.mark.filterwarnings("ignore:NOTE. The nodes obtained by tracing the model in eval mode")]

SIGMAS = 4  # binomial tolerance of every rate check (fixed seeds: the checks are deterministic)
PARAMS = registered_params(list_models())
RANDOM_BY_DEFAULT = ("resnet110_sd", "resnet152_sd", "fractalnet20")
# One model per family (the smallest), plus resnet110_sd and fractalnet20, random as registered (resnet152_sd, seconds
# a trace, is in the whole suite only); the others are slow. The
# heaviest (conftest's HEAVY_MODELS: torchvision's tracer takes 25-50 s on each 1000-layer net) are traced with
# CNNZOO_TRACE_ALL=1; their blocks are their lighter siblings' (resnet1202_sd's are resnet110_sd's).
QUICK = cheapest_per_family(list_models(), PARAMS) | {"resnet110_sd", "fractalnet20"}
EVERY = os.environ.get("CNNZOO_TRACE_ALL") == "1"
ALL = [pytest.param(name, marks=() if name in QUICK else
                    pytest.mark.skip(reason="a heavy net: CNNZOO_TRACE_ALL=1 traces it")
                    if name in HEAVY_MODELS and not EVERY else pytest.mark.slow)
       for name in list_models()]


def _on_meta(name: str, **options) -> nn.Module:
    """The model on the meta device (tracing reads no weights), with stochastic depth (p_L = 0.5) where its
    builder takes `survival_prob` and does not use it already."""
    with torch.device("meta"):
        if name not in RANDOM_BY_DEFAULT:
            try:
                return create_model(name, survival_prob=0.5, **options)
            except TypeError:  # the family has no stochastic depth
                pass
        return create_model(name, **options)


def _stage_outputs(model: nn.Module, train: list[str], evaluation: list[str]) -> list[str]:
    """The natural return nodes: every top-level submodule, and every stage of a top-level list of stages
    (CifarResNet's `stages.0`, FractalNet's `blocks.0`); create_feature_extractor returns a module's last node.
    Only those that run in both modes (GoogLeNet's auxiliary heads run in training only)."""
    names = []
    for name, child in model.named_children():
        parts = list(child.named_children())
        stages = isinstance(child, nn.ModuleList) or (
            isinstance(child, nn.Sequential) and parts
            and all(isinstance(m, (nn.Sequential, nn.ModuleList)) for _, m in parts))
        names += [f"{name}.{part}" for part, _ in parts] if stages else [name]
    return [n for n in names if all(any(node == n or node.startswith(n + ".") for node in graph)
                                    for graph in (train, evaluation))]


def _random(model: nn.Module) -> bool:
    """Whether the forward draws at random in training (stochastic depth, drop-path): only then can a trace
    depend on the seed."""
    return any(isinstance(m, (layers.StochasticDepth, FractalNet)) for m in model.modules())


@pytest.mark.parametrize("name", ALL)
def test_traced_node_names_and_a_stage_feature_extractor_in_both_modes(name):
    """Node names do not depend on the seed (checked where the forward draws: elsewhere they cannot), train and
    eval graphs name the same nodes, and create_feature_extractor on the stage outputs runs in both modes."""
    model = _on_meta(name)
    torch.manual_seed(0)
    train, evaluation = get_graph_node_names(model)
    if _random(model):
        torch.manual_seed(1)
        assert get_graph_node_names(model) == (train, evaluation)
    if model_card(name).family == "googlenet":  # the auxiliary heads run in training only
        assert set(evaluation) < set(train)
    else:
        assert train == evaluation
    nodes = _stage_outputs(model, train, evaluation)
    assert len(nodes) >= 2, nodes
    extractor = create_feature_extractor(model, return_nodes=nodes)
    side = small_side(name)
    x = torch.empty(2, model_card(name).input_size[0], side, side, device="meta")
    for training in (True, False):
        features = extractor.train(training)(x)
        assert sorted(features) == sorted(nodes) and all(isinstance(f, torch.Tensor) for f in features.values())


# Stochastic depth -----------------------------------------------------------------------------------------------

SD_NETS = ["resnet110_sd", "resnet152_sd", "resnet20", "preact_resnet110", "wrn16_8", "resnext29_8x64d"]


def _keep_nodes(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    return [n for n in graph.nodes if n.target is layers.keep_factor]


def _survival(model: nn.Module, node_name: str) -> float:
    """The schedule's p_l of the block whose keep_factor node this is ("stages.0.3.keep_factor")."""
    return model.get_submodule(node_name.rpartition(".")[0]).stochastic_depth.survival_prob


def _decisions_only(model: nn.Module) -> tuple[torch.fx.GraphModule, list[str]]:
    """The model's traced graph cut down to its keep_factor nodes (and the modules they read), which it returns in
    forward order, and their qualified names. Nothing else in these graphs draws random numbers (no dropout), so
    this graph draws what the whole one does, without the convolutions between the draws."""
    names = [n for n in get_graph_node_names(model)[0] if n.endswith("keep_factor") or ".keep_factor_" in n]
    traced = torch.fx.symbolic_trace(model)
    graph = traced.graph
    keep = _keep_nodes(graph)
    assert len(keep) == len(names)
    output = next(n for n in graph.nodes if n.op == "output")
    output.args = (tuple(keep),)
    placeholder = next(n for n in graph.nodes if n.op == "placeholder")
    for node in keep:  # the anchor is not read: the input will do, and nothing upstream need run
        node.args = (placeholder, *node.args[1:])
    graph.eliminate_dead_code(is_impure_node=lambda n: n.op in ("placeholder", "output"))
    return torch.fx.GraphModule(traced, graph), names


@pytest.mark.parametrize("name", SD_NETS)
def test_traced_keep_rates_follow_the_schedule(name):
    model = _on_meta(name).train()
    decide, names = _decisions_only(model)
    p = torch.tensor([_survival(model, n) for n in names], dtype=torch.float64)
    assert p.min() < 0.6 and p.max() < 1.0  # every block can be dropped
    x = torch.empty(1, device="meta")
    torch.manual_seed(0)
    calls = 1000
    kept = torch.stack([torch.stack(decide(x)) for _ in range(calls)])  # (calls, blocks) of 1.0 / 0.0
    assert set(kept.unique().tolist()) == {0.0, 1.0}
    rate = kept.mean(0)
    sigma = (p * (1 - p) / calls).sqrt()
    worst = ((rate - p).abs() / sigma).max().item()
    assert worst < SIGMAS, f"a block's keep rate is {worst:.1f} sigma from its p_l"
    total, expected = kept.sum(1).mean(), p.sum()  # blocks kept per call, all blocks pooled
    assert abs(total - expected) < SIGMAS * math.sqrt((p * (1 - p)).sum() / calls)
    changes = (kept[0::2] != kept[1::2]).any(1).float().mean()  # calls 2i and 2i+1 differ in some block
    same = (p**2 + (1 - p) ** 2).prod()
    assert abs(changes - (1 - same)) < SIGMAS * math.sqrt(same * (1 - same) / (calls // 2))
    assert torch.equal(torch.stack(decide.eval()(x)), p)  # traced in training, switched: the branch times p_l


@pytest.fixture
def draws(monkeypatch):
    """Every decision drawn, eager or traced, in order: the draws go through these module functions."""
    seen = []

    def spy(function):
        def record(*args):
            seen.append(function(*args))
            return seen[-1]
        return record

    monkeypatch.setattr(layers, "_draw_keep", spy(layers._draw_keep))
    monkeypatch.setattr(fractalnet, "_draw_path", spy(fractalnet._draw_path))
    monkeypatch.setattr(fractalnet, "_draw_kept", spy(fractalnet._draw_kept))
    return seen


def _eager_and_traced(model: nn.Module, x: torch.Tensor, draws: list, calls: int) -> list[tuple]:
    """(decisions, outputs) of `calls` training forwards from seed 0, eager then traced; then the graph traced in
    training mode, switched to eval mode, must compute what the model does in eval mode."""
    traced = torch.fx.symbolic_trace(model.train())
    runs = []
    for net in (model, traced):
        torch.manual_seed(0)
        outputs = []
        draws.clear()
        with torch.no_grad():
            for _ in range(calls):
                outputs.append(net(x))
        runs.append((list(draws), torch.stack(outputs)))
    with torch.no_grad():
        assert torch.equal(traced.eval()(x), model.eval()(x))
    return runs


@pytest.mark.parametrize("name, options", [("resnet110_sd", {}), ("preact_resnet110", {"survival_prob": 0.5})])
def test_traced_stochastic_depth_draws_and_computes_what_eager_does(name, options, draws):
    """The native side: at another one, the input check's first call runs the eager model once more to probe it,
    which draws too."""
    torch.manual_seed(0)
    model = create_model(name, **options)
    x = torch.randn(2, 3, 32, 32)
    (eager_draws, eager_out), (traced_draws, traced_out) = _eager_and_traced(model, x, draws, calls=3)
    assert traced_draws == eager_draws and False in eager_draws and True in eager_draws
    assert torch.equal(traced_out, eager_out)


# FractalNet -----------------------------------------------------------------------------------------------------

def _fractal(widths=(2, 2, 2, 2, 2), **options) -> FractalNet:
    torch.manual_seed(0)
    return FractalNet(3, widths, dropout=options.pop("dropout", False), **options)


def test_traced_fractalnet_draws_at_the_papers_rates(draws):
    """Global drop-path in half the mini-batches, its column uniform; local drop-path drops each input of a join
    with rate 0.15, one input kept at random where all were dropped. Two blocks one channel wide keep it cheap."""
    model = _fractal(widths=(1, 1)).train()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 4, 4)
    torch.manual_seed(0)
    calls = 1500
    with torch.no_grad():
        for _ in range(calls):
            traced(x)
    paths = [d for d in draws if isinstance(d, tuple)]
    joins = [d for d in draws if isinstance(d, list)]
    assert len(paths) == calls
    columns = [column for column, _ in paths if column is not None]
    share = len(columns) / calls
    assert abs(share - 0.5) < SIGMAS * math.sqrt(0.25 / calls)
    for k in range(3):
        assert abs(columns.count(k) / len(columns) - 1 / 3) < SIGMAS * math.sqrt(2 / 9 / len(columns))
    assert len(joins) == (calls - len(columns)) * 2 * 2  # local mini-batches: two joins in each block
    r = model.drop_path
    for n in (2, 3):
        kept = [k for keep in joins if len(keep) == n for k in keep]
        p = (1 - r) + r**n / n  # kept on its own, or the one kept where all n were dropped
        assert abs(sum(kept) / len(kept) - p) < SIGMAS * math.sqrt(p * (1 - p) / len(kept))


@pytest.mark.parametrize("options", [{}, {"global_drop_path": 1.0}, {"dropout": True, "global_drop_path": 0.0}],
                         ids=["mixed", "global", "local-with-dropout"])
def test_traced_fractalnet_draws_and_computes_what_eager_does(options, draws):
    """Bit for bit, global columns included (weights 1 and 0 at the joins). With dropout on, only while no
    mini-batch is global: a global one runs in the graph the dropout of columns eager skips."""
    model = _fractal(**options)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    (eager_draws, eager_out), (traced_draws, traced_out) = _eager_and_traced(model, x, draws, calls=12)
    assert traced_draws == eager_draws
    assert torch.equal(traced_out, eager_out)
    assert len({str(d) for d in eager_draws}) > 1, "the paths or the local drops must vary"
    if not options:  # the paper's mixture: global and local mini-batches both compared
        assert {column is None for column, _ in (d for d in eager_draws if isinstance(d, tuple))} == {True, False}


def test_a_fixed_column_is_traced_as_that_column_alone():
    model = _fractal(column=1).train()
    traced = torch.fx.symbolic_trace(model)
    assert not [n for n in traced.graph.nodes if n.op == "call_function" and "path" in n.name]
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(traced(x), model(x))


# Feature extractors that train -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow)
                                  for n in RANDOM_BY_DEFAULT])
def test_a_feature_extractor_trains_with_drops_that_change(name, draws):
    torch.manual_seed(0)
    model = create_model(name)
    nodes = _stage_outputs(model, *get_graph_node_names(model))
    extractor = create_feature_extractor(model, return_nodes=nodes).train()
    side = 64 if name == "resnet152_sd" else small_side(name)
    x = torch.randn(2, 3, side, side)
    optimizer = torch.optim.SGD(extractor.parameters(), lr=0.01)
    before = [p.detach().clone() for p in extractor.parameters()]
    steps = []
    for _ in range(3):
        draws.clear()
        features = extractor(x)
        loss = sum(f.square().mean() for f in features.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _check_dropped_paths_get_zero_gradients(model, list(draws))
        optimizer.step()
        assert torch.isfinite(loss)
        steps.append(list(draws))
    assert len({str(s) for s in steps}) > 1, "the drops must change between steps"
    changed = [not torch.equal(a, b) for a, b in zip(before, extractor.parameters())]
    assert sum(changed) > len(changed) / 2  # not all: a block dropped in every step keeps its weights


def _check_dropped_paths_get_zero_gradients(model: nn.Module, decisions: list) -> None:
    """What was dropped gets zero gradients, what was kept not (the extractor holds the model's own convolutions):
    a stochastic-depth block's first convolution; on a global drop-path step, every column but the chosen one."""
    if isinstance(model, FractalNet):
        column, _ = decisions[0]
        for block in model.blocks if column is not None else ():
            for k, convs in enumerate(block.columns):
                assert all(bool(conv.conv.weight.grad.any()) == (k == column) for conv in convs)
        return
    blocks = [m for m in model.modules() if getattr(m, "stochastic_depth", None) is not None]
    assert len(decisions) == len(blocks)
    for block, kept in zip(blocks, decisions):
        assert bool(block.conv1.weight.grad.any()) == kept
