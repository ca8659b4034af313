"""Absurd sizes for `cnnzoo summary` and `cnnzoo.profile`: one clear line naming the flag (or argument) and the
limit, exit status 2, nothing allocated first."""

import subprocess
import sys

import pytest
import torch

import cnnzoo
from cnnzoo.analysis import SizeError
from cnnzoo.analysis import measure as measure_module
from cnnzoo.analysis.profile import MAX_TENSOR_BYTES
from cnnzoo.cli import main

RESNET18_MAX_BATCH = MAX_TENSOR_BYTES // (64 * 112 * 112 * 4)  # conv1's float32 output is its largest tensor


def summary(args, capsys):
    try:
        code = main(["summary", "resnet18", *args])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, expected", [
    (["--batch", "1000000000000000000"], [f"use --batch {RESNET18_MAX_BATCH} or less", "2**63 - 1 bytes"]),
    (["--batch", "10000000000000"], ["layer 'conv1' (Conv2d) would make a 10000000000000x64x112x112 float32",
                                     f"use --batch {RESNET18_MAX_BATCH} or less"]),
    (["--input", "3x10000000000x10000000000"], ["--input 3x10000000000x10000000000 is too large at any batch",
                                                "use a smaller --input"]),
    (["--input", "3x99999999999999999999x3"], ["use a smaller --input"]),  # past int64 itself
    # an intermediate tensor past the limit at a size other than the native one: not "does not fit the strides"
    (["--input", "3x500000000x500000000"], ["layer 'conv1'", "use a smaller --input"]),
    (["--batch", "1000000000", "--measure"], ["measuring runs one real inference pass at --batch 1000000000",
                                              "has available", "or less"]),
    (["--input", "100000000x224x224"], ["takes 3 input channel(s)", "use --input 3x224x224"]),
    (["--input", "3x0x224"], ["--input", "at least 1"]),
    (["--batch", "-5"], ["--batch", "at least 1"]),
])
def test_absurd_sizes_are_one_line_naming_the_flag(args, expected, capsys):
    code, out, err = summary(args, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    assert "batch_size" not in lines[0] and "input_size" not in lines[0]  # the CLI speaks in flags


def test_the_advised_batch_is_the_largest_that_runs(capsys):
    code, _, err = summary(["--batch", str(RESNET18_MAX_BATCH), "--depth", "0", "--format", "json"], capsys)
    assert code == 0, err
    code, _, err = summary(["--batch", str(RESNET18_MAX_BATCH + 1), "--depth", "0"], capsys)
    assert code == 2 and f"use --batch {RESNET18_MAX_BATCH} or less" in err


def test_huge_depth_is_every_layer(capsys):
    code, out, err = summary(["--depth", "99999999999999999999", "--format", "csv"], capsys)
    assert code == 0 and len(out.splitlines()) == len(cnnzoo.profile("resnet18").layers) + 1, err


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=10**18), rf"batch_size=10{'0' * 17} is too large .* use batch_size={RESNET18_MAX_BATCH} or less"),
    (dict(input_size=(3, 10**10, 10**10)), r"input_size=\(3, 10000000000, 10000000000\) is too large at any batch"),
    (dict(input_size=(3, 10**20, 3)), r"use a smaller input_size="),
    (dict(batch_size=3, mode="train", input_size=(3, 5 * 10**8, 5 * 10**8)), r"layer 'conv1'.*smaller input_size="),
])
def test_python_api_names_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        cnnzoo.profile("resnet18", **kwargs)
    assert isinstance(info.value, SizeError) and "--" not in str(info.value)


def test_a_refused_measure_advises_a_batch_that_fits(monkeypatch):
    """With the memory a batch of 64 would need, a batch of 1,000 is refused; the batch it advises is measured
    for real within that memory."""
    budget = cnnzoo.profile("resnet20", batch_size=64).inference_peak_bytes
    monkeypatch.setattr(measure_module, "available_memory", lambda device: (budget, "a test's budget"))
    with pytest.raises(SizeError, match=r"batch_size=1000 .* more than the .* this machine has available "
                                        r"\(a test's budget\); use batch_size=(\d+) or less") as info:
        cnnzoo.profile("resnet20", batch_size=1000, measure=True)
    advised = int(str(info.value).rsplit("batch_size=", 1)[1].split()[0])
    assert 1 <= advised < 64
    assert cnnzoo.profile("resnet20", batch_size=advised, measure=True).measured_peak_bytes <= budget


def test_cuda_memory_comes_from_the_driver_and_the_cache(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2**30)
    assert measure_module.available_memory(torch.device("cuda", 0)) == (4 * 2**30, "torch.cuda.mem_get_info")
    result = cnnzoo.profile("resnet18", batch_size=10**6)
    with pytest.raises(SizeError, match=r"the 4 GiB cuda:0 has available \(torch.cuda.mem_get_info\)"):
        measure_module.refuse_beyond_memory(result, torch.device("cuda", 0))


def test_cpu_memory_is_known():
    available, source = measure_module.available_memory(torch.device("cpu"))
    assert available > 0 and source


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_measure_refuses_a_pass_beyond_the_gpu():
    model = cnnzoo.create_model("resnet18").cuda()
    before = torch.cuda.memory_allocated()
    with pytest.raises(SizeError, match=r"cuda:0 has available \(torch.cuda.mem_get_info\); use batch_size="):
        cnnzoo.profile(model, batch_size=10**8, measure=True)
    assert torch.cuda.memory_allocated() == before


def test_installed_cli_prints_one_line_for_an_input_past_int64():
    """torch's own error for a size past int64 carries C++ frames; the CLI must never reach it."""
    result = subprocess.run([sys.executable, "-m", "cnnzoo", "summary", "resnet18", "--input",
                             "3x99999999999999999999x3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "--input" in result.stderr, result.stderr
