"""cnnzoo.experiments: the runner's reuse and resume, the summaries' arithmetic and verdicts, the CLI's refusals.

Training here is LeNet-5 on `fake:1x32x32` (512 images, one epoch in well under a second), standing in for the
experiments' CIFAR nets: the runner does not care which net a run trains."""

from __future__ import annotations

import json

import pytest

from cnnzoo.experiments import EXPERIMENTS, plan_experiment, run_experiment
from cnnzoo.experiments import degradation, ensemble
from cnnzoo.experiments.runner import ExperimentStopped, Plan, RunOutcome, RunSpec, read_metrics, run_plan
from cnnzoo.experiments.summary import mean_std, write_summary

DATA = "fake:1x32x32"
FAST = {"threads": 1, "device": "cpu"}


def tiny_plan(seeds=2, epochs=1, experiment="tiny"):
    runs = [RunSpec("lenet5", "lenet5", seed) for seed in range(seeds)]
    return Plan(experiment, DATA, "small", seeds, epochs, "fast", runs, ["everything"])


def test_runs_are_trained_then_reused_and_settings_checked(tmp_path):
    lines = []
    first = run_plan(tiny_plan(), tmp_path, train_options=FAST, progress=lines.append, extra={"threads": 1})
    assert json.loads((tmp_path / "experiment.json").read_text())["threads"] == 1
    assert [o.status for o in first] == ["trained", "trained"]
    assert lines[0].startswith("run 1/2: lenet5, seed 0") and lines[1].startswith("run 2/2")
    assert all(len(o.history) == 1 for o in first)
    assert first[0].history != first[1].history  # two seeds, two runs
    with pytest.raises(ValueError, match="--resume"):
        run_plan(tiny_plan(), tmp_path, train_options=FAST, progress=lines.append)
    again = run_plan(tiny_plan(), tmp_path, resume=True, train_options=FAST, progress=lines.append)
    assert [o.status for o in again] == ["reused", "reused"]
    assert [o.history for o in again] == [o.history for o in first]
    assert "finished before, reused" in lines[-1]
    with pytest.raises(ValueError, match=r"epochs \(2 given, 1 in"):
        run_plan(tiny_plan(epochs=2), tmp_path, resume=True, train_options=FAST)


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path):
    with pytest.raises(ExperimentStopped, match="--resume") as stop:
        run_plan(tiny_plan(seeds=1), tmp_path / "a", train_options={**FAST, "max_steps": 3}, progress=lambda _: 0)
    assert stop.value.reason == "max_steps"
    resumed = run_plan(tiny_plan(seeds=1), tmp_path / "a", resume=True, train_options=FAST, progress=lambda _: 0)
    straight = run_plan(tiny_plan(seeds=1), tmp_path / "b", train_options=FAST, progress=lambda _: 0)
    assert resumed[0].status == "resumed" and straight[0].status == "trained"
    keys = ("train_loss", "train_top1_err", "val_top1_err")
    assert [{k: r[k] for k in keys} for r in resumed[0].history] == [{k: r[k] for k in keys} for r in
                                                                     straight[0].history]


def _outcome(arm, seed, train_errs, test_errs, seconds=1.0):
    history = [{"epoch": i + 1, "step": i + 1, "train_loss": 1.0, "train_top1_err": tr, "val_top1_err": te,
                "seconds": seconds} for i, (tr, te) in enumerate(zip(train_errs, test_errs))]
    return RunOutcome(RunSpec(arm, arm, seed), None, "trained", history)


@pytest.mark.parametrize("plain56_end, appears", [(30.0, True), (10.0, False)])
def test_degradation_gaps_and_verdict(tmp_path, plain56_end, appears):
    plan = degradation.plan("digits", seeds=2, epochs=2)
    ends = {"plain20": (10.0, 11.0), "plain56": (plain56_end, plain56_end + 1), "resnet20": (9.0, 10.0),
            "resnet56": (7.0, 8.0)}
    outcomes = [_outcome(arm, s, [50.0, ends[arm][s]], [55.0, ends[arm][s] + 2]) for s in range(2)
                for arm in degradation.ARMS]
    summary = degradation.summarize(plan, outcomes)
    expected = mean_std(ends["plain56"])[0] - mean_std(ends["plain20"])[0]
    assert summary.results["gaps"]["plain"]["train_err_gap"] == pytest.approx(expected)
    assert summary.results["gaps"]["resnet"]["train_err_gap"] == pytest.approx(7.5 - 9.5)
    assert ("The paper's effect appears" in " ".join(summary.verdict)) is appears
    assert ("does not appear" in " ".join(summary.verdict)) is not appears
    files = write_summary(tmp_path, plan, summary, "cnnzoo experiment degradation --data digits")
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["verdict"] == summary.verdict and record["shrunk"] == plan.shrunk
    text = (tmp_path / "summary.md").read_text()
    assert "| plain56 |" in text and "Shrunk for the small scale" in text
    assert (tmp_path / "figure.png") in files and (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_ensemble_error_against_n_from_real_checkpoints(tmp_path):
    from cnnzoo.train.ensemble import evaluate_checkpoints

    runs = [RunSpec("lenet5", "lenet5", seed) for seed in range(4)]
    plan = Plan("ensemble", DATA, "small", 2, 1, "fast", runs, [], options={"members": 2, "model": "lenet5"})
    outcomes = run_plan(plan, tmp_path, train_options=FAST, progress=lambda _: 0)
    summary = ensemble.summarize(plan, outcomes, {"device": "cpu"})
    by_n = summary.results["by_n"]
    assert sorted(by_n) == ["1", "2"] and all(len(v) == 2 for v in by_n.values())  # one value per group
    second = evaluate_checkpoints([str(o.folder / "last.pt") for o in outcomes[2:]], DATA, device="cpu")
    assert by_n["1"][1] == pytest.approx(second["members"][0]["top1_err"])
    assert by_n["2"][1] == pytest.approx(second["ensemble"]["top1_err"])
    assert "| 2 |" in summary.table


def test_plans_follow_the_papers_arms():
    deg = plan_experiment("degradation", "digits")
    assert {r.model for r in deg.runs} == {"plain20", "plain56", "resnet20", "resnet56"} and len(deg.runs) == 12
    assert len({r.folder for r in deg.runs}) == 12 and deg.shrunk
    sd = plan_experiment("stochastic-depth", "cifar10", scale="paper", seeds=1)
    assert {r.model for r in sd.runs} == {"resnet110_sd"} and sd.epochs == 500 and not sd.shrunk
    assert sorted(s for r in sd.runs for s in r.settings) == ["survival_prob=0.5", "survival_prob=1.0"]
    fractal = plan_experiment("fractal-columns", "digits", seeds=1)
    assert [r.settings[-2:] for r in fractal.runs if r.arm == "no drop-path"] == [("drop_path=0",
                                                                                  "global_drop_path=0")]
    ens = plan_experiment("ensemble", "digits", seeds=3)
    assert sorted(r.seed for r in ens.runs) == list(range(3 * ens.options["members"]))


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "degradatoin"}, "did you mean 'degradation'"),
    ({"seeds": 0}, "seeds must be a whole number"),
    ({"scale": "huge"}, "scale must be 'small' or 'paper'"),
    ({"epochs": -1}, "epochs must be"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    args = {"name": "degradation", "data": "digits", **kwargs}
    with pytest.raises(ValueError, match=message):
        run_experiment(args.pop("name"), args.pop("data"), out=tmp_path, **args)
    assert not list(tmp_path.iterdir())  # nothing written


def test_fractal_columns_refuses_another_net(tmp_path):
    from cnnzoo.experiments.fractal_columns import column_errors

    outcome = run_plan(tiny_plan(seeds=1), tmp_path, train_options=FAST, progress=lambda _: 0)[0]
    with pytest.raises(ValueError, match="not a FractalNet"):
        column_errors(outcome.folder / "last.pt", DATA, device="cpu")


def test_cli_list_and_errors(capsys):
    from cnnzoo.cli import main

    assert main(["experiment", "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == list(EXPERIMENTS)
    for args, message in ((("degradation",), "--data is required"), ((), "name an experiment"),
                          (("ensemble", "--list"), "--list takes no experiment name"),
                          (("nope", "--data", "digits"), "unknown experiment 'nope'")):
        assert main(["experiment", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_metrics_read_back_as_numbers(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,step,train_top1_err\n1,10,50.5\n2,20,40\n")
    assert read_metrics(tmp_path / "metrics.csv") == [{"epoch": 1, "step": 10, "train_top1_err": 50.5},
                                                      {"epoch": 2, "step": 20, "train_top1_err": 40.0}]


def test_thread_count_is_kept_on_resume(tmp_path):
    from cnnzoo.experiments import _threads

    (tmp_path / "experiment.json").write_text(json.dumps({**tiny_plan(seeds=1).record(), "threads": 3}))
    assert _threads(tiny_plan(seeds=1), tmp_path, True, "cpu") == (3, "as the experiment began")


@pytest.mark.parametrize("whole, verdict", [(90.0, "No conclusion"), (10.0, "The paper's effect appears")])
def test_fractal_verdict_needs_nets_that_learnt(tmp_path, monkeypatch, whole, verdict):
    from cnnzoo.experiments import fractal_columns

    (tmp_path / "config.json").write_text(json.dumps({"classes": [str(i) for i in range(10)]}))
    plan = fractal_columns.plan("digits", seeds=2, epochs=1)
    outcomes = [RunOutcome(spec, tmp_path, "trained", []) for spec in plan.runs]
    found = {"drop-path": {"all": whole, "1": whole + 2, "2": whole + 1, "3": whole + 0.5},
             "no drop-path": {"all": whole, "1": whole + 40, "2": whole + 30, "3": whole + 20}}
    arms = iter([o.spec.arm for o in outcomes])
    monkeypatch.setattr(fractal_columns, "column_errors", lambda *a, **k: dict(found[next(arms)]))
    summary = fractal_columns.summarize(plan, outcomes)
    assert verdict in " ".join(summary.verdict)
    assert summary.results["deepest_minus_whole"]["drop-path"][0] == pytest.approx(0.5)
    assert summary.results["deepest_minus_whole"]["no drop-path"][0] == pytest.approx(20)


def test_runs_in_parallel_processes_equal_runs_one_after_another(tmp_path):
    """Two worker processes train the three runs; each run's metrics equal the sequential run's (a run's result
    does not depend on how many train at once), and the progress lines say so."""
    lines = []
    parallel = run_plan(tiny_plan(seeds=3), tmp_path / "p", train_options=FAST, progress=lines.append, jobs=2)
    sequential = run_plan(tiny_plan(seeds=3), tmp_path / "s", train_options=FAST, progress=lambda _: 0)
    keys = ("train_loss", "train_top1_err", "val_top1_err")
    assert [[{k: r[k] for k in keys} for r in o.history] for o in parallel] == \
           [[{k: r[k] for k in keys} for r in o.history] for o in sequential]
    assert [o.status for o in parallel] == ["trained"] * 3
    assert sorted(line.split(":")[0] for line in lines) == ["run 1/3", "run 2/3", "run 3/3"]
    assert all(line.endswith("(2 runs at a time)") for line in lines)


def test_a_parallel_run_that_stops_stops_the_experiment_resumably(tmp_path):
    with pytest.raises(ExperimentStopped, match="stopped early \\(max_steps\\).*--resume") as stop:
        run_plan(tiny_plan(seeds=2), tmp_path, train_options={**FAST, "max_steps": 3}, progress=lambda _: 0,
                 jobs=2)
    assert stop.value.reason == "max_steps"
    resumed = run_plan(tiny_plan(seeds=2), tmp_path, resume=True, train_options=FAST, progress=lambda _: 0, jobs=2)
    assert [o.status for o in resumed] == ["resumed", "resumed"]


def test_a_failing_parallel_run_is_reported(tmp_path):
    plan = tiny_plan(seeds=2)
    plan.runs[1] = RunSpec("broken", "lenet5", 1, settings=("lr=-1",))
    with pytest.raises((RuntimeError, ValueError), match="run 2/2 .* failed: .*lr"):
        run_plan(plan, tmp_path, train_options=FAST, progress=lambda _: 0, jobs=2)


def test_how_many_runs_at_once(monkeypatch):
    from cnnzoo.experiments import _jobs, stochastic_depth
    import cnnzoo.train.threads as threads

    plan = tiny_plan(seeds=3)
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    assert _jobs(degradation, plan, "cpu", None)[0] == 2
    assert _jobs(stochastic_depth, plan, "cpu", None)[0] == 1  # its wall times are a result
    assert _jobs(stochastic_depth, plan, "cpu", 2) == (2, "as asked")
    monkeypatch.setattr(threads, "free_cores", lambda: 8)
    assert _jobs(degradation, plan, "cpu", None)[0] == 3  # no more workers than runs
    with pytest.raises(ValueError, match="jobs must be a whole number"):
        _jobs(degradation, plan, "cpu", 0)
