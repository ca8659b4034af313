"""Export every registered model (or those a pattern names) to ONNX and print one row each: the exporter, its time,
the file size and the difference of ONNX Runtime's logits from eager PyTorch's.

    pip install -e '.[export]'
    python benchmarks/export_check.py                          # every model, at its native input, exporter auto
    python benchmarks/export_check.py 'resnet*' --exporter torchscript --exporter dynamo --threads 1

This is the whole-registry check that the test suite, within its time budget, runs only for some models
(tests/test_export.py). Each model is exported at its native input, batch 1 (with --dynamic-batch: a free batch
size, compared at batch 3), into a temporary folder. A model that fails is a row with its reason; the exit status
is 1 when any row is not ok.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="shell-style model name patterns (default: every model)")
    parser.add_argument("--exporter", action="append", choices=["auto", "dynamo", "torchscript"],
                        help="repeat to compare exporters (default: auto)")
    parser.add_argument("--dynamic-batch", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default torch's)")
    args = parser.parse_args(argv)

    import torch

    import cnnzoo
    from cnnzoo.deploy.onnx import export_onnx

    if args.threads:
        torch.set_num_threads(args.threads)
    names = sorted({n for p in (args.patterns or [None]) for n in cnnzoo.list_models(p)},
                   key=cnnzoo.list_models().index)
    if not names:
        print(f"no model matches {' '.join(args.patterns)}", file=sys.stderr)
        return 2
    exporters = args.exporter or ["auto"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); relative difference = max |ONNX Runtime "
          f"- eager| / max |eager logit|, tolerance 1e-4")
    print(f"{'model':<28} {'exporter':<12} {'export s':>8} {'total s':>8} {'MB':>7} {'rel diff':>9}  verdict")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="cnnzoo-export-check-") as folder:
        for name in names:
            torch.manual_seed(0)
            model = cnnzoo.create_model(name).eval()
            for exporter in exporters:
                started = time.perf_counter()
                try:
                    r = export_onnx(model, Path(folder) / f"{name}.onnx", exporter=exporter,
                                    dynamic_batch=args.dynamic_batch)
                except (ValueError, RuntimeError) as err:
                    failed += 1
                    print(f"{name:<28} {exporter:<12} {'':>8} {time.perf_counter() - started:>8.2f} {'':>7} "
                          f"{'':>9}  failed: {err}", flush=True)
                    continue
                total = time.perf_counter() - started
                used = r.exporter + ("*" if r.fallback_reason else "")
                verdict = "ok" if r.ok else "BEYOND tolerance"
                if r.fallback_reason:
                    verdict += f" (* dynamo failed: {r.fallback_reason})"
                failed += not r.ok
                print(f"{name:<28} {used:<12} {r.export_s:>8.2f} {total:>8.2f} {r.file_bytes / 1e6:>7.1f} "
                      f"{r.rel_diff:>9.1e}  {verdict}", flush=True)
                Path(r.path).unlink(missing_ok=True)
    print(f"{failed} of {len(names) * len(exporters)} not ok" if failed else "all ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
