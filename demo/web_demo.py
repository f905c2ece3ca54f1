#!/usr/bin/env python
"""Web demo (Gradio): upload an image, type a vocabulary, see the segmentation in the browser.

    python demo/web_demo.py                      # the miniature-world model that `make main` trains
    python demo/web_demo.py --config-file configs/coco_stuff.yaml \\
        --opts MODEL.WEIGHTS output/coco_stuff/model_final.pth
    python demo/web_demo.py --host 127.0.0.1 --port 7860
    python demo/web_demo.py --config-file configs/coco_stuff.yaml --clip-alone

The page takes an image (upload, or one of the miniature world's test scenes), a vocabulary
(commas separate classes, "|" joins synonyms) and the inference mode (whole image or sliding
window), and shows the overlay with its legend and a table of the share of the image per class.
Everything runs through OpenVocabularyPredictor and demo.py's reading and drawing
(demo/image_io.py, demo/segmenter.py), on the CPU unless the config asks for an available GPU.
Bad input is answered by a one-line message on the page. With --clip-alone the page serves CLIP
alone (the training-free baseline, no student) and says so in its heading, every status line and
every overlay's caption.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (str(Path(__file__).resolve().parent), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from image_io import InputError, check_image_size, read_image_rgb  # noqa: E402
from PIL import Image  # noqa: E402
from segmenter import Segmenter  # noqa: E402
from visualization import class_colors  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.entry import (  # noqa: E402
    add_clip_alone_argument,
    add_config_arguments,
    add_vocabulary_arguments,
    apply_clip_alone,
    build_predictor,
    load_config,
    run_main,
    vocabulary_from_args,
)
from clipzss_d2.errors import USER_ERRORS, UserInputError  # noqa: E402
from clipzss_d2.miniworld import world  # noqa: E402
from clipzss_d2.miniworld.generate import render_item  # noqa: E402
from clipzss_d2.modeling.open_vocabulary import STUDENT  # noqa: E402
from clipzss_d2.predictor import OpenVocabularyPredictor  # noqa: E402
from clipzss_d2.utils.config_loading import merge_config_file  # noqa: E402
from clipzss_d2.vocabulary import display_name, parse_vocabulary  # noqa: E402

PROG = "web_demo.py"
MINIWORLD_OUTPUT = ROOT / "output" / "miniworld"  # tools/run_miniworld.py's default --output
MINIWORLD_RUN = ("full", "seed0")  # the main job's run (variant, seed)
# The miniature world's scenes (short side 72-120 px) are resized to a 96 px short side (long
# side up to ~155 px, INPUT.MIN_SIZE_TEST): one default 512 px window would cover them whole, so
# its sliding window uses 64 px windows every 32 px, 2 x 2 to 2 x 4 of them (--opts overrides).
MINIWORLD_SLIDE = [
    "MODEL.CLIPZSS.INFERENCE.SLIDE_CROP",
    64,
    "MODEL.CLIPZSS.INFERENCE.SLIDE_STRIDE",
    32,
]
NUM_EXAMPLES = 3
MODES = {"whole image": "whole", "sliding window": "slide"}
TABLE_COLUMNS = ["class", "colour", "share (%)"]
# Every request's work is bounded on the server, whatever a client sends (the page's own limits
# are only a convenience): the vocabulary's length, its classes and names, the image's pixels,
# and pixels x classes, which the result's post-processing and the drawing scale with.
MAX_VOCABULARY_CHARS = 20_000
MAX_CLASSES = 1_000
MAX_NAME_CHARS = 200  # CLIP reads 77 tokens of a prompt at most
MAX_PIXELS = 4096 * 4096
MAX_PIXEL_CLASSES = 1 << 31


class WebDemo:
    """The page's one event (`segment`) and its layout, around one predictor."""

    def __init__(self, predictor: OpenVocabularyPredictor, vocabulary: str, examples: list[str]):
        self.predictor = predictor
        self.vocabulary = vocabulary
        self.examples = examples
        base = predictor.model.test_time
        # Each request names its mode; the shared model is never changed (nor locked).
        self.test_time = {name: dataclasses.replace(base, mode=m) for name, m in MODES.items()}

    def describe_modes(self) -> str:
        slide = self.test_time["sliding window"]
        size = self.predictor.cfg.INPUT.MIN_SIZE_TEST
        resize = f"shorter side resized to {size} px" if size > 0 else "at its own size"
        return (
            f"The image is segmented with its {resize}; the sliding window runs "
            f"{slide.crop[0]} x {slide.crop[1]} px windows every {slide.stride[0]} px."
        )

    def segment(self, image, vocabulary, mode="whole image", threshold=0.0):
        """(overlay RGB array or None, shares table, one-line status) for the page.

        image: a file path, or the page's upload payload {"path": ...}.
        """
        try:
            return self._segment(*check_request(image, vocabulary, mode, threshold))
        except InputError as e:  # demo.py's reader: "no such file", "corrupt ...", ...
            return failure(f"The image cannot be read: {e}.")
        except USER_ERRORS as e:
            return failure(str(e))
        except (MemoryError, torch.OutOfMemoryError):
            return failure("Out of memory for this request: try a smaller image or fewer classes.")

    def _segment(self, image_path, vocabulary, mode, threshold):
        if not image_path:
            raise UserInputError("No image: upload one or pick an example.")
        if not vocabulary.strip():
            raise UserInputError("The vocabulary is empty: type class names, e.g. 'sky, tree'.")
        if mode not in self.test_time:
            raise UserInputError(f"Unknown mode {mode!r}: choose {' or '.join(self.test_time)}.")
        if not 0.0 <= threshold <= 1.0:
            raise UserInputError("The confidence threshold must be between 0 and 1.")
        entries = check_vocabulary(vocabulary)
        width, height = check_image_size(image_path, max_pixels=MAX_PIXELS)
        if width * height * len(entries) > MAX_PIXEL_CLASSES:
            raise UserInputError(
                f"A {width} x {height} image over {len(entries)} classes is more than this demo "
                f"computes per request ({MAX_PIXEL_CLASSES:,} pixel-classes): use a smaller "
                f"image or fewer classes."
            )
        image = read_image_rgb(image_path)
        names = [display_name(e) for e in entries]
        start = time.perf_counter()
        result = self.predictor(
            image, vocabulary=entries, input_format="RGB", test_time=self.test_time[mode]
        )
        seconds = time.perf_counter() - start
        drawer = Segmenter(self.predictor, names, class_colors(names), threshold, legend=True)
        overlay = drawer.draw(image, result)
        shares = drawer.fractions(result.label_map(threshold), result.unlabelled_id)
        height, width = image.shape[:2]
        status = (
            f"{self.label_prefix()}Segmented a {width} x {height} image over {len(entries)} "
            f"classes ({mode}) in {seconds:.2f} s."
        )
        return overlay, shares_table(shares, names, drawer.colors), status

    @property
    def clip_alone(self) -> bool:
        return getattr(self.predictor, "segmenter", STUDENT) != STUDENT

    def label_prefix(self) -> str:
        """What each status line starts with: nothing for a student, "**CLIP alone (no
        student)**: " for the baseline, so no result on the page passes for a student's."""
        return f"**{self.predictor.segmenter}**: " if self.clip_alone else ""

    def build(self) -> gr.Blocks:
        title = "CLIP-ZSS open-vocabulary segmentation"
        heading = f"# {title}\n"
        if self.clip_alone:
            title = f"{title}: {self.predictor.segmenter}"
            heading = (
                f"# {title}\n**{self.predictor.segmenter}**: CLIP's dense patch tokens x text "
                f"embeddings, the training-free baseline; this page runs no trained student.\n\n"
            )
        with gr.Blocks(title=title) as page:
            gr.Markdown(
                heading + "Upload an image or pick an example, type the classes to look for "
                "(commas separate classes, `|` joins synonyms: `sofa|couch`), and press "
                "**Segment**.",
                elem_id="heading",
            )
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        label="Image", type="filepath", sources=["upload"], elem_id="input-image"
                    )
                    vocab = gr.Textbox(
                        value=self.vocabulary,
                        label="Vocabulary",
                        placeholder="sky, tree|trees, person",
                        lines=2,
                        max_length=MAX_VOCABULARY_CHARS,
                        elem_id="vocabulary",
                    )
                    mode = gr.Radio(
                        list(self.test_time),
                        value="whole image",
                        label="Inference",
                        info=self.describe_modes(),
                        elem_id="mode",
                    )
                    threshold = gr.Slider(
                        0.0,
                        1.0,
                        value=0.0,
                        step=0.05,
                        label="Confidence threshold (pixels below it are left unlabelled)",
                        elem_id="threshold",
                    )
                    button = gr.Button("Segment", variant="primary", elem_id="segment")
                with gr.Column():
                    status = gr.Markdown("", elem_id="status")
                    overlay = gr.Image(
                        label="Overlay and legend", type="numpy", format="png", elem_id="overlay"
                    )
                    table = gr.Dataframe(
                        value=empty_table(),
                        headers=TABLE_COLUMNS,
                        label="Share of the image per class",
                        interactive=False,
                        elem_id="shares",
                    )
            if self.examples:
                gr.Examples(  # images only: picking one keeps the vocabulary typed
                    [[path] for path in self.examples],
                    inputs=[image],
                    label="Examples (miniature-world test scenes)",
                    elem_id="examples",
                )
            # preprocess=False: gr.Image would open the upload with PIL and fail on a file that is
            # no image before `segment` could say so; the upload (already in Gradio's cache and
            # validated) arrives as {"path": ...}, the other inputs as their plain values.
            button.click(
                self.segment,
                inputs=[image, vocab, mode, threshold],
                outputs=[overlay, table, status],
                concurrency_limit=1,
                preprocess=False,
            )
        return page


def check_request(image, vocabulary, mode, threshold):
    """The request's values as the types `_segment` expects, whatever a client sent (the web
    API takes any JSON): (image path or None, vocabulary text, mode, threshold)."""
    if isinstance(image, dict):  # the page's upload payload {"path": ...}
        image = image.get("path")
    if image is not None and not isinstance(image, str):
        raise UserInputError(f"The image must be a file path or an upload, not {_kind(image)}.")
    if vocabulary is None:
        vocabulary = ""
    if not isinstance(vocabulary, str):
        raise UserInputError(f"The vocabulary must be text, not {_kind(vocabulary)}.")
    if not isinstance(mode, str):
        raise UserInputError(f"The mode must be text, not {_kind(mode)}.")
    if threshold is None:
        threshold = 0.0
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise UserInputError(f"The confidence threshold must be a number, not {_kind(threshold)}.")
    if len(vocabulary) > MAX_VOCABULARY_CHARS:
        raise UserInputError(
            f"The vocabulary is {len(vocabulary):,} characters long: this demo takes at most "
            f"{MAX_VOCABULARY_CHARS:,}."
        )
    return image, vocabulary, mode, float(threshold)


def check_vocabulary(vocabulary: str) -> list[str]:
    entries = parse_vocabulary(vocabulary)
    if len(entries) > MAX_CLASSES:
        raise UserInputError(
            f"The vocabulary has {len(entries):,} classes: this demo takes at most {MAX_CLASSES:,}."
        )
    for entry in entries:
        for name in entry.split("|"):
            if len(name) > MAX_NAME_CHARS:
                raise UserInputError(
                    f"The class name {name[:40]!r}... is {len(name):,} characters long: names "
                    f"of at most {MAX_NAME_CHARS} characters, please."
                )
    return entries


def _kind(value) -> str:
    return f"a {type(value).__name__}" if value is not None else "nothing"


def failure(message: str):
    """What the page shows for bad input: no overlay, an empty table, the message on one line."""
    return None, empty_table(), "**Error:** " + " ".join(message.split())


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=TABLE_COLUMNS)


def shares_table(shares: dict[str, float], names: list[str], colors) -> pd.DataFrame:
    """Classes found (largest first), then the vocabulary's classes found nowhere (0 %)."""
    color_of = {name: "#{:02x}{:02x}{:02x}".format(*c) for name, c in zip(names, colors)}
    color_of["unlabelled"] = "-"
    rows = [(name, color_of[name], round(100 * share, 2)) for name, share in shares.items()]
    rows += [(name, color_of[name], 0.0) for name in names if name not in shares]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def write_examples(folder: str, count: int = NUM_EXAMPLES) -> list[str]:
    """The first test scenes of the miniature world (`make main`'s seed), as PNG files."""
    paths = []
    for index in range(count):
        path = os.path.join(folder, f"miniworld_test_{index:06d}.png")
        Image.fromarray(render_item(0, "test", index, world.WorldParams()).image).save(path)
        paths.append(path)
    return paths


# -- set-up ---------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="CLIP-ZSS web demo (Gradio). Without --config-file or --model-folder it "
        "serves the miniature-world model that `make main` trains; --vocab (-file, -dataset) "
        "sets the vocabulary shown at start (default: the model's).",
    )
    add_config_arguments(parser, model_folder=True, required=False)
    parser.add_argument(
        "--miniworld-output",
        default=str(MINIWORLD_OUTPUT),
        metavar="DIR",
        help="where `make main` (tools/run_miniworld.py --output) left its runs "
        "(default: output/miniworld); used without --config-file",
    )
    add_vocabulary_arguments(parser)  # the vocabulary shown at start (default: the model's)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    add_clip_alone_argument(parser)
    return parser


def miniworld_model(output: str) -> tuple[str, list]:
    """Config file and opts of the main job's model; paths the run wrote relative to the
    repository root (where `make main` runs) are made absolute, so any working folder works."""
    run = Path(output).joinpath(*MINIWORLD_RUN)
    config, weights = run / "config.yaml", run / "model_final.pth"
    for needed in (config, weights):
        if not needed.is_file():
            raise UserInputError(
                f"no miniature-world model at {needed}: run `make main` first (or pass "
                f"--config-file FILE --opts MODEL.WEIGHTS WEIGHTS for another model)."
            )
    cfg = merge_config_file(get_clipzss_cfg(), str(config))
    opts = ["MODEL.WEIGHTS", str(weights), *MINIWORLD_SLIDE]
    for key, value in (
        ("MODEL.CLIPZSS.TEXT.CACHE_DIR", cfg.MODEL.CLIPZSS.TEXT.CACHE_DIR),
        ("MODEL.CLIPZSS.CLIP.PRETRAINED", cfg.MODEL.CLIPZSS.CLIP.PRETRAINED),
    ):
        if value and not os.path.isabs(value) and os.path.exists(ROOT / value):
            opts += [key, str(ROOT / value)]
    return str(config), opts


def load(args) -> WebDemo:
    """Everything that can fail before the server starts (UserInputError: exit 2)."""
    vocabulary = vocabulary_from_args(args)
    apply_clip_alone(args)
    default_vocabulary = None
    if args.config_file is None and not args.model_folder:
        args.config_file, opts = miniworld_model(args.miniworld_output)
        args.opts = opts + list(args.opts)
        default_vocabulary = list(world.CLASSES)
    predictor = build_predictor(load_config(args, cpu_fallback=True), args)
    if args.model_folder:  # a received folder is read, never written
        predictor.model.text_classifier.write_cache = False
    if vocabulary is not None:
        predictor.set_vocabulary(vocabulary.entries)  # checks it now: cache or CLIP weights
        default_vocabulary = vocabulary.entries
    elif default_vocabulary is None:
        default_vocabulary = predictor.vocabulary or []
    # requests' vocabularies are not written to the text cache (the start-up vocabulary of a
    # --config-file model is): a stranger's requests must not fill a disk
    predictor.model.text_classifier.write_cache = False
    folder = tempfile.mkdtemp(prefix="clipzss_web_examples_")
    atexit.register(shutil.rmtree, folder, True)
    return WebDemo(predictor, ", ".join(default_vocabulary), write_examples(folder))


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: nothing is fetched from font servers."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(serve, get_parser().parse_args(argv), prog=PROG)


def private_upload_folder() -> str:
    """Gradio keeps uploads in GRADIO_TEMP_DIR (default: a folder shared by every Gradio app on
    the machine, never emptied). Unless the user chose one, they go to a folder of this process,
    removed when it exits."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return os.environ["GRADIO_TEMP_DIR"]
    folder = tempfile.mkdtemp(prefix="clipzss_web_uploads_")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["GRADIO_TEMP_DIR"] = folder  # read when the page and its server are built
    return folder


def serve(args) -> int:
    app = load(args)
    private_upload_folder()
    page = app.build()
    # SIGTERM (kill, service managers, the browser test) exits like Ctrl-C: atexit clean-up runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    folder = os.path.dirname(app.examples[0]) if app.examples else None
    try:
        page.launch(
            server_name=args.host,
            server_port=args.port,
            allowed_paths=[folder] if folder else None,
            max_file_size="50mb",
            theme=theme(),
            footer_links=[],
        )
    except OSError as e:
        raise UserInputError(f"cannot serve on {args.host}:{args.port} ({e})") from None
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    from detectron2.utils.logger import setup_logger

    for name in ("fvcore", "detectron2", "clipzss_d2"):
        setup_logger(name=name)
    sys.exit(main())
