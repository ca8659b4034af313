"""The tools people point at a model work on every registered one: `torch.export.export` (with a dynamic batch
dimension) and `torch.fx.symbolic_trace`, in eval mode, and the traced module computes what the model does.
Training mode, where stochastic depth and drop-path draw in the graph, is test_fx_random.py's.

(`torch.jit.script` is not among them: the input check's forward pre-hook is not scriptable, and TorchScript is
deprecated in the torch cnnzoo uses.)
"""

import os

import pytest
import torch
from torch import nn

from cnnzoo import create_model, list_models, model_card
from cnnzoo.analysis.counting import registered_params
from helpers import cheapest_per_family, small_side, with_running_statistics

PARAMS = registered_params(list_models())  # computed on the meta device once per source, then cached


# Time budget: tracing the whole registry takes minutes here (torch.export spends seconds on a net of hundreds of
# layers: DenseNet-264 has 900), so the suite traces each family's smallest model, and its quick part those under
# half a million parameters. CNNZOO_EXPORT_ALL=1 traces every model.
IN_SUITE = cheapest_per_family(list_models(), PARAMS)
EVERY = os.environ.get("CNNZOO_EXPORT_ALL") == "1"


def _case(name: str):
    marks = []
    if name not in IN_SUITE or PARAMS[name] >= 500_000:
        marks.append(pytest.mark.slow)
    if name not in IN_SUITE and not EVERY:
        marks.append(pytest.mark.skip(reason="not its family's smallest model: CNNZOO_EXPORT_ALL=1 traces it"))
    return pytest.param(name, marks=marks)


ALL = [_case(name) for name in list_models()]


def _model_and_inputs(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model in eval mode with trained-looking batch norms, and batches of 2 and 3 images at a small side it
    accepts: its native side up to 64, else 96 where that fits (tracing costs the same at any size; running
    does not)."""
    torch.manual_seed(0)
    c, side = model_card(name).input_size[0], small_side(name)
    generator = torch.Generator().manual_seed(1)
    example, other = torch.randn(2, c, side, side, generator=generator), torch.randn(3, c, side, side,
                                                                                       generator=generator)
    return with_running_statistics(create_model(name), other), example, other


@pytest.mark.parametrize("name", ALL)
def test_torch_export_with_a_dynamic_batch_and_fx_trace_agree_with_eager(name):
    model, example, other = _model_and_inputs(name)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        expected = model(other)
        exported = program.module()(other)  # a batch size the export did not see
        fx = traced(other)
    assert expected.shape == (3, model_card(name).num_classes)
    scale = expected.abs().max()
    assert (exported - expected).abs().max() <= 1e-5 * scale, "torch.export's module differs from eager"
    assert (fx - expected).abs().max() <= 1e-5 * scale, "fx's module differs from eager"


def test_the_exported_program_keeps_the_batch_dimension_free():
    model, example, other = _model_and_inputs("resnet20")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    (placeholder,) = [s for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    shape = next(n for n in program.graph.nodes if n.name == placeholder.arg.name).meta["val"].shape
    assert not isinstance(shape[0], int) and shape[1:] == example.shape[1:]
    with torch.no_grad():
        assert program.module()(other[:1]).shape == (1, 10)
