"""FractalNet's columns: trained with drop-path, every column alone is a good net; trained without, it is not.

Larsson, Maire, Shakhnarovich 2016, "FractalNet: Ultra-Deep Neural Networks without Residuals", arXiv:1605.07648:
Table 3 (the columns of a net trained with and without drop-path, each evaluated alone) and Table 1 (4.60% for
FractalNet-20 on CIFAR-10+, 4.68% for its deepest column alone). Drop-path, with global drop-path on half the
mini-batches, trains each column as a net by itself; without it the columns co-adapt. Here `fractalnet20`
(C = 3 columns) is trained twice per seed, with the paper's drop-path (local 15%, global on 50% of the
mini-batches) and with both rates 0, and each column is then evaluated alone (`FractalNet.column`) beside the whole
net, on the test split, from the run's last.pt.
"""

from __future__ import annotations

import json

from cnnzoo.experiments.runner import Plan, RunSpec, scaled, for_test
from cnnzoo.experiments.summary import Summary, markdown_table, mean_std, pm

NAME = "fractal-columns"
TITLE = "FractalNet's columns alone, trained with and without drop-path"
PAPER = "Larsson et al. 2016, Table 3"
WHAT = "FractalNet trained with and without drop-path; every column evaluated alone beside the whole net"
MODEL = "fractalnet20"
ARMS = (("drop-path", ()), ("no drop-path", ("drop_path=0", "global_drop_path=0")))
PAPER_EPOCHS = 400
SMALL_EPOCHS = 2


def plan(data: str, scale: str = "small", seeds: int = 3, epochs: int | None = None) -> Plan:
    settings, shrunk, epochs, recipe = scaled(data, scale, seeds, epochs, SMALL_EPOCHS, PAPER_EPOCHS)
    if scale == "small":
        shrunk = [f"{epochs} epochs of the fast recipe (cosine lr from 0.02) instead of the paper's "
                  f"{PAPER_EPOCHS}", "FractalNet-20 at full width (the registry has no narrower one)", *shrunk]
    runs = [RunSpec(arm, MODEL, seed, settings + extra) for seed in range(seeds) for arm, extra in ARMS]
    return Plan(NAME, data, scale, seeds, epochs, recipe, runs, shrunk, options={"model": MODEL})


def column_errors(path, data: str, *, device: str = "auto", data_root: str | None = None) -> dict:
    """Test top-1 error (%) of a FractalNet checkpoint's whole net ("all") and of each column alone ("1".."C",
    1 = the shallowest), on `data`'s test split prepared as the run was trained."""
    from cnnzoo.train.evaluate import errors, predict

    payload, model, loader = for_test(path, data, device=device, data_root=data_root)
    if not hasattr(model, "num_columns"):
        raise ValueError(f"{path} holds {payload['model']}, not a FractalNet; its columns cannot be evaluated alone")
    found = {}
    for column in (None, *range(model.num_columns)):
        model.column = column
        loader.set_position(0, 0)
        probs, labels = predict(model, loader)
        found["all" if column is None else str(column + 1)] = 100 * errors(probs, labels).top1
    model.column = None
    return found


def summarize(plan: Plan, outcomes, evaluate=None) -> Summary:
    options = evaluate or {}
    found = {arm: [] for arm, _ in ARMS}
    for o in outcomes:
        found[o.spec.arm].append(column_errors(o.folder / "last.pt", plan.data, device=options.get("device", "auto"),
                                               data_root=options.get("data_root")))
    keys = list(found[ARMS[0][0]][0])  # "all", "1", ..., "C"
    columns = [k for k in keys if k != "all"]
    name = {"all": "whole net", "1": "column 1 (shallowest)", columns[-1]: f"column {columns[-1]} (deepest)"}
    rows = [[name.get(k, f"column {k}")] + [pm([e[k] for e in found[arm]]) for arm, _ in ARMS] for k in keys]
    table = markdown_table(["evaluated", *(f"test error %, trained with {arm}" for arm, _ in ARMS)], rows)
    deepest = columns[-1]

    def gap(arm, key):  # a column alone minus the whole net, mean over seeds
        return mean_std([e[key] - e["all"] for e in found[arm]])

    with_dp, without = gap("drop-path", deepest), gap("no drop-path", deepest)
    worst_dp = max(mean_std([e[k] - e["all"] for e in found["drop-path"]])[0] for k in columns)
    worst_no = max(mean_std([e[k] - e["all"] for e in found["no drop-path"]])[0] for k in columns)
    verdict = [f"Deepest column alone minus the whole net: {with_dp[0]:+.2f} ± {with_dp[1]:.2f} points with "
               f"drop-path, {without[0]:+.2f} ± {without[1]:.2f} without (the paper's Table 1: 4.68% against 4.60% "
               f"with drop-path on CIFAR-10+).",
               f"The worst column alone, minus the whole net: {worst_dp:+.2f} points with drop-path, {worst_no:+.2f} "
               f"without."]
    classes = len(json.loads((outcomes[0].folder / "config.json").read_text())["classes"])
    chance = 100 * (1 - 1 / classes)
    whole = {arm: mean_std([e["all"] for e in found[arm]])[0] for arm, _ in ARMS}
    if all(w > 0.75 * chance for w in whole.values()):
        best = min(columns, key=lambda k: mean_std([e[k] for e in found["drop-path"]])[0])
        verdict.append(f"No conclusion: the whole nets have not learnt yet ({whole['drop-path']:.1f}% and "
                       f"{whole['no drop-path']:.1f}% test error; guessing gives {chance:.0f}%), so a column "
                       f"alone cannot be compared with them. The best column alone of the drop-path nets (column "
                       f"{best}, {pm([e[best] for e in found['drop-path']])}%) has learnt more than any whole net: "
                       f"drop-path trains single columns by themselves from the first step."
                       + (f" The paper trains {PAPER_EPOCHS} epochs." if plan.scale == "small" else ""))
    elif worst_dp < worst_no - max(with_dp[1], without[1]) and with_dp[0] < without[0]:
        verdict.append("The paper's effect appears: with drop-path the columns alone stay close to the whole net; "
                       "without it they fall further behind.")
    else:
        verdict.append("The paper's effect does not appear clearly in this run: the columns of the net trained "
                       "without drop-path are not clearly worse alone than those of the net trained with it"
                       + (f" (after only {plan.epochs} epochs)." if plan.scale == "small" else "."))
    results = {"chance_error": chance, "errors": found,
               "deepest_minus_whole": {"drop-path": with_dp, "no drop-path": without},
               "worst_column_minus_whole": {"drop-path": worst_dp, "no drop-path": worst_no}}

    def draw(plt):
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.38
        for i, ((arm, _), colour) in enumerate(zip(ARMS, ("tab:green", "tab:grey"))):
            means = [mean_std([e[k] for e in found[arm]])[0] for k in keys]
            stds = [mean_std([e[k] for e in found[arm]])[1] for k in keys]
            xs = [j + (i - 0.5) * width for j in range(len(keys))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, color=colour, label=f"trained with {arm}")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(["whole net", *(f"column {k}" for k in columns)])
        ax.set_ylabel("test top-1 error (%)")
        ax.set_title(f"{plan.options['model']} on {plan.data} ({plan.scale} scale, {plan.epochs} epochs, mean of "
                     f"{plan.seeds} seeds; cf. Larsson et al. Table 3)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        return fig

    return Summary(TITLE, table, verdict, results, draw)
