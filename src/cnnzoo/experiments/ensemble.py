"""Ensembles: the error of the averaged softmax of N nets trained from different seeds, against N.

Krizhevsky, Sutskever, Hinton 2012, Sec. 6 and Table 2: averaging the predictions of 5 (7, with pre-training)
CNNs lowered ILSVRC-2012 top-5 error from 18.2% (one CNN) to 15.4% (the lecture's "7 CNN ensemble"). Here every
seed is one independent group of `members` nets (seeds g*members ... g*members + members - 1); the ensemble of N
is the group's first N members, so each N is measured once per group, with no choice of the best members. Each
member is its run's last.pt (the last epoch): best.pt is chosen on the test split and would flatter the result.
"""

from __future__ import annotations

import torch

from cnnzoo.experiments.runner import Plan, RunSpec, scaled, for_test
from cnnzoo.experiments.summary import Summary, markdown_table, mean_std, pm

NAME = "ensemble"
TITLE = "Ensembles: averaged-softmax error against the number of nets"
PAPER = "Krizhevsky et al. 2012, Sec. 6: AlexNet's 7-CNN ensemble"
WHAT = "N nets from different seeds; error of the averaged-softmax ensemble against N"
MODEL = "resnet20"
PAPER_EPOCHS = 164
SMALL_EPOCHS = 6
MEMBERS = {"small": 5, "paper": 7}


def plan(data: str, scale: str = "small", seeds: int = 3, epochs: int | None = None) -> Plan:
    settings, shrunk, epochs, recipe = scaled(data, scale, seeds, epochs, SMALL_EPOCHS, PAPER_EPOCHS)
    members = MEMBERS[scale]
    if scale == "small":
        shrunk = [f"{MODEL} for {epochs} epochs of the fast recipe (its paper: {PAPER_EPOCHS})",
                  f"{members} members per ensemble (AlexNet: 7)", *shrunk]
    runs = [RunSpec(MODEL, MODEL, group * members + k, settings) for group in range(seeds) for k in range(members)]
    return Plan(NAME, data, scale, seeds, epochs, recipe, runs, shrunk,
                options={"members": members, "model": MODEL})


def summarize(plan: Plan, outcomes, evaluate=None) -> Summary:
    from cnnzoo.train.evaluate import errors, predict

    members = plan.options["members"]
    options = evaluate or {}
    groups = [outcomes[g * members:(g + 1) * members] for g in range(plan.seeds)]
    by_n = {n: [] for n in range(1, members + 1)}  # ensemble top-1 error per group
    singles = []  # each member alone
    for group in groups:
        total, labels = None, None
        for n, outcome in enumerate(group, start=1):  # each member's softmax once; the ensemble of n is their mean
            _, model, loader = for_test(outcome.folder / "last.pt", plan.data, device=options.get("device", "auto"),
                                        data_root=options.get("data_root"))
            probs, y = predict(model, loader)
            if labels is not None and not torch.equal(labels, y):
                raise ValueError("the members saw the test images in different orders; cannot ensemble them")
            labels, total = y, probs if total is None else total + probs
            singles.append(100 * errors(probs, y).top1)
            by_n[n].append(100 * errors(total / n, y).top1)
    rows = [[n, pm(by_n[n]), f"{mean_std(by_n[1])[0] - mean_std(by_n[n])[0]:+.2f}"] for n in by_n]
    table = markdown_table(["nets N", f"ensemble test top-1 error % (mean ± std over {plan.seeds} groups)",
                            "points below N = 1"], rows)
    first, last = mean_std(by_n[1]), mean_std(by_n[members])
    gain = first[0] - last[0]
    spread = (first[1] ** 2 + last[1] ** 2) ** 0.5
    verdict = [f"One net: {first[0]:.2f}% test error; an ensemble of {members}: {last[0]:.2f}% "
               f"({gain:+.2f} points lower; spread over groups {spread:.2f}). Every single member: "
               f"{pm(singles)}% over {len(singles)} nets. One test image is {100 / len(labels):.2f} points of "
               f"error here."]
    if gain > spread:
        verdict.append("The paper's trend appears: averaging the softmax of more nets lowers the error, as AlexNet's "
                       "7-CNN ensemble lowered top-5 error from 18.2% to 15.4%.")
    elif gain > 0:
        verdict.append(f"The ensemble of {members} is below one net on average, but within the spread over groups: "
                       f"this run does not show the trend clearly.")
    else:
        verdict.append("The paper's trend does not appear in this run: the ensemble is not better than one net.")
    results = {"by_n": {str(n): v for n, v in by_n.items()}, "members_alone": singles, "gain": gain, "spread": spread,
               "test_images": len(labels)}

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        ns = list(by_n)
        means = [mean_std(by_n[n])[0] for n in ns]
        stds = [mean_std(by_n[n])[1] for n in ns]
        ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label="ensemble (mean ± std over groups)")
        ax.scatter([1] * len(singles), singles, s=12, color="grey", alpha=0.6, label="each net alone")
        ax.set_xticks(ns)
        ax.set_xlabel("nets in the ensemble (N)")
        ax.set_ylabel("test top-1 error (%)")
        ax.set_title(f"{plan.options['model']} ensembles on {plan.data} ({plan.scale} scale, {plan.epochs} epochs)",
                     fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    return Summary(TITLE, table, verdict, results, draw)
