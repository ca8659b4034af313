"""`cnnzoo experiment`: its flags and its printing; the work is `cnnzoo.experiments.run_experiment`."""

from __future__ import annotations

import sys

from cnnzoo.cli import _count

EPILOG = """examples:
  cnnzoo experiment --list
  cnnzoo experiment degradation --data digits --out experiments/degradation
  cnnzoo experiment degradation --data digits --out experiments/degradation --resume
  cnnzoo experiment ensemble --data digits --seeds 3 --epochs 5
  cnnzoo experiment stochastic-depth --data cifar10 --scale paper --device cuda

Each run is an ordinary `cnnzoo train` run folder under OUT/runs/. --resume reuses the finished runs and continues
an interrupted one. The summary (OUT/summary.md, OUT/results.json, OUT/figure.png) gives mean ± std over seeds and
says in words whether the paper's effect appears. --scale small (the default) shrinks epochs and depths so that each
experiment finishes in 6 to 12 minutes on 2 idle CPU cores with the digits; summary.md lists what it shrank."""


def arguments(p) -> None:
    p.epilog = EPILOG
    p.add_argument("name", nargs="?", help="the experiment (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--data", help="dataset: digits (8x8, resized to 32x32), cifar10 (when on disk), fake, ...")
    p.add_argument("--scale", choices=["small", "paper"], default="small",
                   help="small: shrunk epochs and depths for a CPU; paper: the paper's setting (default small)")
    p.add_argument("--seeds", type=_count(1), default=3, metavar="N", help="seeds (independent repeats; default 3)")
    p.add_argument("--epochs", type=_count(1), metavar="E", help="epochs of every run (default: the scale's)")
    p.add_argument("--out", metavar="DIR", help="the experiment's folder (default experiments/NAME-DATA-SCALE)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment in --out: reuse finished runs, resume an interrupted one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=_count(1), metavar="N",
                   help="CPU threads of every run (default: the fastest of a few counts, measured once at the start; "
                        "the same for every run, kept on --resume)")
    p.add_argument("--jobs", type=_count(1), metavar="N",
                   help="runs trained at once, each in its own process with one thread (default: one per free CPU "
                        "core; 1 on a GPU and for stochastic-depth, whose wall times are a result)")
    p.add_argument("--data-root", metavar="DIR", help="where datasets live (default: $CNNZOO_DATA or "
                                                        "~/.cache/cnnzoo/data)")


def run(args) -> int:
    from cnnzoo.experiments import EXPERIMENTS, run_experiment
    from cnnzoo.experiments.runner import ExperimentStopped
    from cnnzoo.train.trainer import STOP_STATUS

    if args.list:
        if args.name:
            raise ValueError("--list takes no experiment name; use `cnnzoo experiment --list` alone")
        width = max(map(len, EXPERIMENTS))
        for name, module in EXPERIMENTS.items():
            print(f"{name:<{width}}  {module.WHAT} ({module.PAPER})")
        return 0
    if not args.name:
        raise ValueError(f"name an experiment ({', '.join(EXPERIMENTS)}), or pass --list")
    if not args.data:
        raise ValueError(f"--data is required, e.g. `cnnzoo experiment {args.name} --data digits`")
    options = {"device": args.device, "threads": args.threads}
    if args.data_root:
        options["data_root"] = args.data_root
    try:
        result = run_experiment(args.name, args.data, scale=args.scale, seeds=args.seeds, epochs=args.epochs,
                                out=args.out, resume=args.resume, train_options=options, jobs=args.jobs)
    except ExperimentStopped as stop:
        print(f"cnnzoo experiment: {stop}", file=sys.stderr)
        return STOP_STATUS.get(stop.reason, 1)
    print(result.summary.table)
    print()
    for line in result.summary.verdict:
        print(line)
    print()
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0
