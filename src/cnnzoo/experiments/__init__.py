"""The lecture's experiments, reproduced as sets of ordinary training runs with a summary each.

    from cnnzoo.experiments import run_experiment
    run_experiment("degradation", "digits", scale="small", seeds=3, out="experiments/degradation")

Each experiment (one module here) turns its name, data, scale and seeds into a `Plan` of runs; `runner.run_plan`
trains them one by one as `cnnzoo train` would (each its own run folder, reused when finished and resumed when
interrupted); the module's `summarize` reads the runs back and says in words whether the paper's effect appears;
`summary.write_summary` writes figure.png, summary.md and results.json.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cnnzoo.experiments import degradation, ensemble, fractal_columns, stochastic_depth
from cnnzoo.experiments.runner import Plan, RunOutcome, RunSpec, run_plan
from cnnzoo.experiments.summary import Summary, write_summary
from cnnzoo.words import plural

__all__ = ["EXPERIMENTS", "ExperimentResult", "plan_experiment", "run_experiment", "Plan", "RunSpec", "RunOutcome",
           "Summary"]

EXPERIMENTS = {module.NAME: module for module in (degradation, stochastic_depth, ensemble, fractal_columns)}


@dataclass
class ExperimentResult:
    out: Path
    plan: Plan
    outcomes: list[RunOutcome]
    summary: Summary
    files: list[Path]


def _module(name: str):
    if name not in EXPERIMENTS:
        import difflib

        near = difflib.get_close_matches(str(name), EXPERIMENTS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown experiment {name!r}{hint}; choose one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _jobs(module, plan: Plan, device: str, jobs: int | None) -> tuple[int, str]:
    """How many runs train at once, and why."""
    from cnnzoo.train.threads import free_cores
    from cnnzoo.train.trainer import resolve_device

    if jobs is not None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be a whole number of at least 1, got {jobs!r}")
        return jobs, "as asked"
    if resolve_device(device).type != "cpu":
        return 1, "the runs take the GPU one at a time"
    if getattr(module, "TIMED", False):
        return 1, "its wall times per epoch are a result, so no run shares the CPU with another"
    free = free_cores()
    return max(1, min(free, len(plan.runs))), f"one per free CPU core ({free})"


def _threads(plan: Plan, out: Path, resume: bool, device: str, jobs: int = 1) -> tuple[int, str]:
    """The experiment's CPU thread count: the one it started with (on --resume), else the fastest of a few,
    measured once on a training step of its first net (`cnnzoo.train.threads`: on a shared CPU, 1 thread can be
    several times faster than 2)."""
    import json

    import torch
    import torch.nn.functional as F

    from cnnzoo.registry import create_model, model_card
    from cnnzoo.train.threads import cpu_candidates, measure_threads
    from cnnzoo.train.trainer import resolve_device

    stored = out / "experiment.json"
    if resume and stored.is_file():
        kept = json.loads(stored.read_text()).get("threads")
        if isinstance(kept, int) and kept >= 1:
            return kept, "as the experiment began"
    if resolve_device(device).type != "cpu":
        return torch.get_num_threads(), "torch's default; the nets run on the GPU"
    if jobs > 1:
        return 1, f"{jobs} runs train at once, one per core"
    candidates = cpu_candidates()
    if len(candidates) == 1:
        return candidates[0], "one core available"
    card = model_card(plan.runs[0].model)
    rng = torch.get_rng_state()
    try:
        net = create_model(card.name, num_classes=10).train()
        x, y = torch.randn(32, *card.input_size), torch.arange(32) % 10

        def step():
            F.cross_entropy(net(x), y).backward()
            net.zero_grad(set_to_none=True)

        choice = measure_threads(step, candidates)
    finally:
        torch.set_rng_state(rng)
    shown = ", ".join(f"{n}: {1000 * t:.0f} ms" for n, t in sorted(choice.timings.items()))
    return choice.threads, f"the fastest for a step of {card.name} at batch 32: {shown}"


def plan_experiment(name: str, data: str, *, scale: str = "small", seeds: int = 3, epochs: int | None = None) -> Plan:
    """The runs experiment `name` trains for this data, scale, seeds and epochs (nothing is trained)."""
    return _module(name).plan(data, scale, seeds, epochs)


def run_experiment(name: str, data: str, *, scale: str = "small", seeds: int = 3, epochs: int | None = None,
                   out: str | Path | None = None, resume: bool = False, train_options: dict | None = None,
                   progress=None, command: str | None = None, jobs: int | None = None) -> ExperimentResult:
    """Train (or reuse, or resume) the experiment's runs, then write its summary into `out`.

    Args:
        out: the experiment's folder (default experiments/NAME-DATA-SCALE).
        resume: continue the experiment in `out`: finished runs are reused, an interrupted one continues.
        train_options: TrainConfig fields given to every run (device, threads, data_root, ...).
        progress: called with each progress line (default: print to stderr).
        jobs: runs trained at once, each in its own process (default: on the CPU, one per free core, each with one
            thread; one at a time on a GPU and for an experiment whose wall times are a result).
    """
    module = _module(name)
    plan = module.plan(data, scale, seeds, epochs)
    out = Path(out) if out is not None else Path("experiments") / f"{name}-{data.replace(':', '-')}-{scale}"
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    options = dict(train_options or {})
    jobs, why_jobs = _jobs(module, plan, options.get("device", "auto"), jobs)
    if options.get("threads") is None:  # one count for every run, so that their wall times compare
        options["threads"], how = _threads(plan, out, resume, options.get("device", "auto"), jobs)
        say(f"{plural(options['threads'], 'CPU thread')} for every run ({how}; --threads N to pin)")
    if jobs > 1:
        say(f"{jobs} runs at a time ({why_jobs}; --jobs N to choose)")
    outcomes = run_plan(plan, out, resume=resume, train_options=options, progress=say,
                        extra={"threads": options["threads"]}, jobs=jobs)
    eval_options = {k: options[k] for k in ("device", "data_root") if k in options}
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(options["threads"])  # the evaluations too (a run restores the caller's count)
    try:
        summary = module.summarize(plan, outcomes, eval_options)
    finally:
        torch.set_num_threads(before)
    if plan.seeds == 1:
        summary.verdict.insert(0, "One seed only: there is no spread over seeds to judge the differences against, so "
                                  "a difference below may be noise; use --seeds 3 or more.")
    command = command or (f"cnnzoo experiment {name} --data {data} --scale {scale} --seeds {seeds}"
                          + (f" --epochs {epochs}" if epochs else "") + f" --out {out}")
    files = write_summary(out, plan, summary, command)
    return ExperimentResult(out, plan, outcomes, summary, files)
