#!/usr/bin/env python
"""Segment images, a video or a webcam stream over any vocabulary typed on the command line.

    python demo/demo.py --config-file configs/coco_stuff.yaml \\
        --input photo.jpg 'more/*.jpg' --output out/ --vocab "cat,sofa|couch,floor,wall" \\
        --opts MODEL.WEIGHTS output/coco_stuff/model_final.pth
    python demo/demo.py --model-folder output/coco_stuff/model --input photo.jpg --output out/

Vocabulary: --vocab "a,b|c" (commas separate classes, "|" joins synonyms), --vocab-file (one
class per line; blank lines and lines starting with "#" are skipped), or --vocab-dataset NAME
(the classes of a registered dataset, read from its metadata; the dataset need not be on disk).
Without any of them the config's vocabulary is used (MODEL.CLIPZSS.TEST_VOCABULARY or
DATASETS.TEST).

Per image, written to --output (a folder, or a file name for a single input): NAME.png, the
overlay drawn with detectron2's Visualizer plus a legend; NAME.json, the share of the image of
each class; with --save-label-map, NAME_labels.png, the class ids (uint8 with 255 = unlabelled,
or uint16 with 65535 = unlabelled past 255 classes). Each file is written atomically, the JSON
last, so a JSON file means the image is complete.

Exit status: 0 when every input was processed; 1 when some inputs could not be read (missing,
empty, corrupt or unsupported files; the others are still processed and the failures listed at
the end); 2 when nothing can run (bad arguments, config, weights or vocabulary), in which case
nothing is written.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (str(Path(__file__).resolve().parent), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import clipzss_d2  # noqa: E402,F401  (first: it silences a torch.jit warning that fvcore triggers)

# isort: split
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: E402
from tqdm import tqdm  # noqa: E402
from visualization import MIN_DISPLAY_SIDE, class_colors, legend_font_size, render  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.errors import USER_ERRORS, UserInputError  # noqa: E402
from clipzss_d2.model_folder import CONFIG_FILE, load_folder_config  # noqa: E402
from clipzss_d2.predictor import (  # noqa: E402
    OpenVocabularyPredictor,
    SegmentationResult,
    dataset_vocabulary,
    read_vocabulary_file,
)
from clipzss_d2.utils.config_loading import merge_config  # noqa: E402
from clipzss_d2.utils.io import atomic_write_bytes, atomic_write_path  # noqa: E402
from clipzss_d2.utils.progress import progress  # noqa: E402
from clipzss_d2.vocabulary import display_name, parse_vocabulary  # noqa: E402

try:  # the EXIF handling of detectron2.data.detection_utils.read_image
    from detectron2.data.detection_utils import _apply_exif_orientation
except ImportError:  # pragma: no cover - other detectron2 versions
    _apply_exif_orientation = ImageOps.exif_transpose

logger = logging.getLogger("clipzss_demo")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}  # both available in opencv-python(-headless)
EXIT_OK, EXIT_INPUT_ERRORS, EXIT_USAGE = 0, 1, 2


class InputError(Exception):
    """One input (image or video) cannot be processed; the others can."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="CLIP-ZSS open-vocabulary segmentation demo",
        epilog="Exit status: 0 all inputs done, 1 some inputs unreadable, 2 nothing could run.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE", help="path to config")
    model.add_argument(
        "--model-folder",
        metavar="DIR",
        help="a model folder (OUTPUT_DIR/model of train_net.py): config, weights and text "
        "cache in one; --opts still overrides its config",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files or globs, e.g. 'dir/*.jpg'")
    source.add_argument("--video-input", help="path to a video file")
    source.add_argument("--webcam", action="store_true", help="take frames from webcam 0")
    parser.add_argument(
        "--output",
        help="folder for the results (created), or a file name when there is one input; "
        "required for --input and --video-input",
    )
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument(
        "--vocab", help='comma-separated classes, "|" for synonyms: "cat,sofa|couch"'
    )
    vocab.add_argument("--vocab-file", help="text file with one class per line")
    vocab.add_argument("--vocab-dataset", help="use the classes of a registered dataset")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.0,
        help="pixels whose top class probability is below this are left unlabelled (default 0)",
    )
    parser.add_argument("--save-label-map", action="store_true", help="also write the class-id PNG")
    parser.add_argument("--no-legend", action="store_true", help="overlay without legend panel")
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


# -- set-up: everything that can fail before any output is written --------------------------------
def read_vocabulary(args) -> tuple[list[str] | None, list[str] | None, list | None]:
    """(entries for CLIP, display names, dataset colours) from --vocab / --vocab-file /
    --vocab-dataset; (None, None, None) to use the config's vocabulary."""
    if args.vocab is not None:
        if not args.vocab.strip():
            raise UserInputError('--vocab is empty: give class names, e.g. --vocab "cat,sofa".')
        entries = parse_vocabulary(args.vocab)
        return entries, [display_name(e) for e in entries], None
    if args.vocab_file is not None:
        entries = read_vocabulary_file(args.vocab_file)
        return entries, [display_name(e) for e in entries], None
    if args.vocab_dataset is not None:
        vocab = dataset_vocabulary(args.vocab_dataset)
        return vocab.entries, vocab.class_names, vocab.colors
    return None, None, None


def setup_cfg(args):
    """The config from --model-folder or --config-file, then --opts. Other front ends (the
    web demo) call this with their own args: a missing model_folder attribute means None."""
    if getattr(args, "model_folder", None):
        return load_folder_config(args.model_folder, args.opts, "--opts")
    cfg = merge_config(get_clipzss_cfg(), args.config_file, args.opts, "--opts")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(
            "MODEL.DEVICE=%s but no GPU is available: running on the CPU.", cfg.MODEL.DEVICE
        )
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def config_name(args) -> str:
    if getattr(args, "model_folder", None):
        return os.path.join(args.model_folder, CONFIG_FILE)
    return args.config_file


def expand_inputs(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files named by the arguments, and (argument, problem) for those that name nothing."""
    files, bad = [], []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
            if matches:
                files.extend(matches)
            else:
                bad.append((pattern, "the pattern matches no file"))
        else:
            files.append(pattern)
    return list(dict.fromkeys(files)), bad


def output_paths(output: str, inputs: list[str]) -> dict[str, dict[str, str]]:
    """Overlay / label map / JSON paths per input; stems shared by several inputs get -2, -3..."""
    single_file = os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS
    if single_file and len(inputs) != 1:
        raise UserInputError(
            f"--output {output} names one image file but {len(inputs)} inputs were given: pass "
            f"a folder instead."
        )
    paths, used = {}, set()
    for path in inputs:
        if single_file:
            overlay = output
        else:
            stem = Path(path).stem
            candidate, k = stem, 1
            while candidate in used:
                k += 1
                candidate = f"{stem}-{k}"
            used.add(candidate)
            overlay = os.path.join(output, candidate + ".png")
        base = os.path.splitext(overlay)[0]
        paths[path] = {
            "overlay": overlay,
            "label_map": base + "_labels.png",
            "json": base + ".json",
        }
    return paths


# -- images ---------------------------------------------------------------------------------------
def read_image_rgb(path: str) -> np.ndarray:
    """H x W x 3 uint8 RGB, upright per EXIF; gray, palette, RGBA, 16-bit and float converted."""
    if not os.path.exists(path):
        raise InputError("no such file")
    if os.path.isdir(path):
        raise InputError("is a folder (use a glob such as 'folder/*.jpg')")
    if os.path.getsize(path) == 0:
        raise InputError("the file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            image = _apply_exif_orientation(image)
            return _pil_to_rgb8(image)
    except Image.DecompressionBombError as e:
        raise InputError(f"the image is too large to read safely ({e})") from None
    except UnidentifiedImageError:
        raise InputError("not an image file that PIL can read (corrupt or unsupported)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated image ({e})") from None


def _pil_to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        top = values.max(initial=0)
        if image.mode == "F" and top <= 1.0:
            values = values * 255.0
        elif top > 255:  # 16-bit (or wider) data: rescale the full range instead of clipping
            values = values * (255.0 / (65535.0 if top <= 65535 else top))
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def encode(path: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or ".png", image)
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    return buf.tobytes()


class Demo:
    """Holds the predictor, the vocabulary and how results are drawn."""

    def __init__(self, predictor, names, colors, threshold: float, legend: bool):
        self.predictor = predictor
        self.names = names
        self.colors = colors
        self.threshold = threshold
        self.legend = legend

    def predict(self, image_rgb: np.ndarray) -> SegmentationResult:
        self.check_test_size(image_rgb)
        return self.predictor(image_rgb, input_format="RGB")

    def check_test_size(self, image: np.ndarray) -> None:
        """An image so elongated that the test resize leaves a side of 0 px cannot be segmented."""
        if self.predictor.aug is None:
            return
        resize = self.predictor.aug.get_transform(image)
        new_h, new_w = getattr(resize, "new_h", 1), getattr(resize, "new_w", 1)
        if new_h < 1 or new_w < 1:
            raise InputError(
                f"{image.shape[1]}x{image.shape[0]} px is too elongated: resized to the test size "
                f"(INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST) it would be {new_w}x{new_h} px; crop it "
                f"into pieces first"
            )

    def draw(self, image_rgb, result: SegmentationResult, legend_width=None, fit=False):
        labels = result.label_map(self.threshold)
        return render(
            image_rgb,
            labels,
            self.names,
            self.colors,
            result.unlabelled_id,
            legend=self.legend,
            legend_width=legend_width,
            fit_height=fit,
            min_side=0 if fit else MIN_DISPLAY_SIDE,  # video frames keep the input's size
        )

    def fractions(self, labels: np.ndarray, unlabelled_id: int) -> dict[str, float]:
        """Share of the image per class, largest first, in the demo's display names."""
        ids, counts = np.unique(labels, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {
            ("unlabelled" if ids[i] == unlabelled_id else self.names[ids[i]]): round(
                float(counts[i]) / labels.size, 6
            )
            for i in order
        }

    def process_image(self, path: str, out: dict[str, str], save_label_map: bool) -> dict:
        image = read_image_rgb(path)
        result = self.predict(image)
        labels = result.label_map(self.threshold)
        overlay = self.draw(image, result)
        summary = {
            "input": path,
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "vocabulary": result.vocabulary,
            "confidence_threshold": self.threshold,
            "classes": self.fractions(labels, result.unlabelled_id),
            "overlay": os.path.basename(out["overlay"]),
            "label_map": os.path.basename(out["label_map"]) if save_label_map else None,
            "unlabelled_id": result.unlabelled_id,
        }
        atomic_write_bytes(out["overlay"], encode(out["overlay"], overlay[:, :, ::-1]))
        if save_label_map:
            atomic_write_bytes(out["label_map"], encode(out["label_map"], labels))
        atomic_write_bytes(out["json"], (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
        return summary

    # -- video ------------------------------------------------------------------------------------
    def process_video(
        self, capture, output: str | None, title: str, total: int = 0, until_interrupt=False
    ) -> int:
        """Overlay every frame; write them to `output` (atomically) or show them in a window.

        until_interrupt: Ctrl-C ends the stream normally (webcam) instead of aborting.
        """
        if output is None:
            return self._frames(capture, None, title, total, until_interrupt)
        with atomic_write_path(output) as tmp:
            frames = self._frames(capture, (tmp, output), title, total, until_interrupt)
            if frames == 0:
                raise InputError("no frame could be read (corrupt file or unsupported codec)")
        return frames

    def _frames(self, capture, target, title, total, until_interrupt) -> int:
        frames, writer, legend_width = 0, None, None
        try:
            with progress(total=total or None, unit="frame", desc=title) as bar:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    rgb = np.ascontiguousarray(frame[:, :, ::-1])
                    if legend_width is None:  # fixed for the whole stream: frames keep one size
                        legend_width = 12 * legend_font_size(rgb.shape[0]) + 40
                    vis = self.draw(rgb, self.predict(rgb), legend_width, fit=True)
                    vis = np.ascontiguousarray(vis[:, :, ::-1])
                    if target is None:
                        if not show(title, vis):
                            break
                    else:
                        if writer is None:
                            writer = open_writer(target[0], target[1], capture, vis.shape)
                        writer.write(vis)
                    frames += 1
                    bar.update()
        except KeyboardInterrupt:
            if not until_interrupt:
                raise
        finally:
            if writer is not None:
                writer.release()
        return frames


def open_writer(tmp: str, output: str, capture, shape) -> cv2.VideoWriter:
    ext = os.path.splitext(output)[1].lower()
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 else 25.0
    fourcc = VIDEO_CODECS[ext]
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise UserInputError(
            f"OpenCV cannot write {ext} video with codec {fourcc} on this machine. Try another "
            f"--output extension ({', '.join(VIDEO_CODECS)})."
        )
    return writer


def show(title: str, frame_bgr: np.ndarray) -> bool:
    """Show a frame; False when the user pressed Esc or q."""
    try:
        cv2.imshow(title, frame_bgr)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as e:
        raise UserInputError(
            f"Cannot open a window ({e.err.strip() if hasattr(e, 'err') else e}); this OpenCV "
            f"build may have no GUI (opencv-python-headless). Pass --output FILE.mp4 instead."
        ) from None
    return key not in (27, ord("q"))


def video_output_path(output: str, video: str) -> str:
    ext = os.path.splitext(output)[1].lower()
    if ext in VIDEO_CODECS:
        return output
    if ext:
        raise UserInputError(
            f"--output {output}: video output must end with {' or '.join(VIDEO_CODECS)}, or be a "
            f"folder."
        )
    return os.path.join(output, Path(video).stem + ".mp4")


# -- entry point ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("demo.py: interrupted", file=sys.stderr)
        return 130


def run(args) -> int:
    if not 0 <= args.confidence_threshold <= 1:  # also refuses nan
        raise UserInputError(
            f"--confidence-threshold must be between 0 and 1, got {args.confidence_threshold}."
        )
    if (args.input or args.video_input) and not args.output:
        raise UserInputError("--output is required with --input and --video-input.")
    entries, names, dataset_colors = read_vocabulary(args)
    if args.input:
        inputs, bad = expand_inputs(args.input)
        paths = output_paths(args.output, inputs)
    cfg = setup_cfg(args)
    predictor = OpenVocabularyPredictor(cfg, config_name=config_name(args))
    if entries is None:
        entries = predictor.vocabulary
        if entries is None:
            raise UserInputError(
                "No vocabulary: pass --vocab, --vocab-file or --vocab-dataset (the config sets "
                "neither MODEL.CLIPZSS.TEST_VOCABULARY nor DATASETS.TEST)."
            )
        names = [display_name(e) for e in entries]
    predictor.set_vocabulary(entries)
    logger.info("Vocabulary of %d classes: %s", len(entries), ", ".join(names[:20]))
    demo = Demo(
        predictor,
        names,
        class_colors(names, dataset_colors),
        args.confidence_threshold,
        legend=not args.no_legend,
    )

    if args.input:
        for path in progress(inputs, unit="image", desc="images"):
            try:
                demo.process_image(path, paths[path], args.save_label_map)
            except InputError as e:
                bad.append((path, str(e)))
                tqdm.write(f"demo.py: skipped {path}: {e}", file=sys.stderr)
        done = len(inputs) - sum(1 for p, _ in bad if p in paths)
        print(f"Wrote results for {done} of {len(inputs)} images to {args.output}")
        if bad:
            print(f"demo.py: {len(bad)} input(s) could not be processed:", file=sys.stderr)
            for path, problem in bad:
                print(f"  {path}: {problem}", file=sys.stderr)
            return EXIT_INPUT_ERRORS
        return EXIT_OK

    if args.video_input:
        video = args.video_input
        if not os.path.isfile(video):
            print(f"demo.py: error: --video-input {video}: no such file", file=sys.stderr)
            return EXIT_INPUT_ERRORS
        output = video_output_path(args.output, video)
        capture = cv2.VideoCapture(video)
        if not capture.isOpened():
            print(f"demo.py: error: {video}: OpenCV cannot open this video", file=sys.stderr)
            return EXIT_INPUT_ERRORS
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        try:
            frames = demo.process_video(capture, output, os.path.basename(video), total)
        except InputError as e:
            print(f"demo.py: error: {video}: {e}", file=sys.stderr)
            return EXIT_INPUT_ERRORS
        finally:
            capture.release()
        print(f"Wrote {frames} frames to {output}")
        return EXIT_OK

    capture = cv2.VideoCapture(0)
    if not capture.isOpened():
        print("demo.py: error: cannot open webcam 0", file=sys.stderr)
        return EXIT_INPUT_ERRORS
    output = None
    if args.output:
        ext = os.path.splitext(args.output)[1].lower()
        output = args.output if ext in VIDEO_CODECS else os.path.join(args.output, "webcam.mp4")
    try:
        frames = demo.process_video(capture, output, "webcam", until_interrupt=True)
    finally:
        capture.release()
        if output is None:
            cv2.destroyAllWindows()
    if output:
        print(f"Wrote {frames} frames to {output}")
    return EXIT_OK


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "clipzss_d2", "clipzss_demo"):
        setup_logger(name=name)
    sys.exit(main())
