"""Training-step time with and without stochastic depth, measured beside the saving the survival probabilities predict.

Huang et al. 2016 (arXiv:1603.09382), Sec. 3: a dropped block costs no forward or backward computation, so with
p_l decaying linearly to p_L = 0.5 over the 54 blocks of the 110-layer CIFAR ResNet, E(blocks run) = (3L - 1) / 4
~ 40 and "approximately 25% of training time could be saved"; their Table 2 measures 20h42m -> 15h7m on CIFAR-10+.

The two networks are built once, with the same weights, and timed in one run on one device: one training step
(forward, cross-entropy, backward, SGD step) of each, alternately, the order swapped every round, after warm-up
steps. The expectation is computed from the built network: each residual branch's multiply-adds (counted on the
meta device) weighted by its survival probability, against the whole network's.

    python benchmarks/stochastic_depth.py --model resnet110 --batch 128 --steps 20 --survival 0.5 --warmup 3

On a CPU shared with other work, --threads 1 avoids the stalls of threads waiting for each other. Ctrl-C or
SIGTERM stops it at once and prints the rounds timed so far, marked partial (exit status 130 or 143).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.layers import StochasticDepth
from stopping import Stop, Stopped


def residual_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks that stochastic depth can drop, in order (modules holding a StochasticDepth)."""
    return [m for m in model.modules() if isinstance(getattr(m, "stochastic_depth", None), StochasticDepth)]


def expected_compute(name: str, survival: float, input_size: tuple[int, int, int]) -> dict:
    """Multiply-adds per image of the whole net and of each residual branch, and what survival keeps of them."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name, survival_prob=survival).eval()
    blocks = residual_blocks(model)
    inputs: dict[torch.nn.Module, torch.Tensor] = {}
    hooks = [b.register_forward_pre_hook(lambda m, args: inputs.__setitem__(m, args[0])) for b in blocks]
    x = torch.empty(1, *input_size, device="meta")
    with torch.no_grad():
        model(x)  # records each block's input shape (the model's input check probes on meta first)
        for h in hooks:
            h.remove()
        total = FlopCounterMode(display=False)
        with total:
            model(x)
        branch_macs = []
        for block in blocks:
            counter = FlopCounterMode(display=False)
            with counter:
                block.branch(inputs[block])
            branch_macs.append(counter.get_total_flops() / 2)
    probs = [b.stochastic_depth.survival_prob for b in blocks]
    total_macs = total.get_total_flops() / 2
    kept = sum(p * m for p, m in zip(probs, branch_macs))
    return {
        "blocks": len(blocks),
        "probs": probs,
        "mean_p": statistics.fmean(probs),
        "branch_share": sum(branch_macs) / total_macs,
        "step_kept": (total_macs - sum(branch_macs) + kept) / total_macs,
    }


def count_kept_blocks(model: torch.nn.Module) -> list[int]:
    """Wrap each block's keep() so the number of blocks run per forward is recorded (one entry per step)."""
    record = [0]
    for block in residual_blocks(model):
        draw = block.stochastic_depth.keep

        def keep(draw=draw):
            kept = draw()
            record[-1] += kept
            return kept

        block.stochastic_depth.keep = keep
    return record


def build(args, device: torch.device, parser) -> tuple:
    """The two networks with the same weights, and one training step of each: (card, {label: step}, kept)."""
    try:
        card = cnnzoo.model_card(args.model)
        nets = {"constant depth": cnnzoo.create_model(args.model),
                "stochastic depth": cnnzoo.create_model(args.model, survival_prob=args.survival)}
    except (TypeError, ValueError) as error:  # unknown name, or a network without stochastic depth
        parser.error(str(error))
    nets["stochastic depth"].load_state_dict(nets["constant depth"].state_dict())  # same weights: same work
    kept = count_kept_blocks(nets["stochastic depth"])
    x = torch.randn(args.batch, *card.input_size, device=device)
    y = torch.randint(card.num_classes, (args.batch,), device=device)
    steps = {}
    for label, net in nets.items():
        net.to(device).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)

        def step(net=net, opt=opt) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - start) * 1e3

        steps[label] = step
    return card, steps, kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet110", help="a registered residual network with survival_prob")
    parser.add_argument("--batch", type=int, default=128, help="images per training step (the paper: 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per network")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per network first (at least 1)")
    parser.add_argument("--survival", type=float, default=0.5, help="p_L, the last block's survival probability")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.warmup < 1:
        # at least one warm-up step: the first forward at a new input size runs create_model's input check
        parser.error("--batch, --steps and --warmup must be at least 1")
    if not 0.0 < args.survival < 1.0:
        parser.error(f"--survival must be in (0, 1) to compare against 1.0, got {args.survival}")
    stop = Stop()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    times: dict[str, list[float]] = {"constant depth": [], "stochastic depth": []}  # ms per step
    kept = [0]
    try:
        card, steps, kept = build(args, device, parser)
        for _ in range(args.warmup):
            for step in steps.values():
                step()
        kept[:] = [0]
        for i in range(args.steps):
            order = list(steps) if i % 2 == 0 else list(reversed(steps))  # alternate who goes first
            for label in order:
                times[label].append(steps[label]())
                if label == "stochastic depth":
                    kept.append(0)
    except Stopped:
        pass
    stop.done()
    rounds = min(len(t) for t in times.values())  # a stop may leave one network a step ahead
    times = {label: t[:rounds] for label, t in times.items()}
    del kept[rounds:]  # the entry opened after the last step, or a stopped step's count
    console = Console()
    if stop.partial:
        console.print(stop.banner(f"{rounds} of {args.steps} timed rounds done"), markup=False, highlight=False)
    if not rounds:
        return stop.status

    expect = expected_compute(args.model, args.survival, card.input_size)
    base, sd = (statistics.median(times[k]) for k in ("constant depth", "stochastic depth"))
    console.print(f"[bold]{args.model}[/bold], stochastic depth p_L = {args.survival} (linear decay over "
                  f"{expect['blocks']} blocks): {rounds} timed training steps each after {args.warmup} warm-up, "
                  f"batch {args.batch}, {args.device}"
                  + (f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
                     if device.type == "cpu" else f" ({torch.cuda.get_device_name(device)})")
                  + f", torch {torch.__version__}, float32")

    timing = Table(title="Training step (forward, loss, backward, SGD)")
    timing.add_column("network")
    for col in ("median ms/step", "min", "max", "images/s"):
        timing.add_column(col, justify="right")
    for label, ms in times.items():
        timing.add_row(label, f"{statistics.median(ms):.1f}", f"{min(ms):.1f}", f"{max(ms):.1f}",
                       f"{args.batch / statistics.median(ms) * 1e3:.0f}")
    console.print(timing)

    saving = Table(title="Saving from stochastic depth")
    saving.add_column("quantity")
    saving.add_column("expected", justify="right")
    saving.add_column("measured", justify="right")
    saving.add_row("blocks run per step", f"{sum(expect['probs']):.1f} of {expect['blocks']}",
                   f"{statistics.fmean(kept):.1f} ({len(kept)} steps)")
    saving.add_row("branch compute kept, mean(p_l)", f"{expect['mean_p']:.1%}", "")
    saving.add_row("branches' share of multiply-adds", f"{expect['branch_share']:.1%}", "")
    paired = statistics.median(s / b for s, b in zip(times["stochastic depth"], times["constant depth"]))
    saving.add_row("step time saved (medians)", f"{1 - expect['step_kept']:.1%}", f"{1 - sd / base:.1%}")
    saving.add_row("step time saved (paired rounds)", "", f"{1 - paired:.1%}")
    saving.add_row("speed-up", f"{1 / expect['step_kept']:.2f}x", f"{base / sd:.2f}x")
    saving.add_row("paper: 110 layers, p_L = 0.5", "~25% (Sec. 3)", "27% (Table 2)")
    console.print(saving)
    console.print(
        "Expected: time proportional to multiply-adds, each branch weighted by its survival probability. Measured: "
        "1 - median(stochastic) / median(constant), and (paired) the median over rounds of the two adjacent steps' "
        "ratio, which a machine whose load drifts disturbs less. Table 2 of the paper: 20h42m -> 15h7m on CIFAR-10+. "
        "A dropped block still costs its shortcut, and the optimizer still updates its parameters (with zero "
        "gradients), so time saved falls short of compute saved.")
    return stop.status


if __name__ == "__main__":
    sys.exit(main())
