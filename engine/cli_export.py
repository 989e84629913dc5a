"""``deepseg export``: a model folder as an ONNX file or a bioimage.io model package (deepImageJ, ilastik)."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx", "bioimageio")


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a model as ONNX or as a bioimage.io package (deepImageJ, ilastik)",
        description="Export a model folder: --format onnx writes one .onnx file (network + softmax, dynamic batch "
        "and spatial axes, normalization stored as metadata); --format bioimageio writes a bioimage.io model "
        "package (format 0.5) as a folder or .zip: rdf.yaml, TorchScript and ONNX weights, test tensors, cover, "
        "README. Both are checked against PyTorch before they are written; `deepseg predict` runs either.")
    p.add_argument("model", help="model folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or bioimageio")
    p.add_argument("--out", required=True, help="output .onnx file; for bioimageio a new folder or a .zip file")
    p.add_argument("--sample", help="bioimageio: image to take the test input and cover from (default: noise "
                   "at the training statistics)")
    p.add_argument("--name", help="bioimageio: model name (default: 'deepseg <model folder name>')")
    p.add_argument("--description", help="bioimageio: one-sentence description")
    p.add_argument("--author", action="append", default=[], help="bioimageio: author name (repeat for several)")
    p.add_argument("--license", default="CC-BY-4.0", help="bioimageio: SPDX license id (default CC-BY-4.0)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")


def run_export(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .export import export_bioimageio, export_onnx
    from .fileutil import refuse_overwriting

    out = Path(args.out)
    model = Path(args.model)
    refuse_overwriting({"--out": out}, {"the model": model, "--sample": args.sample})
    if args.format == "onnx":
        if out.suffix.lower() != ".onnx":
            raise InputError(f"--out {args.out!r}: an ONNX export is one file ending in .onnx")
        extra = [flag for flag, value in (("--sample", args.sample), ("--name", args.name),
                                          ("--description", args.description), ("--author", args.author)) if value]
        if extra:
            raise InputError(f"{', '.join(extra)} apply to --format bioimageio, not to onnx")
        summary = export_onnx(model, out, opset=args.opset)
    else:
        summary = export_bioimageio(model, out, sample=args.sample, name=args.name, description=args.description,
                                    authors=args.author, license=args.license, opset=args.opset)
    difference = summary["max_difference"]
    shown = difference if isinstance(difference, float) else max(difference.values())
    print(f"{args.model} -> {summary['path']} ({args.format}; sizes {summary['minimum']} + k*{summary['step']}; "
          f"max difference to PyTorch {shown:.2g}" + (f"; bioimage.io validation {summary['validation']}"
                                                     if "validation" in summary else "") + ")")
    return 0
