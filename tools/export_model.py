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
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detectron2.utils.logger import setup_logger  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.errors import USER_ERRORS  # noqa: E402
from clipzss_d2.export import ExportOptions, export_student  # noqa: E402
from clipzss_d2.model_folder import CONFIG_FILE, load_folder_config  # noqa: E402
from clipzss_d2.predictor import dataset_vocabulary, read_vocabulary_file  # noqa: E402
from clipzss_d2.utils.config_loading import merge_config  # noqa: E402
from clipzss_d2.vocabulary import parse_vocabulary  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a CLIP-ZSS student with a fixed vocabulary")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE")
    model.add_argument(
        "--model-folder", metavar="DIR", help="a model folder (OUTPUT_DIR/model of train_net.py)"
    )
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", help='comma-separated classes, "|" joins synonyms')
    vocab.add_argument("--vocab-file", help="text file with one class per line")
    vocab.add_argument("--vocab-dataset", help="the classes of a registered dataset")
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
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides")
    return p


def vocabulary_from_args(args) -> list[str]:
    if args.vocab is not None:
        return parse_vocabulary(args.vocab)
    if args.vocab_file is not None:
        return read_vocabulary_file(args.vocab_file)
    return dataset_vocabulary(args.vocab_dataset).entries


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:
        print(f"export_model.py: error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    vocabulary = vocabulary_from_args(args)
    if args.model_folder:
        cfg = load_folder_config(args.model_folder, args.opts, "--opts")
        config_file = os.path.join(args.model_folder, CONFIG_FILE)
    else:
        cfg = merge_config(get_clipzss_cfg(), args.config_file, args.opts, "--opts")
        config_file = args.config_file
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
    written, problems = export_student(cfg, vocabulary, args.output, options, config_file)
    if problems:
        print("export_model.py: exported models do not match PyTorch:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"Exported {', '.join(written.values())}: outputs match PyTorch; no CLIP inside.")
    return 0


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "clipzss_d2"):
        setup_logger(name=name)
    sys.exit(main())
