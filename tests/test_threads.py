"""CPU threads are a measured choice: the fastest candidate wins, the probe changes nothing the run computes,
the count is recorded and kept on resume, and --threads pins it."""

import json
import time

import pytest
import torch

from cnnzoo.cli import main
from cnnzoo.train.checkpoint import load_checkpoint
from cnnzoo.train.threads import measure_threads
from cnnzoo.train.trainer import TrainConfig, train


def test_the_fastest_count_wins_and_the_callers_count_is_restored(monkeypatch):
    """A fake clock: each step costs what its thread count says, so the choice is deterministic."""
    import cnnzoo.train.threads as threads_module

    now = [0.0]
    monkeypatch.setattr(threads_module.time, "perf_counter", lambda: now[0])
    before = torch.get_num_threads()

    def costs(table):
        def step():
            now[0] += table[torch.get_num_threads()]
        return step

    busy = measure_threads(costs({2: 0.2, 1: 0.01}), [2, 1], budget=1.0)  # one core busy: two threads crawl
    assert busy.threads == 1 and busy.timings == pytest.approx({2: 0.2, 1: 0.01})
    assert torch.get_num_threads() == before
    assert measure_threads(costs({2: 0.01, 1: 0.0102}), [2, 1]).threads == 2  # a near tie: more threads
    assert measure_threads(costs({2: 0.01, 1: 0.02}), [2, 1]).threads == 2


def test_the_probe_changes_nothing_the_run_computes(tmp_path):
    """NiN draws dropout masks from the global RNG: a run that measured its thread count ends with exactly the
    weights of one pinned to the same count (the probe put the RNG back and trained a copy)."""
    config = dict(model="nin", data="fake", recipe="fast", epochs=1, batch_size=64, quiet=True, max_steps=3)
    train(TrainConfig(**config, out=str(tmp_path / "auto")))
    record = json.loads((tmp_path / "auto" / "config.json").read_text())
    chosen = record["threads"]["count"]
    assert "measured at start-up" in record["threads"]["how"] or "one core" in record["threads"]["how"]
    train(TrainConfig(**config, out=str(tmp_path / "pinned"), threads=chosen))
    a = load_checkpoint(tmp_path / "auto" / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "pinned" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_keeps_the_runs_count_and_the_first_line_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "lenet5", "--data", "fake", "--recipe", "fast", "--epochs", "1", "--out", str(out)]
    assert main([*args, "--threads", "1", "--max-steps", "2"]) == 0
    assert "1 CPU thread (--threads)" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["threads"] == 1
    assert main(["train", "lenet5", "--data", "fake", "--out", str(out), "--resume"]) == 0
    assert "1 CPU thread (as the run began" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_thread_counts_are_one_line(tmp_path, capsys, value):
    assert main(["train", "lenet5", "--data", "fake", "--threads", value, "--out", str(tmp_path / "r")]) == 2
    assert "--threads" in capsys.readouterr().err
