"""cnnzoo bench: real measurements of small nets (tiny minimum times), its formats, failures and signals."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.deploy import bench

ROW_KEYS = ["model", "batch", "mode", "path", "dtype", "memory_format", "threads", "device", "status",
            "images_per_s", "latency_ms", "latency_p10_ms", "latency_p90_ms", "repeats", "peak_memory_bytes",
            "flops_per_image", "gflops", "ceiling_fraction", "vs_torchvision", "twin_of", "top1_err", "dataset",
            "notes"]
QUICK = ["--min-time", "0.01", "--min-repeats", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def rows():
    """lenet5 and resnet20 at batches 1 and 64, eager and fast, each in its own process."""
    configs = bench.plan(["lenet5", "resnet20"], batches=[1, 64], paths=["eager", "fast"], threads=1)
    return list(bench.run_bench(configs, min_time=0.02, min_repeats=3))


def test_rows_are_measured_and_consistent(rows):
    assert [(r.model, r.batch, r.path) for r in rows] == [
        (m, b, p) for m in ("lenet5", "resnet20") for b in (1, 64) for p in ("eager", "fast")]
    ceiling = bench.ceilings()[("float32", "cpu", 1)]
    assert ceiling > 0
    for r in rows:
        assert r.ok, r.status
        assert r.repeats >= 3
        assert r.images_per_s == pytest.approx(r.batch / (r.latency_ms / 1e3))
        assert r.latency_p10_ms <= r.latency_ms <= r.latency_p90_ms
        assert r.flops_per_image == cnnzoo.profile(r.model).flops  # the profiler's trace, per image
        assert r.gflops == pytest.approx(r.flops_per_image * r.images_per_s / 1e9)
        assert r.ceiling_fraction == pytest.approx(r.gflops / ceiling)
        assert r.peak_memory_bytes > 0
        assert r.memory_format == ("contiguous" if r.path == "eager" else "channels_last")
    fast = next(r for r in rows if r.model == "resnet20" and r.path == "fast")
    assert any("batch norm folded into 19 convolutions" in n for n in fast.notes)


def test_peak_memory_grows_with_the_batch(rows):
    def peak(model, batch, path="eager"):
        return next(r.peak_memory_bytes for r in rows if (r.model, r.batch, r.path) == (model, batch, path))

    # resnet20's first stage alone holds 64 x 16 x 32 x 32 floats (4 MiB) per activation at batch 64
    assert peak("resnet20", 64) > peak("resnet20", 1) + 4 * 2**20
    assert peak("resnet20", 64, "fast") > peak("resnet20", 1, "fast")


@pytest.mark.slow
def test_refused_configurations_are_rows_with_their_reason():
    configs = bench.plan(["lenet5"], mode="train", paths=["eager", "fast"], threads=1)
    trained, fast = bench.run_bench(configs, min_time=0.01, min_repeats=1)
    assert trained.ok and trained.mode == "train"
    assert trained.flops_per_image == cnnzoo.profile("lenet5", mode="train").train_flops
    assert not fast.ok and fast.status == bench.TRAIN_EAGER_ONLY
    (onnx_bf16,) = bench.run_bench(bench.plan(["lenet5"], paths=["onnxruntime"], dtype="bfloat16", threads=1))
    assert onnx_bf16.status == "the onnxruntime path runs float32 only"


def test_a_failing_configuration_is_a_row_and_the_next_one_runs(monkeypatch):
    built = []

    def build(source):
        built.append(source)
        if len(built) == 1:
            raise RuntimeError("forced failure\nsecond line")
        return cnnzoo.create_model(source)

    monkeypatch.setattr(bench, "_build", build)
    configs = bench.plan(["lenet5"], batches=[1, 2], threads=1)
    failed, ran = bench.run_bench(configs, min_time=0.01, min_repeats=1, isolate=False)
    assert failed.status == "RuntimeError: forced failure" and failed.images_per_s is None
    assert ran.ok and ran.batch == 2


def test_a_child_that_dies_is_reported_not_raised():
    result = bench._in_child(signal.raise_signal, signal.SIGKILL)
    assert "died of SIGKILL" in result["status"]
    assert bench._in_child(bench._matmul, ("float32", "cpu", 1, 0.01))["gflops"] > 0  # the next task still runs


@pytest.mark.slow  # the profiler's and the net's input checks search for the smallest size: seconds
def test_a_net_that_refuses_the_input_is_a_row():
    (row,) = bench.run_bench(bench.plan(["lenet5"], input_size=(1, 4, 4), threads=1), min_time=0.01)
    assert row.status.startswith("ValueError: lenet5: input 4x4 is too small")
    assert row.flops_per_image is None and row.images_per_s is None


def test_json_and_csv(capsys):
    assert main(["bench", "lenet5", "--batch", "1,2", "--format", "json", *QUICK]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"environment", "ceilings", "rows", "partial", "stopped_by"}
    assert out["partial"] is False and out["stopped_by"] is None
    assert [list(r) for r in out["rows"]] == [ROW_KEYS, ROW_KEYS]
    assert [r["batch"] for r in out["rows"]] == [1, 2]
    env = out["environment"]
    assert env["threads"] == 1 and env["threads_chosen_by"] == "--threads"
    assert env["torch"] and env["cpu"] and env["memory_format"] == {"eager": "contiguous"}
    assert out["ceilings"][0]["threads"] == 1 and out["ceilings"][0]["gflops"] > 0

    assert main(["bench", "lenet5", "--format", "csv", *QUICK]) == 0
    text = capsys.readouterr().out
    data = [line for line in text.splitlines() if not line.startswith("#")]
    table = list(csv.DictReader(io.StringIO("\n".join(data))))
    assert list(table[0]) == ROW_KEYS and table[0]["status"] == "ok" and float(table[0]["images_per_s"]) > 0
    assert any(line.startswith("# ceiling:") for line in text.splitlines())


def test_table(capsys):
    assert main(["bench", "lenet5", "--path", "eager,fast", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "threads      1 (--threads)" in out and "ceiling" in out and "2 configurations" in out
    assert out.count("lenet5") == 2


@pytest.mark.parametrize("argv, message", [
    (["nosuchnet"], "unknown model 'nosuchnet'"),
    (["resnet*", "--batch", "0"], "expected positive batch sizes"),
    (["lenet5", "--path", "eager,warp"], "unknown path 'warp'"),
    (["lenet5", "--min-time", "-1"], "expected a number of seconds >= 0"),
    (["'nomatch*'"], "no model matches pattern"),
    (["lenet5", "--device", "cuda"] if not torch.cuda.is_available() else ["lenet5", "--batch", "x"],
     "torch sees no CUDA device" if not torch.cuda.is_available() else "expected positive batch sizes"),
])
def test_bad_flags_are_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_sigterm_prints_a_partial_table(capsys, monkeypatch):
    measure = bench.run_bench

    def term_after_the_first_row(*args, **kwargs):
        for row in measure(*args, **kwargs):
            yield row
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(bench, "run_bench", term_after_the_first_row)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        status = main(["bench", "lenet5", "--batch", "1,2,4", "--format", "json", *QUICK])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    out = json.loads(capsys.readouterr().out)
    assert status == 143
    assert out["partial"] is True and out["stopped_by"] == "SIGTERM"
    assert [r["batch"] for r in out["rows"]] == [1]


@pytest.mark.slow
def test_ctrl_c_prints_a_partial_table_and_exits_130():
    process = subprocess.Popen([sys.executable, "-m", "cnnzoo", "bench", "resnet20", "--batch", "1,2,4,8,16,32,64",
                                "--min-time", "1", "--threads", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(_children(server) for server in _children(process.pid)):  # until a configuration is measuring
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "PARTIAL: stopped by SIGINT" in out and "configurations measured" in out
    assert "(partial)" in out and "Traceback" not in err


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_figures_fail_early_without_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("measured before refusing"))
    assert main(["bench", "lenet5", "--figures", str(tmp_path / "figs"), *QUICK]) == 2
    assert "pip install 'cnnzoo[plot]'" in capsys.readouterr().err


@pytest.mark.slow
def test_figures_are_written_with_their_csv(rows, tmp_path):
    from cnnzoo.deploy.figures import write_figures

    lines = write_figures(rows, str(tmp_path))
    names = ["time_per_image", "memory", "operations_vs_time", "accuracy_vs_speed"]
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = list(csv.reader((tmp_path / f"{name}.csv").open()))
        assert len(table) > 1
    assert sorted(os.listdir(tmp_path)) == sorted(f"{n}.{e}" for n in names for e in ("png", "csv"))  # no temp files
    times = list(csv.DictReader((tmp_path / "time_per_image.csv").open()))
    assert len(times) == len(rows)
    one = next(r for r in rows if (r.model, r.batch, r.path) == ("resnet20", 64, "fast"))
    assert float(next(t["ms_per_image"] for t in times if (t["model"], t["batch"], t["path"]) ==
                      ("resnet20", "64", "fast"))) == pytest.approx(one.latency_ms / 64)
    assert any("R^2" in line for line in lines) is False  # two models: too few for a line
    accuracy = list(csv.DictReader((tmp_path / "accuracy_vs_speed.csv").open()))
    assert {a["model"] for a in accuracy} == {"lenet5", "resnet20"}  # both cards report a top-1 error


def test_least_squares_r2():
    from cnnzoo.deploy.figures import least_squares

    slope, intercept, r2 = least_squares([1, 2, 3, 4], [3, 5, 7, 9])
    assert (slope, intercept, r2) == pytest.approx((2, 1, 1))
    assert least_squares([1, 2, 3], [1, 3, 2])[2] < 1


@pytest.mark.slow
def test_vs_torchvision_gives_a_ratio(capsys):
    assert main(["bench", "resnet18", "--format", "json", "--vs-torchvision", *QUICK]) == 0  # native input size
    ours, theirs = json.loads(capsys.readouterr().out)["rows"]
    assert (ours["model"], theirs["model"], theirs["twin_of"]) == ("resnet18", "torchvision.resnet18", "resnet18")
    assert ours["vs_torchvision"] == pytest.approx(ours["images_per_s"] / theirs["images_per_s"])
    assert theirs["flops_per_image"] == ours["flops_per_image"]  # the same architecture
    # and the same weights and activations: torchvision's code (about 90 MB imported) is not its model's memory
    assert theirs["peak_memory_bytes"] < 1.3 * ours["peak_memory_bytes"]


def test_every_configuration_of_a_model_times_the_same_weights(monkeypatch):
    """An untrained net's values can change its speed (subnormal or non-finite arithmetic is slow on a CPU): each
    configuration builds the model from the same seed, whatever ran in the process before."""
    seen = []

    def record(model, config, device):
        seen.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return (lambda: None), {"dtype": config.dtype, "memory_format": "contiguous"}

    monkeypatch.setattr(bench, "_prepare", record)
    for batch in (1, 2):
        torch.rand(batch)  # the global generator moved on between configurations
        config = bench.BenchConfig(source="resnet20", label="resnet20", input_size=(3, 32, 32), num_classes=10,
                                   batch=batch)
        assert bench._measure((config, 0.0, 1))["status"] == "ok"
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])


def test_the_server_builds_each_model_once_and_the_peak_still_counts_its_weights():
    """Configurations of one model fork from the server that built it; the weights count in each peak as if the
    configuration had built them, and a path that copies the model (the fast path) does not count them twice."""
    weights = sum(p.numel() * p.element_size() for p in cnnzoo.create_model("alexnet").parameters())  # 244 MB
    results = []
    for path in ("eager", "fast"):
        (config,) = bench.plan(["alexnet"], paths=[path], threads=1)
        results.append(bench._in_child(bench._measure, (config, 0.0, 1)))
    eager, fast = results
    assert eager["built"] == fast["built"] == "server", (eager, fast)
    assert weights <= eager["peak"] < weights * 1.5
    assert weights <= fast["peak"] < weights * 1.5  # the server's copy goes once the fast path has its own


@pytest.mark.slow
def test_children_of_the_server_run_with_several_threads_after_it_built_a_model():
    """The server builds on one thread, so no OpenMP pool exists when it forks: a child using two threads would
    hang at its first parallel region otherwise. In a process of its own, with a deadline."""
    command = [sys.executable, "-c", "from cnnzoo.cli import main; main()", "bench", "resnet20", "--batch", "1,2",
               "--threads", "2", "--min-time", "0.01", "--min-repeats", "1", "--format", "csv"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(line for line in done.stdout.splitlines() if not line.startswith("#")))
    assert [(r["batch"], r["status"]) for r in rows] == [("1", "ok"), ("2", "ok")]


def test_a_smaller_input_than_the_native_one_has_a_smaller_peak():
    """At a size other than its native one, a model's input check first runs it on the meta device, importing
    torch's shape machinery (~170 MB of code): the server does that before forking, so the peak is the model's."""
    peaks = {}
    for size in ((3, 224, 224), (3, 64, 64)):
        (config,) = bench.plan(["resnet18"], paths=["eager"], threads=1, input_size=size)
        result = bench._in_child(bench._measure, (config, 0.0, 1))
        assert result["status"] == "ok", result
        peaks[size] = result["peak"]
    assert peaks[(3, 64, 64)] <= peaks[(3, 224, 224)], peaks
