"""The fast inference path against torchvision eager and ONNX Runtime, measured in one run on this machine.

    .venv/bin/python benchmarks/fast_path.py [--models resnet50,...] [--batch 32] [--rounds 5] [--threads N]

For each net (cnnzoo's torchvision-compatible twin, loaded with the same weights as torchvision's own model,
which is initialised by torchvision: no pretrained weights can be downloaded here) it times, interleaved round by
round so that a busy core slows every path alike: torchvision eager float32 (the baseline), cnnzoo eager float32,
ONNX Runtime (the `export` extra), `cnnzoo.optimize` in float32 and, where the CPU has AMX or AVX-512-BF16, in
bfloat16. The fast paths run in a process of their own: `optimize` keeps freed memory in its process
(cnnzoo.deploy.memory), which would speed up the baseline too if it ran there; the baseline runs as a user's
script runs it, with the C library's defaults. It prints images/s, the ratios to the baseline and to ONNX Runtime, and achieved GFLOP/s as a fraction
of a matmul ceiling measured in the same run for the same dtype (FLOPs from cnnzoo's profiler). Then ResNet-50's
batch-1 latency, and what bfloat16 changes in ResNet-50's answers on the real-image set (scikit-learn's two
photographs and digits, cut and resized: `cnnzoo.deploy.images`).

Goals (issue "Speed on the user's machine"): fast path float32 at least ONNX Runtime's speed on every net (stretch
1.2x); bfloat16 ResNet-50 at batch 32 at least 8x torchvision eager float32, top-1 agreement at least 99%; batch-1
latency at least 1.5x torchvision eager on ResNet-50; cnnzoo eager at least 0.98x torchvision eager. Ctrl-C or
SIGTERM stops it with the rows measured so far, marked partial (exit status 130 or 143).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch
import torchvision

import cnnzoo
from cnnzoo.deploy import bf16_support, optimize
from cnnzoo.deploy.bench import environment, matmul_ceiling
from cnnzoo.deploy.images import precision_drift, real_images
from stopping import Stop, Stopped

# cnnzoo name, torchvision builder: the ten nets (GoogLeNet as its batch-norm twin)
NETS = {
    "alexnet_owt": "alexnet", "vgg16": "vgg16", "googlenet_bn": "googlenet", "resnet18": "resnet18",
    "resnet50_v1_5": "resnet50", "resnet152_v1_5": "resnet152", "densenet121": "densenet121",
    "squeezenet1_1": "squeezenet1_1", "resnext50_32x4d": "resnext50_32x4d", "wide_resnet50_2": "wide_resnet50_2",
}


def cpu_description() -> str:
    env = environment(threads=torch.get_num_threads())
    return f"{env['cpu']} ({', '.join(env['isa']) or 'no AVX2'}), {env['threads']} thread(s)"


def fast_paths(model, bf16: bool, *, compiled: bool) -> dict:
    """cnnzoo's fast paths of `model`: float32, and bfloat16 where the CPU has it; each also compiled on request."""
    dtypes = {"": None, "_bf16": torch.bfloat16} if bf16 else {"": None}
    paths = {}
    for suffix, dtype in dtypes.items():
        paths[f"fast{suffix}"] = optimize(model, dtype=dtype)
        if compiled:
            paths[f"compiled{suffix}"] = optimize(model, dtype=dtype, compile=True)
    return paths


def twins(ours: str, theirs: str):
    """cnnzoo's twin and torchvision's model with the same weights; the same in every process (seeded)."""
    torch.manual_seed(sum(map(ord, ours)))
    tv = getattr(torchvision.models, theirs)(weights=None).eval()
    model = cnnzoo.create_model(ours).eval()
    model.load_state_dict(tv.state_dict())
    return model, tv


def batch(name: str, size: int) -> torch.Tensor:
    return torch.randn(size, *cnnzoo.model_card(name).input_size, generator=torch.Generator().manual_seed(size))


class FastPaths:
    """The fast paths, measured in a spawned process of their own, one round at a time when asked."""

    def __init__(self, threads: int, bf16: bool, compiled: bool):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(target=_fast_worker, args=(theirs, threads, bf16, compiled), daemon=True)
        self._process.start()
        self.ask("ready")  # its start-up (importing torch) is over before anything is timed

    def ask(self, *request):
        self._pipe.send(request)
        reply = self._pipe.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        self._process.kill()
        self._process.join()


def _fast_worker(pipe, threads: int, bf16: bool, compiled: bool) -> None:
    import signal

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)  # the parent stops the benchmark and then this process
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    paths, x = {}, None
    while True:
        request, *args = pipe.recv()
        try:
            if request == "ready":
                pipe.send(True)
            elif request == "load":  # name, batch size: build the paths and call each once (compiling, packing)
                name, size = args
                model, _ = twins(name, NETS[name])
                paths, x = fast_paths(model, bf16, compiled=compiled), batch(name, size)
                with torch.inference_mode():
                    for run in paths.values():
                        run(x)
                pipe.send(list(paths))
            elif request == "round":  # each path called once, timed
                times = {}
                with torch.inference_mode():
                    for path, run in paths.items():
                        t = time.perf_counter()
                        run(x)
                        times[path] = time.perf_counter() - t
                pipe.send(times)
            elif request == "drift":  # what bfloat16 changes in the answers on real images
                name, count = args
                model, _ = twins(name, NETS[name])
                pipe.send(precision_drift(model, paths.get("compiled_bf16", paths["fast_bf16"]),
                                          real_images(count, cnnzoo.model_card(name).input_size[-1])))
        except Exception as err:  # the parent reports it
            pipe.send(err)


def interleaved(paths: dict, x: torch.Tensor, rounds: int, fast: FastPaths) -> dict[str, float]:
    """Median seconds per call of each path, one call of every path per round (here, then the fast paths' process)
    after one warm-up call each."""
    with torch.inference_mode():
        for run in paths.values():
            run(x)
        times = {name: [] for name in paths}
        for _ in range(rounds):
            for name, run in paths.items():
                t = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - t)
            for name, seconds in fast.ask("round").items():
                times.setdefault(name, []).append(seconds)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(NETS), help="cnnzoo twins, comma-separated (default: ten)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each path (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    parser.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave the compiled fast paths out (each compiles for 10-60 s per net)")
    parser.add_argument("--drift-images", type=int, default=256, help="real images for bfloat16's drift")
    args = parser.parse_args()
    unknown = [m for m in args.models.split(",") if m not in NETS]
    if unknown:
        parser.error(f"no torchvision twin listed for {unknown}; choose from {', '.join(NETS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    warnings.filterwarnings("ignore")
    bf16, why = bf16_support("cpu")

    print(f"CPU: {cpu_description()}; torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(f"bfloat16: {'yes' if bf16 else 'no'} ({why}); batch {args.batch}; median of {args.rounds} interleaved calls")
    stop = Stop()
    rows, latency, drift = [], None, None
    fast = FastPaths(threads, bf16, compiled=not args.no_compile)
    try:
        peak32 = matmul_ceiling("float32", threads=threads)
        peak16 = matmul_ceiling("bfloat16", threads=threads) if bf16 else None
        print(f"matmul ceiling: float32 {peak32:.0f} GFLOP/s" + (f", bfloat16 {peak16:.0f} GFLOP/s" if bf16 else ""))
        for name in args.models.split(","):
            model, tv = twins(name, NETS[name])
            x = batch(name, args.batch)
            paths = {"torchvision": tv, "eager": model}
            if not args.no_onnx:
                from cnnzoo.deploy.onnx import ort_runner

                paths["onnxruntime"] = ort_runner(model, x, threads=threads)
            fast.ask("load", name, args.batch)
            seconds = interleaved(paths, x, args.rounds, fast)
            flops = cnnzoo.profile(name, batch_size=args.batch).flops
            rows.append((name, seconds, flops))
            print(_row(name, seconds, flops, peak32, peak16, args.batch), flush=True)
        if "resnet50_v1_5" in args.models.split(","):
            _, tv = twins("resnet50_v1_5", "resnet50")
            fast.ask("load", "resnet50_v1_5", 1)
            latency = interleaved({"torchvision": tv}, batch("resnet50_v1_5", 1), args.rounds * 4, fast)
            if bf16:
                drift = fast.ask("drift", "resnet50_v1_5", args.drift_images)
    except Stopped:
        pass
    finally:
        fast.close()
    stop.done()

    print()
    print(_goals(rows, latency, drift, bf16, args.no_onnx))
    if stop.partial:
        print(f"PARTIAL: stopped by {stop.signal} after {len(rows)} of {len(args.models.split(','))} nets")
    return stop.status


def _row(name, s, flops, peak32, peak16, batch) -> str:
    parts = [f"{name:16s} torchvision {batch / s['torchvision']:7.1f} img/s"]
    for path, seconds in s.items():
        if path == "torchvision":
            continue
        peak = peak16 if path.endswith("bf16") else peak32
        parts.append(f"{path} {s['torchvision'] / seconds:.2f}x ({flops / seconds / 1e9 / peak:.0%})")
    return "  ".join(parts)


def _best(seconds: dict, dtype: str) -> tuple[str, float]:
    """The fastest cnnzoo fast path of a dtype ("" float32, "bf16"): (path, seconds)."""
    paths = [p for p in seconds if p.startswith(("fast", "compiled")) and p.endswith("bf16") == (dtype == "bf16")]
    path = min(paths, key=seconds.get)
    return path, seconds[path]


def _goals(rows, latency, drift, bf16, no_onnx) -> str:
    lines = ["goals (percentages: achieved GFLOP/s as a fraction of the matmul ceiling of the same dtype):"]
    if rows and not no_onnx:
        ratios = [(s["onnxruntime"] / _best(s, "")[1], name, _best(s, "")[0]) for name, s, _ in rows]
        ratio, name, path = min(ratios)
        eager = min(s["onnxruntime"] / s["fast"] for _, s, _ in rows)
        lines.append(f"  fast path float32 >= ONNX Runtime on every net: lowest {ratio:.2f}x ({name}, {path}) -> "
                     f"{'met' if ratio >= 1 else 'not met'}{' (stretch 1.2x met)' if ratio >= 1.2 else ''}; "
                     f"uncompiled fast path lowest {eager:.2f}x")
    if rows:
        ratio, name = min((s["torchvision"] / s["eager"], name) for name, s, _ in rows)
        lines.append(f"  cnnzoo eager >= 0.98x torchvision eager: lowest {ratio:.3f}x ({name}) -> "
                     f"{'met' if ratio >= 0.98 else 'not met'}")
    r50 = next((s for name, s, _ in rows if name == "resnet50_v1_5"), None)
    if r50 and bf16:
        path, seconds = _best(r50, "bf16")
        ratio = r50["torchvision"] / seconds
        lines.append(f"  bfloat16 ResNet-50 >= 8x torchvision eager float32: {ratio:.2f}x ({path}; uncompiled "
                     f"{r50['torchvision'] / r50['fast_bf16']:.2f}x) -> {'met' if ratio >= 8 else 'not met'}")
    elif not bf16:
        lines.append("  bfloat16 goal: does not apply (this CPU has no native bfloat16)")
    if drift is not None:
        lines.append(f"  bfloat16 top-1 agreement with float32 on {drift.images} real images >= 99%: "
                     f"{drift.top1_agreement:.1%} (largest logit change {drift.max_rel:.2%} of the logits' scale) -> "
                     f"{'met' if drift.top1_agreement >= 0.99 else 'not met'}")
    if latency is not None:
        path, seconds = _best(latency, "")
        ratio = latency["torchvision"] / seconds
        text = (f"  batch-1 latency, ResNet-50, fast >= 1.5x torchvision eager: {latency['torchvision'] * 1e3:.1f} ms "
                f"-> {seconds * 1e3:.1f} ms ({path}), {ratio:.2f}x -> {'met' if ratio >= 1.5 else 'not met'}")
        others = [f"{p} {latency[p] * 1e3:.1f} ms" for p in latency if p not in ("torchvision", path)]
        lines.append(text + (f"; {', '.join(others)}" if others else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
