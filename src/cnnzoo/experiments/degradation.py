"""The degradation problem: deeper plain nets reach a higher training error; residual nets do not.

He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385: Fig. 1 (plain-20 and
plain-56 on CIFAR-10, training and test error) and Fig. 6 (plain and residual nets of 20 to 110 layers). The
lecture: "the deeper model performs worse, but it's not caused by overfitting", since the training error is higher
too. The paper's CIFAR-10 setting is the `paper` recipe of the CIFAR ResNets (164 epochs, lr 0.1 divided by 10 at
32k and 48k iterations, batch 128).
"""

from __future__ import annotations

from cnnzoo.experiments.runner import Plan, RunSpec, scaled
from cnnzoo.experiments.summary import Summary, curve, markdown_table, mean_std, pm
from cnnzoo.words import plural

NAME = "degradation"
TITLE = "Degradation: plain-20/56 against ResNet-20/56"
PAPER = "He et al. 2015, Fig. 1 and Fig. 6"
WHAT = "plain-20 and plain-56 against ResNet-20 and ResNet-56: training and test error per epoch"
ARMS = ("plain20", "plain56", "resnet20", "resnet56")  # the arm is the registered model
PAPER_EPOCHS = 164
SMALL_EPOCHS = 6


def plan(data: str, scale: str = "small", seeds: int = 3, epochs: int | None = None) -> Plan:
    settings, shrunk, epochs, recipe = scaled(data, scale, seeds, epochs, SMALL_EPOCHS, PAPER_EPOCHS)
    if scale == "small":
        shrunk = [f"{epochs} epochs of the fast recipe (cosine lr from 0.05) instead of the paper's "
                  f"{PAPER_EPOCHS}", "depths 20 and 56 kept", *shrunk]
    runs = [RunSpec(arm, arm, seed, settings) for seed in range(seeds) for arm in ARMS]
    return Plan(NAME, data, scale, seeds, epochs, recipe, runs, shrunk)


def summarize(plan: Plan, outcomes, evaluate=None) -> Summary:
    arms = {arm: [o.history for o in outcomes if o.spec.arm == arm] for arm in ARMS}
    final = {arm: {"train_err": [h[-1]["train_top1_err"] for h in hs], "test_err": [h[-1]["val_top1_err"] for h in hs],
                   "best_test_err": [min(r["val_top1_err"] for r in h) for h in hs]} for arm, hs in arms.items()}
    rows = [[arm, pm(final[arm]["train_err"]), pm(final[arm]["test_err"]), pm(final[arm]["best_test_err"])]
            for arm in ARMS]
    table = markdown_table(["net", "training error % (last epoch)", "test error % (last epoch)",
                            "lowest test error %"], rows)
    gaps, verdict = {}, []
    for family in ("plain", "resnet"):
        deep = final[f"{family}56"]["train_err"]
        shallow = final[f"{family}20"]["train_err"]
        gap = mean_std(deep)[0] - mean_std(shallow)[0]
        noise = (mean_std(deep)[1] ** 2 + mean_std(shallow)[1] ** 2) ** 0.5  # spread of the gap over seeds
        gaps[family] = {"train_err_gap": gap, "spread": noise}
    plain, res = gaps["plain"], gaps["resnet"]
    name = {"plain": "plain", "resnet": "ResNet"}
    for family, g in gaps.items():
        verdict.append(f"{name[family]}-56 minus {name[family]}-20, training error at the end: "
                       f"{g['train_err_gap']:+.2f} "
                       f"points (seed spread of the gap {g['spread']:.2f}).")
    degraded = plain["train_err_gap"] > plain["spread"]
    fixed = res["train_err_gap"] < plain["train_err_gap"] - (plain["spread"] ** 2 + res["spread"] ** 2) ** 0.5
    if degraded and res["train_err_gap"] <= res["spread"]:
        verdict.append("The paper's effect appears: the deeper plain net ends with a higher training error than the "
                       "shallower one (not overfitting: it fits the training set worse), while the deeper ResNet is "
                       "no worse than the shallower" + (" and even better." if res["train_err_gap"] < -res["spread"]
                                                         else "."))
    elif degraded:
        verdict.append("Half of the effect appears: the deeper plain net trains worse than the shallower, but the "
                       "deeper ResNet also ends above ResNet-20" +
                       (", though by less than the plain nets." if fixed else "."))
    else:
        verdict.append("The paper's effect does not appear in this run: plain-56 does not end with a training error "
                       "above plain-20's by more than the spread over seeds.")
    if plan.scale == "small":
        verdict.append(f"This is a small-scale run ({plural(plan.epochs, 'epoch')} on {plan.data}); the paper trains "
                       f"{PAPER_EPOCHS} epochs on CIFAR-10, where the gaps are measured at convergence.")
    results = {"final": final, "gaps": gaps, "curves": {
        arm: {key: curve(hs, key)[1] for key in ("train_top1_err", "val_top1_err")} for arm, hs in arms.items()},
        "epochs": curve(arms[ARMS[0]], "train_top1_err")[0]}

    def draw(plt):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, family, label in zip(axes, ("plain", "resnet"), ("plain", "ResNet")):
            for depth, colour in (("20", "tab:orange"), ("56", "tab:red")):
                arm = family + depth
                epochs, train = curve(arms[arm], "train_top1_err")
                _, test = curve(arms[arm], "val_top1_err")
                ax.plot(epochs, train, "--", color=colour, linewidth=1, marker=".", label=f"{label}-{depth} training")
                ax.plot(epochs, test, "-", color=colour, linewidth=2, marker=".", label=f"{label}-{depth} test")
            ax.set_title("plain nets" if family == "plain" else "residual nets")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("top-1 error (%)")
        fig.suptitle(f"Degradation on {plan.data} ({plan.scale} scale, mean of {plan.seeds} seeds; "
                     f"dashed: training, bold: test; cf. He et al. Fig. 6)", fontsize=10)
        fig.tight_layout()
        return fig

    return Summary(TITLE, table, verdict, results, draw)
