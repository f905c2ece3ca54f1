#!/usr/bin/env python
"""Export the trained student with a fixed vocabulary to TorchScript and ONNX.

    python tools/export_model.py --config-file configs/coco_stuff.yaml \\
        --vocab-dataset coco_stuff171_zs_val --output exported/ --dynamic \\
        --opts MODEL.WEIGHTS output/coco_stuff/model_final.pth
    python tools/export_model.py --model-folder output/coco_stuff/model \\
        --vocab-dataset coco_stuff171_zs_val --output exported/ --dynamic

The artefact is backbone + embedding head + the vocabulary's CLIP text embeddings as a constant
(K x C buffer) + the logit scale: no CLIP module or weight is inside (checked after export).

Input: `image`, N x 3 x H x W, uint8 (default) or float32 with 0..255 values, channels in the
config's INPUT.FORMAT order (RGB for this project's configs). The model normalises and pads to
its size divisibility itself; it does not resize, so resize like the predictor does
(shortest edge to INPUT.MIN_SIZE_TEST) before calling it. With --dynamic, N, H and W are dynamic
axes; otherwise the ONNX graph is fixed to 1 x 3 x HEIGHT x WIDTH.
Output (--output-kind): `logits` N x K x H x W, or `labels` (N x H x W int64) and `scores`
(N x H x W float32, softmax probability of the predicted class).

ONNX uses torch.onnx.export with the torch.export-based exporter (dynamo=True, the default of
current PyTorch) unless --onnx-exporter legacy is given; TorchScript uses torch.jit.trace.
Whole-image inference only: sliding-window and test-time augmentation are not exported.
Every export is checked against the PyTorch model (CLIPZSS.inference) on random inputs (at a
second size too when --dynamic); the tool exits 1 if outputs differ.

This file is the command line only; the export and its checks are clipzss_d2.export.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

from detectron2.utils.logger import setup_logger  # noqa: E402

from clipzss_d2.entry import (  # noqa: E402
    add_config_arguments,
    add_vocabulary_arguments,
    config_name,
    load_config,
    run_main,
    vocabulary_from_args,
)
from clipzss_d2.export import ExportOptions, check_export_output, export_student  # noqa: E402

PROG = "export_model.py"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a CLIP-ZSS student with a fixed vocabulary")
    add_config_arguments(p, model_folder=True)  # --config-file or --model-folder, --opts
    add_vocabulary_arguments(p, required=True)
    p.add_argument("--output", required=True, help="folder for model.ts / model.onnx / JSON")
    p.add_argument(
        "--format", nargs="+", choices=["torchscript", "onnx"], default=["torchscript", "onnx"]
    )
    p.add_argument("--height", type=int, default=512, help="example (or fixed) input height")
    p.add_argument("--width", type=int, default=512, help="example (or fixed) input width")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--input-dtype", choices=["uint8", "float32"], default="uint8")
    p.add_argument("--output-kind", choices=["logits", "labels"], default="labels")
    p.add_argument("--onnx-exporter", choices=["dynamo", "legacy"], default="dynamo")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace model.ts / model.onnx / export.json in --output even where an earlier "
        "export did not write them",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 exported and checked, 1 outputs differ, 2 a user error (one line)."""
    return run_main(run, get_parser().parse_args(argv), prog=PROG)


def run(args) -> int:
    vocabulary = vocabulary_from_args(args).entries
    options = ExportOptions(
        formats=args.format,
        height=args.height,
        width=args.width,
        dynamic=args.dynamic,
        input_dtype=args.input_dtype,
        output_kind=args.output_kind,
        onnx_exporter=args.onnx_exporter,
        opset=args.opset,
    )
    check_export_output(args.output, options, args.overwrite)
    cfg = load_config(args)
    written, problems = export_student(cfg, vocabulary, args.output, options, config_name(args))
    if problems:
        print(f"{PROG}: exported models do not match PyTorch:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"Exported {', '.join(written.values())}: outputs match PyTorch; no CLIP inside.")
    return 0


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "clipzss_d2"):
        setup_logger(name=name)
    sys.exit(main())
