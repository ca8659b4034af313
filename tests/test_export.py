"""ONNX export (`cnnzoo export`, `cnnzoo.deploy.onnx`): every registered model exports and ONNX Runtime agrees with
eager PyTorch; the file is checked before it is written, and written whole or not at all."""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from cnnzoo import create_model, list_models, model_card
from cnnzoo.analysis.counting import registered_params
from helpers import cheapest_per_family, small_side, with_running_statistics
from cnnzoo.cli import main
from cnnzoo.deploy import onnx as deploy_onnx
from cnnzoo.deploy.onnx import ExportError, export_onnx, ort_runner
from cnnzoo.train.checkpoint import model_from_checkpoint, save_checkpoint

# Models no exporter can translate faithfully, and why (to move to the model card's field once it has one).
CANNOT_EXPORT: dict[str, str] = {}  # name: why its file cannot agree with eager (none today)


PARAMS = registered_params(list_models())  # computed on the meta device once per source, then cached


# Time budget: exporting the whole registry takes minutes here (VGG's files are 0.5 GB; DenseNet-264 has 900
# layers), so the suite exports each family's smallest model, and its quick part those under half a million
# parameters. CNNZOO_EXPORT_ALL=1 exports every model; so does benchmarks/export_check.py, as a table.
# Families whose smallest net has over 50 million parameters (AlexNet, ZFNet, VGG: files of 0.25-0.5 GB, seconds
# each to write, check and load) are left to CNNZOO_EXPORT_ALL as well: their layers (grouped convolution, local
# response normalisation, max-pooling, linear) are ones ResNeXt, the paper's GoogLeNet (added for its local response
# normalisation: its family's smallest is the batch-norm twin) and the rest export in the suite.
IN_SUITE = {n for n in cheapest_per_family([n for n in list_models() if n not in CANNOT_EXPORT], PARAMS)
            if PARAMS[n] <= 50_000_000} | {"googlenet"} | set(CANNOT_EXPORT)
EVERY = os.environ.get("CNNZOO_EXPORT_ALL") == "1"


def _case(name: str):
    marks = []
    if name in CANNOT_EXPORT:
        marks.append(pytest.mark.xfail(strict=True, reason=CANNOT_EXPORT[name]))
    if name not in IN_SUITE or PARAMS[name] >= 500_000:
        marks.append(pytest.mark.slow)
    if name not in IN_SUITE and not EVERY:
        marks.append(pytest.mark.skip(reason="not its family's smallest model: CNNZOO_EXPORT_ALL=1 exports it"))
    return pytest.param(name, marks=marks)


ALL = [_case(name) for name in list_models()]
SMALL = "lenet5_modern"  # the cheapest net to export: what the tests of the command and the file use


@pytest.mark.parametrize("name", ALL)
def test_every_model_exports_and_agrees_with_eager(name, tmp_path):
    """The registry-wide check runs the TorchScript-based exporter (ten times faster here); where it cannot
    translate the model, the torch.export-based one, as `exporter="auto"` would in the other order."""
    torch.manual_seed(0)
    c, side = model_card(name).input_size[0], small_side(name)
    model = with_running_statistics(create_model(name), torch.randn(1, c, side, side))
    path = tmp_path / f"{name}.onnx"
    try:
        report = export_onnx(model, path, input_size=(c, side, side), exporter="torchscript")
    except ExportError:
        report = export_onnx(model, path, input_size=(c, side, side), exporter="dynamo")
    assert report.ok, f"{name}: relative difference {report.rel_diff:.2e} (max {report.max_abs_diff:.2e})"
    assert report.rel_diff <= report.tolerance == 1e-4 and report.logit_scale > 0
    assert path.stat().st_size == report.file_bytes > 0
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left beside it


def _ort(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.slow  # the dynamo exporter: seconds even for the smallest net
def test_the_dynamo_exporter_writes_a_file_with_a_free_batch_size(tmp_path):
    model = create_model(SMALL).eval()
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, dynamic_batch=True)
    assert report.ok and report.exporter == "dynamo" and report.fallback_reason is None
    assert report.dynamic_batch and report.input_shape == (3, 1, 32, 32) and report.opset == 20
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, free dimension
    for batch in (1, 5):
        x = torch.randn(batch, 1, 32, 32)
        with torch.no_grad():
            expected = model(x)
        assert (_ort(path, x) - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_a_fixed_batch_file_takes_only_that_batch(tmp_path):
    path = tmp_path / "m.onnx"
    report = export_onnx(SMALL, path, batch_size=4, exporter="torchscript")
    assert report.ok and report.input_shape == (4, 1, 32, 32) and report.exporter == "torchscript"
    assert _ort(path, torch.randn(4, 1, 32, 32)).shape == (4, 10)
    with pytest.raises(Exception, match="[Ii]nvalid|dimension"):
        _ort(path, torch.randn(2, 1, 32, 32))


def test_a_model_the_dynamo_exporter_fails_on_falls_back_and_says_why(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("no translation for aten::something\nmore lines")

    monkeypatch.setattr(deploy_onnx, "_export_dynamo", fails)
    report = export_onnx(SMALL, tmp_path / "m.onnx")
    assert report.ok and report.exporter == "torchscript"
    assert report.fallback_reason == "RuntimeError: no translation for aten::something"
    with pytest.raises(ExportError, match="the dynamo exporter cannot export this model: RuntimeError: no trans"):
        export_onnx(SMALL, tmp_path / "n.onnx", exporter="dynamo")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_an_export_that_fails_leaves_no_file_and_the_old_one_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the previous export")

    def half_written(model, example, file, **kwargs):
        with open(file, "wb") as f:
            f.write(b"\x08\x07partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(deploy_onnx, "_export_dynamo", half_written)
    monkeypatch.setattr(deploy_onnx, "_export_torchscript", half_written)
    with pytest.raises(ExportError, match="dynamo: RuntimeError: disk full; torchscript: RuntimeError: disk full"):
        export_onnx(SMALL, path)
    assert path.read_bytes() == b"the previous export" and os.listdir(tmp_path) == ["m.onnx"]


def _runtime_answers(monkeypatch, change):
    """ONNX Runtime's logits passed through `change`: a file that disagrees with eager."""
    real = deploy_onnx._session

    def session(ort_module, file, *, threads):
        run = real(ort_module, file, threads=threads)
        return lambda x: change(run(x))

    monkeypatch.setattr(deploy_onnx, "_session", session)


def test_a_file_beyond_tolerance_is_not_written(tmp_path, monkeypatch):
    _runtime_answers(monkeypatch, lambda logits: logits * 1.001)
    report = export_onnx(SMALL, tmp_path / "m.onnx", exporter="torchscript")
    assert not report.ok and report.file_bytes == 0 and report.rel_diff > report.tolerance
    assert report.rel_diff == pytest.approx(1e-3, rel=0.05)  # 0.1% of every logit, the largest included
    assert os.listdir(tmp_path) == []
    report = export_onnx(SMALL, tmp_path / "m.onnx", exporter="torchscript", tolerance=2e-3)
    assert report.ok and (tmp_path / "m.onnx").is_file()


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"opset must be an integer from 7 to 23, got 99"):
        export_onnx(SMALL, tmp_path / "m.onnx", opset=99)
    with pytest.raises(ValueError, match="exporter must be one of auto, dynamo, torchscript"):
        export_onnx(SMALL, tmp_path / "m.onnx", exporter="tvm")
    with pytest.raises(ValueError, match=r"not built by cnnzoo.create_model.*input_size=\(C, H, W\)"):
        export_onnx(nn.Linear(3, 2), tmp_path / "m.onnx")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        export_onnx(SMALL, tmp_path)
    with pytest.raises(ValueError, match="lenet5_modern: input 4x4 is too small"):
        export_onnx(SMALL, tmp_path / "m.onnx", input_size=(1, 4, 4))
    with pytest.raises(TypeError, match="expected a model name, a checkpoint file or an nn.Module, got int"):
        export_onnx(3, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_the_model_keeps_its_mode(tmp_path):
    model = create_model(SMALL).train()
    export_onnx(model, tmp_path / "m.onnx", exporter="torchscript")
    assert model.training


def test_ort_runner_is_the_model_in_onnx_runtime():
    model = create_model(SMALL).eval()
    run = ort_runner(model, torch.randn(1, 1, 32, 32), threads=1)
    assert run.session.get_session_options().intra_op_num_threads == 1
    for batch in (1, 3):
        x = torch.randn(batch, 1, 32, 32)
        with torch.no_grad():
            expected = model(x)
        got = run(x)
        assert got.dtype == torch.float32 and got.shape == (batch, 10)
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_a_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=r"onnxruntime, which is not installed: pip install 'cnnzoo\[export\]'"):
        ort_runner(create_model(SMALL), torch.randn(2, 1, 32, 32))


# the command


def test_export_command_prints_the_result(tmp_path, capsys):
    path = tmp_path / "lenet.onnx"
    assert main(["export", SMALL, "--onnx", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"file        {path} (" in out and "kB)" in out
    assert f"model       {SMALL}, input 1x32x32, batch 1" in out
    assert "exporter    torch.export-based (dynamo), opset 20" in out
    assert "largest logit" in out and "relative" in out and "tolerance   0.0001 relative: within" in out
    assert len(out.splitlines()) == 5  # nothing from the exporter itself
    x = torch.randn(1, 1, 32, 32)
    assert _ort(path, x).shape == (1, 10)


def test_export_command_json_and_exit_1_beyond_tolerance(tmp_path, capsys, monkeypatch):
    _runtime_answers(monkeypatch, lambda logits: logits + 1)
    path = tmp_path / "m.onnx"
    assert main(["export", SMALL, "--onnx", str(path), "--exporter", "torchscript", "--format", "json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["ok"] is False and report["rel_diff"] > report["tolerance"] and report["exporter"] == "torchscript"
    assert captured.err.startswith(f"cnnzoo export: {path} not written: ONNX Runtime's logits differ")
    assert len(captured.err.splitlines()) == 1 and not path.exists()


@pytest.mark.parametrize("argv,message", [
    (["export", "lenet6", "--onnx", "x.onnx"], "unknown model 'lenet6'; did you mean"),
    (["export", SMALL, "--onnx", "x.onnx", "--input", "1x32"], "argument --input: expected CxHxW"),
    (["export", SMALL, "--onnx", "x.onnx", "--input", "1x8x8"], "lenet5_modern: input 8x8 is too small"),
    (["export", SMALL, "--onnx", "x.onnx", "--opset", "30"], "argument --opset: expected an integer from 7 to 23"),
    (["export", SMALL], "the following arguments are required: --onnx"),
    (["export", SMALL, "--onnx", "no/such/folder/x.onnx"], "folder no/such/folder does not exist"),
])
def test_export_command_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and os.listdir(tmp_path) == []


def test_export_command_without_the_extra_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", SMALL, "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == "cnnzoo export: error: ONNX export needs onnx, which is not installed: " \
                  "pip install 'cnnzoo[export]'\n"


def test_export_command_reads_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(3)
    trained = create_model(SMALL, num_classes=5)
    checkpoint = tmp_path / "best.pt"
    save_checkpoint(checkpoint, {"model": SMALL, "model_options": {"num_classes": 5},
                                 "model_state": trained.state_dict()})
    path = tmp_path / "from_checkpoint.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(path), "--dynamic-batch"]) == 0
    assert f"model       {SMALL}, input 1x32x32, any batch size (checked at 3)" in capsys.readouterr().out
    model = model_from_checkpoint(checkpoint)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
    got = _ort(path, x)
    assert got.shape == (2, 5) and np.allclose(got, expected, atol=1e-4 * expected.abs().max().item())


def test_ort_runner_refuses_what_it_cannot_run():
    with pytest.raises(TypeError, match="expected an nn.Module, got str"):
        ort_runner(SMALL, torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="lenet5_modern: input 8x8 is too small"):
        ort_runner(create_model(SMALL), torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="threads must be a positive integer, got 0"):
        ort_runner(create_model(SMALL), torch.randn(1, 1, 32, 32), threads=0)


def test_logits_that_are_not_finite_cannot_be_compared(tmp_path):
    model = create_model(SMALL).eval()
    with torch.no_grad():
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="lenet5_modern: PyTorch's own logits on the check batch are not finite"):
        export_onnx(model, tmp_path / "m.onnx", exporter="torchscript")
    assert os.listdir(tmp_path) == []
