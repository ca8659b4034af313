"""FractalNet against Larsson, Maire & Shakhnarovich 2017 (Secs. 2-4) and the authors' Caffe generator."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import cnnzoo.models.fractalnet as fractalnet
from cnnzoo import count_params, create_model, model_card
from cnnzoo.models.fractalnet import DROPOUT_SCHEDULE, ConvBlock, FractalBlock, FractalNet, join

BLOCKS = 5


def _tiny(num_columns=3, width=4, **options):
    """The paper's 5-block CIFAR layout with `width` filters everywhere: fast on the CPU at 32x32."""
    torch.manual_seed(0)
    options.setdefault("dropout", False)
    model = FractalNet(num_columns, (width,) * BLOCKS, **options)
    for m in model.modules():  # non-trivial statistics, so eval-mode batch norm is not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _x(batch=2, seed=1):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _record_convs(model):
    """(block, column) of every ConvBlock run, in order."""
    runs = []
    for b, block in enumerate(model.blocks):
        for k, column in enumerate(block.columns):
            for conv in column:
                conv.register_forward_hook(lambda m, i, o, where=(b, k): runs.append(where))
    return runs


def _mean(tensors):
    return sum(tensors) / len(tensors)


def _expand(columns, z):
    """The inputs of the last join of f_C(z), by the expansion rule f_{C+1}(z) = join(f_C(f_C(z)), conv(z)).

    `columns[k]` lists the convolutions of column k (shallowest first); the two copies of f_C take the first and the
    second half of every deeper column. The last join of the second copy and the new join meet at one point, so they
    are one join (Fig. 1): the branches are returned unjoined.
    """
    if len(columns) == 1:
        return [columns[0][0](z)]
    first = [col[: len(col) // 2] for col in columns[1:]]
    second = [col[len(col) // 2:] for col in columns[1:]]
    return _expand(second, _mean(_expand(first, z))) + [columns[0][0](z)]


def _reference_block(block, x):
    return _mean([F.max_pool2d(b, 2) for b in _expand([list(col) for col in block.columns], x)])


def _reference_network(model, x):
    for block in model.blocks:
        x = _reference_block(block, x)
    return model.head(x.flatten(1))


@pytest.mark.parametrize("num_columns", [1, 2, 3, 4])
def test_fractal_expansion_counts(num_columns):
    block = FractalBlock(num_columns, 3, 2)
    columns = [len(col) for col in block.columns]
    assert columns == [2**k for k in range(num_columns)]  # column k: 2^k convolutions
    assert sum(columns) == 2**num_columns - 1  # f_{C+1} has twice f_C's convolutions plus one
    assert block.depth == max(columns) == 2 ** (num_columns - 1)


@pytest.mark.parametrize("name, columns, depth", [("fractalnet20", 3, 20), ("fractalnet40", 4, 40)])
def test_registered_depth_is_blocks_times_deepest_column(name, columns, depth):
    with torch.device("meta"):
        model = create_model(name)
    assert len(model.blocks) == BLOCKS and model.num_columns == columns
    assert model.depth == BLOCKS * 2 ** (columns - 1) == depth
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert convs == BLOCKS * (2**columns - 1)
    widths = [block.out_channels for block in model.blocks]
    assert widths == [64, 128, 256, 512, 512]  # Sec. 4
    assert model.head.in_features == 512  # the 512 x 1 x 1 map left by five 2x2 poolings of 32x32


@pytest.mark.parametrize("num_columns", [1, 2, 3, 4])
def test_block_follows_the_expansion_rule_with_mean_joins(num_columns):
    block = FractalBlock(num_columns, 3, 4).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference_block(block, x))


def test_two_column_block_by_hand():
    block = FractalBlock(2, 3, 4).eval()
    (a,), (b0, b1) = block.columns
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = (F.max_pool2d(b1(b0(x)), 2) + F.max_pool2d(a(x), 2)) / 2
        torch.testing.assert_close(block(x), expected)


def test_join_is_the_elementwise_mean():
    inputs = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    torch.testing.assert_close(join(inputs), (inputs[0] + inputs[1] + inputs[2]) / 3)
    assert join(inputs[:1], drop_rate=0.9) is inputs[0]  # a single input is never dropped


@pytest.mark.parametrize("n", [2, 3, 4])
def test_local_drop_path_keeps_at_least_one_input(n):
    p, draws = 0.15, 20000
    values = [10.0**i for i in range(n)]
    inputs = [torch.full((1,), v) for v in values]
    subsets = [s for r in range(1, n + 1) for s in itertools.combinations(range(n), r)]
    means = {s: sum(values[i] for i in s) / len(s) for s in subsets}
    assert len({round(m, 6) for m in means.values()}) == len(subsets)  # the output names the inputs kept
    torch.manual_seed(0)
    kept = []
    for _ in range(draws):
        out = join(inputs, drop_rate=p).item()
        match = [s for s, m in means.items() if math.isclose(out, m, rel_tol=1e-6)]
        assert len(match) == 1, f"output {out} is the mean of no non-empty subset of the inputs"
        kept.append(set(match[0]))
    for i in range(n):
        # Conditioned on another input surviving, no rescue happens: input i is kept with probability 1 - p.
        others = [i in s for s in kept if s - {i}]
        rate, sigma = sum(others) / len(others), math.sqrt(p * (1 - p) / len(others))
        assert abs(rate - (1 - p)) < 5 * sigma, f"input {i}: kept {rate:.4f} given another survived"
        # Unconditioned: all n dropped (p^n) rescues a uniformly chosen input.
        marginal, expected = sum(i in s for s in kept) / draws, 1 - p + p**n / n
        assert abs(marginal - expected) < 5 * math.sqrt(expected * (1 - expected) / draws)
    singles = sum(len(s) == 1 for s in kept) / draws  # exactly one survivor: by chance, or by rescue
    expected = n * (1 - p) * p ** (n - 1) + p**n
    assert abs(singles - expected) < 5 * math.sqrt(expected * (1 - expected) / draws) + 1e-3


def test_mini_batches_mix_local_and_global_half_and_half():
    model = _tiny().train()
    torch.manual_seed(0)
    draws = 6000
    paths = [model._sample_path() for _ in range(draws)]
    global_columns = [column for column, rate in paths if column is not None]
    assert all(rate == 0.0 for column, rate in paths if column is not None)
    assert all(rate == 0.15 for column, rate in paths if column is None)  # local drop rate, Sec. 4
    share = len(global_columns) / draws
    assert abs(share - 0.5) < 5 * math.sqrt(0.25 / draws)
    counts = [global_columns.count(k) for k in range(3)]  # the column is drawn uniformly
    for c in counts:
        assert abs(c / len(global_columns) - 1 / 3) < 5 * math.sqrt(2 / 9 / len(global_columns))
    assert model.eval()._sample_path() == (None, 0.0)


def test_global_drop_path_trains_exactly_one_column():
    model = _tiny(global_drop_path=1.0).train()
    runs = _record_convs(model)
    seen = set()
    torch.manual_seed(0)
    for _ in range(12):
        runs.clear()
        model.zero_grad(set_to_none=True)
        out = model(_x())
        columns = {k for _, k in runs}
        assert len(columns) == 1, f"global drop-path ran columns {sorted(columns)}"
        (k,) = columns
        seen.add(k)
        assert len(runs) == BLOCKS * 2**k  # the whole column in every block, nothing else
        assert [b for b, _ in runs] == sorted(b for b, _ in runs)
        out.sum().backward()
        for b, block in enumerate(model.blocks):
            for j, column in enumerate(block.columns):
                grads = [p.grad for p in column.parameters()]
                assert all(g is not None for g in grads), "dropped columns must get zero gradients, not None"
                if j != k:
                    assert all(torch.count_nonzero(g) == 0 for g in grads)
        model.column = k  # the output is that column alone (batch statistics: train-mode BN on the same batch)
        torch.testing.assert_close(out, model(_x()))
        model.column = None
    assert seen == {0, 1, 2}


def test_local_drop_path_gives_dropped_branches_zero_gradients():
    model = _tiny(drop_path=1.0, global_drop_path=0.0).train()  # every join keeps exactly one input
    torch.manual_seed(0)
    model(_x()).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    zero = [n for n, p in model.named_parameters() if torch.count_nonzero(p.grad) == 0]
    assert zero, "with every join keeping a single input, some convolutions must have been dropped"


def test_local_drop_path_goes_through_every_join(monkeypatch):
    rates = []

    def spy(inputs, drop_rate=0.0):
        rates.append((len(inputs), drop_rate))
        return join(inputs, drop_rate)

    monkeypatch.setattr(fractalnet, "join", spy)
    model = _tiny(global_drop_path=0.0).train()
    runs = _record_convs(model)
    with torch.no_grad():
        model(_x())
    assert len(runs) == BLOCKS * 7  # local drop-path computes every column
    joins = [n for n, _ in rates if n > 1]
    assert joins == [2, 3] * BLOCKS  # C = 3: a 2-way join half way, a 3-way join at the end of each block
    assert {r for n, r in rates if n > 1} == {0.15}


def test_eval_runs_the_full_mean_join_network_deterministically(monkeypatch):
    rates = []

    def spy(inputs, drop_rate=0.0):
        rates.append(drop_rate)
        return join(inputs, drop_rate)

    monkeypatch.setattr(fractalnet, "join", spy)
    model = _tiny(dropout=True).eval()  # the paper's regularisers are on, and must be off in eval
    assert model.drop_path == 0.15 and model.global_drop_path == 0.5
    runs = _record_convs(model)
    torch.manual_seed(0)
    with torch.no_grad():
        outs = [model(_x()) for _ in range(5)]
        assert len(runs) == 5 * BLOCKS * 7
        assert set(rates) == {0.0}
        expected = _reference_network(model, _x())
    for out in outs:
        assert torch.equal(out, outs[0])
    torch.testing.assert_close(outs[0], expected)


@pytest.mark.parametrize("column", [0, 1, 2])
def test_single_column_has_that_columns_depth(column):
    model = _tiny().eval()
    model.column = column
    runs = _record_convs(model)
    with torch.no_grad():
        out = model(_x())
    assert runs == [(b, column) for b in range(BLOCKS) for _ in range(2**column)]
    if column == model.num_columns - 1:
        assert len(runs) == model.depth  # the deepest column alone is the full depth, B * 2^(C-1)
    x = _x()
    with torch.no_grad():  # a plain chain: the column's convolutions and the poolings, no joins
        for block in model.blocks:
            for conv in block.columns[column]:
                x = conv(x)
            x = F.max_pool2d(x, 2)
        torch.testing.assert_close(out, model.head(x.flatten(1)))


def test_column_option_is_validated():
    model = _tiny()
    with pytest.raises(ValueError, match="column must be in 0..2"):
        model.column = 3
    with pytest.raises(TypeError, match="column must be an int"):
        model.column = 1.0
    with torch.device("meta"):
        assert create_model("fractalnet20", column=2).column == 2
    with pytest.raises(ValueError, match="column"):
        create_model("fractalnet20", column=-1)


def test_dropout_schedule_per_block():
    with torch.device("meta"):
        model = create_model("fractalnet20")
        without = create_model("fractalnet20", dropout=False)
    for block, rate in zip(model.blocks, DROPOUT_SCHEDULE):  # 0, 10, 20, 30, 40 %
        convs = [c for c in block.modules() if isinstance(c, ConvBlock)]
        assert len(convs) == 7
        assert [getattr(c.dropout, "p", 0.0) for c in convs] == [rate] * 7
        assert list(dict(convs[0].named_children())) == ["conv", "dropout", "bn", "relu"]  # authors' order
    assert not any(isinstance(m, torch.nn.Dropout) for m in without.modules())
    with torch.device("meta"):
        custom = create_model("fractalnet20", dropout=(0.5, 0.0, 0.0, 0.0, 0.1))
    assert [getattr(b.columns[0][0].dropout, "p", 0.0) for b in custom.blocks] == [0.5, 0.0, 0.0, 0.0, 0.1]
    with pytest.raises(ValueError, match="5 rates"):
        create_model("fractalnet20", dropout=(0.1, 0.2))
    with pytest.raises(ValueError, match="drop_path"):
        create_model("fractalnet20", drop_path=1.5)


def test_cards_and_parameter_counts():
    card = model_card("fractalnet20")
    assert card.params is None  # the paper's 38.6M is not what its stated configuration gives
    assert any("38.6M" in d and "33,724,618" in d for d in card.deviations)
    assert card.top1_err == 4.60 and "C10+" in card.err_source
    with torch.device("meta"):
        assert count_params(create_model("fractalnet20")) == 33_724_618
        assert count_params(create_model("fractalnet40")) == 76_106_634
