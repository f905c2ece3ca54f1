#!/usr/bin/env python
"""Segment images, a video or a webcam stream over any vocabulary typed on the command line.

    python demo/demo.py --config-file configs/coco_stuff.yaml \\
        --input photo.jpg 'more/*.jpg' --output out/ --vocab "cat,sofa|couch,floor,wall" \\
        --opts MODEL.WEIGHTS output/coco_stuff/model_final.pth
    python demo/demo.py --model-folder output/coco_stuff/model --input photo.jpg --output out/
    python demo/demo.py --config-file configs/coco_stuff.yaml --backend onnx \
        --export-folder exported/ --input photo.jpg --output out/
    python demo/demo.py --config-file configs/coco_stuff.yaml --clip-alone --input photo.jpg \
        --output out/ --vocab "cat,sofa|couch,floor,wall"

--backend onnx --export-folder EXPORT runs the student exported by tools/export_model.py --format
onnx --output-kind logits under onnxruntime instead of PyTorch: the same labels (tested), not
faster than PyTorch on a CPU since 2026-12-08 (docs/benchmarks.md), for the export's fixed
vocabulary only; the config still gives the test-time resize.

--clip-alone segments with CLIP alone (the teacher's dense patch tokens x text embeddings, the
training-free baseline; no student, MODEL.WEIGHTS not used): every overlay carries the caption
"CLIP alone (no student)" and every JSON file "segmenter": "CLIP alone (no student)" (a
student's say "student"), so its outputs cannot pass for a trained student's.

Vocabulary: --vocab "a,b|c" (commas separate classes, "|" joins synonyms), --vocab-file (one
class per line; blank lines and lines starting with "#" are skipped), or --vocab-dataset NAME
(the classes of a registered dataset, read from its metadata; the dataset need not be on disk).
Without any of them the config's vocabulary is used (MODEL.CLIPZSS.TEST_VOCABULARY or
DATASETS.TEST).

Per image, written to --output (a folder, or a file name for a single input): NAME.png, the
overlay drawn with detectron2's Visualizer plus a legend; NAME.json, the share of the image of
each class; with --save-label-map, NAME_labels.png, the class ids (uint8 with 255 = unlabelled,
or uint16 with 65535 = unlabelled past 255 classes). Each file is written atomically, the JSON
last, so a JSON file means the image is complete. Before the model is loaded, the run is refused
(status 2) when an output would replace an input (or --config-file / --vocab-file), or two outputs
would be the same file (e.g. inputs a.png and a_labels.jpg with --save-label-map); existing files
that are not inputs, such as earlier results, are replaced.

Exit status: 0 when every input was processed; 1 when some inputs could not be read (missing,
empty, corrupt or unsupported files; the others are still processed and the failures listed at
the end); 2 when nothing can run (bad arguments, config, weights or vocabulary), in which case
nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (str(Path(__file__).resolve().parent), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

from detectron2.utils.logger import setup_logger  # noqa: E402
from image_io import IMAGE_EXTENSIONS, PROG, expand_inputs, output_paths  # noqa: E402
from image_results import process_images  # noqa: E402
from output_plan import Planned, check_outputs, image_outputs  # noqa: E402
from segmenter import Segmenter  # noqa: E402
from video_loop import VIDEO_CODECS, run_video, run_webcam, video_output_path  # noqa: E402
from visualization import class_colors  # noqa: E402

from clipzss_d2.entry import (  # noqa: E402
    add_backend_arguments,
    add_clip_alone_argument,
    add_config_arguments,
    add_vocabulary_arguments,
    apply_clip_alone,
    build_predictor,
    check_backend,
    load_config,
    run_main,
    vocabulary_from_args,
)
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.modeling.open_vocabulary import STUDENT  # noqa: E402
from clipzss_d2.vocabulary import Vocabulary  # noqa: E402

logger = logging.getLogger("clipzss_demo")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="CLIP-ZSS open-vocabulary segmentation demo",
        epilog="Exit status: 0 all inputs done, 1 some inputs unreadable, 2 nothing could run.",
    )
    add_config_arguments(parser, model_folder=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files or globs, e.g. 'dir/*.jpg'")
    source.add_argument("--video-input", help="path to a video file")
    source.add_argument("--webcam", action="store_true", help="take frames from webcam 0")
    parser.add_argument(
        "--output",
        help="folder for the results (created), or a file name when there is one input; "
        "required for --input and --video-input",
    )
    add_vocabulary_arguments(parser)
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.0,
        help="pixels whose top class probability is below this are left unlabelled (default 0)",
    )
    parser.add_argument("--save-label-map", action="store_true", help="also write the class-id PNG")
    parser.add_argument("--no-legend", action="store_true", help="overlay without legend panel")
    add_clip_alone_argument(parser)
    add_backend_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run_main(run, args, prog=PROG)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def run(args) -> int:
    """Everything that can fail for all inputs (UserInputError) fails before any output."""
    if not 0 <= args.confidence_threshold <= 1:  # also refuses nan
        raise UserInputError(
            f"--confidence-threshold must be between 0 and 1, got {args.confidence_threshold}."
        )
    if (args.input or args.video_input) and not args.output:
        raise UserInputError("--output is required with --input and --video-input.")
    check_backend(args)
    apply_clip_alone(args)
    vocabulary = vocabulary_from_args(args)
    inputs, bad, paths = [], [], {}
    if args.input:
        inputs, bad = expand_inputs(args.input)
        paths = output_paths(args.output, inputs)
    check_output_plan(args, inputs, paths)  # before the model is loaded or anything is written
    predictor = build_predictor(load_config(args, cpu_fallback=True), args)
    if predictor.segmenter != STUDENT:
        print(
            f"{PROG}: segmenting with {predictor.segmenter}: CLIP's dense patch tokens x text "
            f"embeddings, not a trained student; the outputs are labelled so."
        )
    if vocabulary is None:
        if predictor.vocabulary is None:
            raise UserInputError(
                "No vocabulary: pass --vocab, --vocab-file or --vocab-dataset (the config sets "
                "neither MODEL.CLIPZSS.TEST_VOCABULARY nor DATASETS.TEST)."
            )
        vocabulary = Vocabulary.of(predictor.vocabulary)
    predictor.set_vocabulary(vocabulary.entries)
    names = vocabulary.class_names
    logger.info("Vocabulary of %d classes: %s", len(names), ", ".join(names[:20]))
    segmenter = Segmenter(
        predictor,
        names,
        class_colors(names, vocabulary.colors),
        args.confidence_threshold,
        legend=not args.no_legend,
    )
    if args.input:
        return process_images(segmenter, inputs, paths, bad, args.output, args.save_label_map)
    if args.video_input:
        return run_video(segmenter, args.video_input, args.output)
    return run_webcam(segmenter, args.output)


def check_output_plan(args, inputs: list[str], paths: dict[str, dict[str, str]]) -> None:
    """Before the model is loaded: refuse (UserInputError) when an output would replace an input
    or another output. The webcam has no input file to protect."""
    other_inputs = (("--config-file", args.config_file), ("--vocab-file", args.vocab_file))
    if args.input:
        planned = image_outputs(inputs, paths, args.save_label_map)
        single_file = os.path.splitext(args.output)[1].lower() in IMAGE_EXTENSIONS
    elif args.video_input:
        planned = [
            Planned(args.video_input, "video", video_output_path(args.output, args.video_input))
        ]
        inputs = [args.video_input]
        single_file = os.path.splitext(args.output)[1].lower() in VIDEO_CODECS
    else:
        return
    check_outputs(args.output, planned, inputs, single_file=single_file, other_inputs=other_inputs)


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "clipzss_d2", "clipzss_demo"):
        setup_logger(name=name)
    sys.exit(main())
