"""Stochastic depth against constant depth: error curves and wall time per epoch.

Huang, Sun, Liu, Sedra, Weinberger 2016, "Deep Networks with Stochastic Depth", arXiv:1603.09382: Fig. 3 (test
error and training loss of the 110-layer ResNet on CIFAR-10, constant depth against stochastic depth with linear
decay to p_L = 0.5) and Sec. 4 (shorter training: with p_L = 0.5 the expected depth is 3/4 of the net's residual
blocks, so an epoch can take up to about 25% less time; 6.41% -> 5.25% test error on CIFAR-10+). Both arms are the
same net and the same recipe; only `survival_prob` differs (1.0 = constant depth), and every run uses the same
thread count so the times compare.
"""

from __future__ import annotations

from cnnzoo.experiments.runner import Plan, RunSpec, scaled
from cnnzoo.experiments.summary import Summary, curve, markdown_table, mean_std, pm

NAME = "stochastic-depth"
TIMED = True  # wall time per epoch is one of its results: its runs train one at a time unless --jobs says otherwise
TITLE = "Stochastic depth (p_L = 0.5) against constant depth"
PAPER = "Huang et al. 2016, Fig. 3 and Sec. 4"
WHAT = "ResNet-110 with constant depth against stochastic depth (p_L = 0.5): error curves and wall time per epoch"
ARMS = (("constant depth", 1.0), ("stochastic depth", 0.5))  # (arm, survival probability of the last block)
MODEL = {"paper": "resnet110_sd", "small": "resnet56"}
PAPER_EPOCHS = 500
SMALL_EPOCHS = 10


def plan(data: str, scale: str = "small", seeds: int = 3, epochs: int | None = None) -> Plan:
    settings, shrunk, epochs, recipe = scaled(data, scale, seeds, epochs, SMALL_EPOCHS, PAPER_EPOCHS)
    model = MODEL[scale]
    if scale == "small":
        shrunk = [f"ResNet-56 ({model}) instead of ResNet-110", f"{epochs} epochs of the fast recipe instead of "
                  f"the paper's {PAPER_EPOCHS}", *shrunk]
    runs = [RunSpec(arm, model, seed, settings + (f"survival_prob={p}",)) for seed in range(seeds) for arm, p in ARMS]
    return Plan(NAME, data, scale, seeds, epochs, recipe, runs, shrunk, options={"model": model})


def summarize(plan: Plan, outcomes, evaluate=None) -> Summary:
    arms = {arm: [o.history for o in outcomes if o.spec.arm == arm] for arm, _ in ARMS}
    final = {arm: {"train_err": [h[-1]["train_top1_err"] for h in hs], "test_err": [h[-1]["val_top1_err"] for h in hs],
                   "seconds_per_epoch": [mean_std([r["seconds"] for r in h])[0] for h in hs]}
             for arm, hs in arms.items()}
    rows = [[arm, pm(f["train_err"]), pm(f["test_err"]), pm(f["seconds_per_epoch"], 1)] for arm, f in final.items()]
    table = markdown_table(["training", "training error % (last epoch)", "test error % (last epoch)",
                            "training seconds per epoch"], rows)
    const, sd = final["constant depth"], final["stochastic depth"]
    saved = 1 - mean_std(sd["seconds_per_epoch"])[0] / mean_std(const["seconds_per_epoch"])[0]
    err_gap = mean_std(sd["test_err"])[0] - mean_std(const["test_err"])[0]
    err_spread = (mean_std(sd["test_err"])[1] ** 2 + mean_std(const["test_err"])[1] ** 2) ** 0.5
    verdict = [f"Training time per epoch: stochastic depth saves {100 * saved:.0f}% (with the linear decay to p_L = "
               f"0.5 a quarter of the residual blocks is skipped on average, so at most about 25%).",
               f"Test error at the end: stochastic depth {err_gap:+.2f} points against constant depth (spread over "
               f"seeds {err_spread:.2f}; the paper: 5.25% against 6.41% on CIFAR-10+ after {PAPER_EPOCHS} epochs)."]
    faster = saved > 0.1
    better = err_gap < -err_spread
    if faster and better:
        verdict.append("Both of the paper's effects appear: shorter epochs and a lower test error with the full net "
                       "at test time.")
    elif faster:
        verdict.append("The time saving appears; the lower test error does not"
                       + (" (stochastic depth ends higher)" if err_gap > 0 else " (not beyond the spread over seeds)")
                       + (f". The paper's gain is measured after {PAPER_EPOCHS} epochs, where dropping blocks acts as "
                          f"a regulariser; {plan.epochs} epochs are far from that." if plan.scale == "small" else "."))
    else:
        verdict.append("The paper's time saving does not appear in this run.")
    results = {"final": final, "time_saved": saved, "test_err_gap": err_gap, "test_err_spread": err_spread,
               "curves": {arm: {k: curve(hs, k)[1] for k in ("train_top1_err", "val_top1_err", "train_loss")}
                          for arm, hs in arms.items()}}

    def draw(plt):
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
        for (arm, _), colour in zip(ARMS, ("tab:blue", "tab:red")):
            epochs, test = curve(arms[arm], "val_top1_err")
            _, train = curve(arms[arm], "train_top1_err")
            left.plot(epochs, test, "-", color=colour, linewidth=2, label=f"{arm}: test error")
            left.plot(epochs, train, "--", color=colour, linewidth=1, label=f"{arm}: training error")
        left.set_xlabel("epoch")
        left.set_ylabel("top-1 error (%)")
        left.legend(fontsize=8)
        left.grid(alpha=0.3)
        names = [arm for arm, _ in ARMS]
        means = [mean_std(final[a]["seconds_per_epoch"])[0] for a in names]
        stds = [mean_std(final[a]["seconds_per_epoch"])[1] for a in names]
        right.bar(names, means, yerr=stds, color=["tab:blue", "tab:red"], capsize=4)
        right.set_ylabel("training seconds per epoch")
        right.set_title(f"{100 * saved:.0f}% less time per epoch", fontsize=10)
        fig.suptitle(f"{plan.options['model']} on {plan.data} ({plan.scale} scale, mean of {plan.seeds} seeds; "
                     f"cf. Huang et al. Fig. 3)", fontsize=10)
        fig.tight_layout()
        return fig

    return Summary(TITLE, table, verdict, results, draw)
