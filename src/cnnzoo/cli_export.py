"""`cnnzoo export`: its flags and its printing; the work is `cnnzoo.deploy.onnx.export_onnx`."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from cnnzoo.cli import _count, _input_size, _non_negative_float

EPILOG = """examples:
  cnnzoo export resnet18 --onnx resnet18.onnx
  cnnzoo export resnet20 --onnx resnet20.onnx --input 3x64x64 --dynamic-batch
  cnnzoo export runs/lenet5/best.pt --onnx lenet5.onnx --opset 18

The file is checked with onnx.checker and run in ONNX Runtime on a fixed random batch beside PyTorch (eval mode);
it is written only when the largest difference of the logits, relative to the largest logit, is within the
tolerance (exit status 0), else nothing is written (exit status 1). The torch.export-based exporter is used; a
model it cannot translate falls back to the TorchScript-based one, and the result says so. Needs
`pip install 'cnnzoo[export]'`."""


def arguments(p) -> None:
    from cnnzoo.deploy.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE, EXPORTERS, OPSETS

    p.epilog = EPILOG
    p.add_argument("name", help="a registered model name (see `cnnzoo list`) or a checkpoint file")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write")
    p.add_argument("--input", type=_input_size, metavar="CxHxW",
                   help="input size, e.g. 3x224x224 (default: the model's native input)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="leave the batch size free in the file (checked at a batch size the export did not see)")
    p.add_argument("--batch", type=_count(1), default=1, metavar="N",
                   help="the file's fixed batch size without --dynamic-batch (default 1)")
    p.add_argument("--opset", type=_count(OPSETS.start, OPSETS.stop - 1), default=DEFAULT_OPSET, metavar="N",
                   help=f"ONNX opset version (default {DEFAULT_OPSET}; the TorchScript exporter writes at most 20)")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="auto: torch.export-based (dynamo), falling back to TorchScript-based when it fails "
                        "(default auto)")
    p.add_argument("--tolerance", type=_non_negative_float, default=DEFAULT_TOLERANCE, metavar="T",
                   help=f"largest accepted difference relative to the largest logit (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--format", choices=["text", "json"], default="text")


def run(args) -> int:
    from cnnzoo.deploy.onnx import export_onnx

    report = export_onnx(args.name, args.onnx, input_size=args.input, dynamic_batch=args.dynamic_batch,
                         opset=args.opset, batch_size=args.batch, exporter=args.exporter, tolerance=args.tolerance)
    if args.format == "json":
        print(json.dumps(asdict(report), indent=2))
    else:
        print("\n".join(_lines(report)))
    if not report.ok:
        print(f"cnnzoo export: {report.path} not written: ONNX Runtime's logits differ from PyTorch's by "
              f"{report.rel_diff:.1e} of the largest logit, beyond the tolerance {report.tolerance:g} "
              f"(--tolerance accepts more)", file=sys.stderr)
        return 1
    return 0


def _lines(report) -> list[str]:
    shape = "x".join(map(str, report.input_shape[1:]))
    batch = "any batch size (checked at %d)" % report.input_shape[0] if report.dynamic_batch \
        else f"batch {report.input_shape[0]}"
    written = f"{report.path} ({_size(report.file_bytes)})" if report.ok else f"{report.path}: not written"
    exporter = "torch.export-based (dynamo)" if report.exporter == "dynamo" else "TorchScript-based"
    lines = [
        f"file        {written}",
        f"model       {report.model}, input {shape}, {batch}",
        f"exporter    {exporter}, opset {report.opset}, {report.export_s:.1f} s",
    ]
    if report.fallback_reason:
        lines.append(f"            (the dynamo exporter failed: {report.fallback_reason})")
    verdict = "within" if report.ok else "BEYOND"
    lines += [
        f"difference  max {report.max_abs_diff:.2e}, largest logit {report.logit_scale:.3g}, "
        f"relative {report.rel_diff:.2e}",
        f"tolerance   {report.tolerance:g} relative: {verdict}",
    ]
    return lines


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
