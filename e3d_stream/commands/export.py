"""``e3d-stream export CKPT.pth OUT.onnx``: pth -> (simplified) ONNX, checked, plus ATC commands."""

from __future__ import annotations

import argparse

from ..models import add_arch_arguments, arch_options
from ..seed._export import OPSETS, atc_command, export_onnx, parse_batches

HELP = "convert an upstream .pth to (simplified) ONNX; print ATC commands"
DESCRIPTION = (
    "Convert an upstream Efficient-3DCNNs checkpoint to one self-contained ONNX file "
    "(input 'image' N x 3 x T x S x S, output 'class', dynamic batch unless --batch), simplified "
    "with onnxsim, then compare ONNX Runtime with torch on a random batch. Replaces "
    "Efficient-3DCNNs_pth2onnx.py + 'python -m onnxsim'. The pool kernel is fixed at export: "
    "the graph accepts only the exported clip size."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Positional CKPT and OUT (the seed's form), conversion flags, and the model options."""
    parser.add_argument("checkpoint", metavar="CKPT.pth", help="upstream checkpoint")
    parser.add_argument("output", metavar="OUT.onnx", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=11, choices=OPSETS, metavar="N",
                        help="ONNX opset (ATC needs 11)")
    parser.add_argument("--batch", type=int, default=None,
                        help="fix the batch size in the graph; not given: a dynamic batch axis")
    # SUPPRESS keeps the help formatter from printing "(default: True)" after a --no-* flag
    parser.add_argument("--no-simplify", dest="simplify", action="store_false", default=argparse.SUPPRESS,
                        help="skip onnxsim simplification")
    parser.add_argument("--no-check", dest="check", action="store_false", default=argparse.SUPPRESS,
                        help="skip the ONNX Runtime vs torch comparison")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="fail when max|onnx - torch| exceeds this times max|logit|")
    parser.add_argument("--uint8_input", action="store_true",
                        help="take raw uint8 clips: Cast + Sub(mean) at the front of the graph (a quarter of the "
                             "bytes per batch; e3d-stream then sends uint8 batches)")
    parser.add_argument("--atc", metavar="BATCHES", default=None,
                        help="print ATC commands for these batch sizes, e.g. 1,4,8,16,32,64")
    parser.add_argument("--soc_version", default="Ascend310P3", help="ATC --soc_version (see npu-smi info)")
    add_arch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Export, report the agreement with torch, print ATC commands; 0 on success."""
    batches = parse_batches(args.atc) if args.atc else ()
    if batches:  # validate --soc_version before the slow part
        atc_command(args.output, batch=batches[0], soc_version=args.soc_version)
    options = arch_options(args)
    result = export_onnx(args.checkpoint, args.output, opset=args.opset, batch=args.batch,
                         simplify=getattr(args, "simplify", True), check=getattr(args, "check", True),
                         tolerance=args.tolerance, uint8_input=args.uint8_input, **options)
    shape = "x".join(str(d) for d in result.input_shape)
    print(f"wrote {result.path} ({result.arch}, opset {result.opset}, "
          f"{'simplified' if result.simplified else 'not simplified'}, "
          f"input {result.input_names[0]} {result.input_dtype} {shape}, output {result.output_names[0]})")
    if result.max_abs_diff is not None:
        assert result.max_abs_logit is not None  # measured together with max_abs_diff
        print(f"onnxruntime vs torch: max abs diff {result.max_abs_diff:.3g} "
              f"(max |logit| {result.max_abs_logit:.3g}, relative {result.max_abs_diff / result.max_abs_logit:.3g})")
    if batches and args.opset != 11:
        print(f"note: ATC expects opset 11; this file uses opset {args.opset}")
    if args.batch is not None and any(b != args.batch for b in batches):
        print(f"note: the graph has a fixed batch of {args.batch}; ATC needs --input_shape to match it")
    size = options.get("sample_size", 112)
    duration = options.get("sample_duration", 16)
    for batch in batches:
        print(atc_command(result.path, batch=batch, soc_version=args.soc_version,
                          sample_size=size, sample_duration=duration))
    return 0
