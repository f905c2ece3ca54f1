"""What every command line of the project shares: the config and vocabulary arguments, and the
rule that a user's mistake ends the command with one line on stderr and exit status 2.

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, model_folder=True)
    add_vocabulary_arguments(parser)
    args = parser.parse_args(argv)
    return run_main(run, args, prog="demo.py")     # run(args) -> exit status

    def run(args):
        cfg = load_config(args)                       # UserInputError on any bad file / override
        vocabulary = vocabulary_from_args(args)       # a Vocabulary, or None without a flag
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from .config import get_clipzss_cfg
from .errors import USER_ERRORS, UserInputError
from .model_folder import CONFIG_FILE, load_folder_config
from .utils.config_loading import check_device, merge_config, use_cpu_without_gpu
from .vocabulary import Vocabulary, dataset_vocabulary, parse_vocabulary, read_vocabulary_file

EXIT_USAGE = 2
# How messages name the overrides: the `--opts KEY VALUE ...` flag, or trailing KEY VALUE words
# (detectron2's own parser, used by train_net.py, has the latter).
OPTS_FLAG, TRAILING_OPTS = "--opts", "overrides (KEY VALUE)"


# -- user errors ----------------------------------------------------------------------------------
def report_user_error(error: BaseException, prog: str | None = None) -> int:
    """Print `prog: error: message` (`error: message` without prog); returns EXIT_USAGE."""
    prefix = f"{prog}: error: " if prog else "error: "
    print(f"{prefix}{error}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def exit_on_user_error(prog: str | None = None, *, system_exit: bool = False):
    """Decorator: a USER_ERRORS exception is reported on one line and the call returns
    EXIT_USAGE, or raises SystemExit(EXIT_USAGE) with `system_exit` (for functions whose return
    value is not the exit status, e.g. one that detectron2's `launch` runs)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as e:
                status = report_user_error(e, prog)
                if system_exit:
                    sys.exit(status)
                return status

        return wrapper

    return decorate


def run_main(fn: Callable[..., int], *args, prog: str | None = None) -> int:
    """`fn(*args)`, its exit status; a user error becomes one line on stderr and EXIT_USAGE."""
    return exit_on_user_error(prog)(fn)(*args)


# -- config -----------------------------------------------------------------------------------------
def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    model_folder: bool = False,
    required: bool = True,
    trailing_opts: bool = False,
) -> None:
    """--config-file (or, with `model_folder`, exactly one of it and --model-folder) and the
    KEY VALUE overrides: `--opts ...`, or trailing words with `trailing_opts`."""
    group = parser.add_mutually_exclusive_group(required=required) if model_folder else parser
    group.add_argument(
        "--config-file", metavar="FILE", required=required and not model_folder, help="config file"
    )
    if model_folder:
        group.add_argument(
            "--model-folder",
            metavar="DIR",
            help="a model folder (OUTPUT_DIR/model of train_net.py): config, weights and text "
            "cache in one; the overrides still apply to its config",
        )
    overrides = "config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth"
    if trailing_opts:
        parser.add_argument("opts", nargs=argparse.REMAINDER, help=overrides)
    else:
        parser.add_argument(OPTS_FLAG, default=[], nargs=argparse.REMAINDER, help=overrides)
    parser.set_defaults(opts_name=TRAILING_OPTS if trailing_opts else OPTS_FLAG)


def load_config(args, *, cpu_fallback: bool = False):
    """The config of --model-folder or --config-file, overrides merged (not frozen). Missing
    or malformed files and bad overrides are UserInputError. `cpu_fallback`: a CUDA device
    without a GPU becomes the CPU (model folders always do this)."""
    opts_name = getattr(args, "opts_name", TRAILING_OPTS)
    if getattr(args, "model_folder", None):
        return check_device(load_folder_config(args.model_folder, args.opts, opts_name))
    cfg = check_device(merge_config(get_clipzss_cfg(), args.config_file, args.opts, opts_name))
    return use_cpu_without_gpu(cfg) if cpu_fallback else cfg


def config_name(args) -> str:
    """The config file that `load_config(args)` reads, for messages."""
    if getattr(args, "model_folder", None):
        return os.path.join(args.model_folder, CONFIG_FILE)
    return args.config_file


def add_clip_alone_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clip-alone",
        action="store_true",
        help="segment with CLIP alone (the teacher's dense patch tokens x text embeddings, "
        "MODEL.META_ARCHITECTURE CLIPAlone): the training-free baseline, no student, "
        "MODEL.WEIGHTS not used; the outputs are labelled so",
    )


def apply_clip_alone(args) -> None:
    """--clip-alone: MODEL.META_ARCHITECTURE CLIPAlone added to the overrides (before
    `load_config`). A model folder is a trained student: the two are refused together."""
    if not getattr(args, "clip_alone", False):
        return
    if getattr(args, "model_folder", None):
        raise UserInputError(
            "--clip-alone cannot be used with --model-folder (a trained student): pass the "
            "--config-file whose CLIP and inference settings CLIP alone should use."
        )
    from .modeling.clip_alone import META_ARCHITECTURE

    args.opts = [*args.opts, "MODEL.META_ARCHITECTURE", META_ARCHITECTURE]


BACKENDS = ("pytorch", "onnx")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="pytorch",
        help="pytorch (default): the student from the config's weights; onnx: an exported "
        "student under onnxruntime (--export-folder), same labels, its export's fixed vocabulary",
    )
    parser.add_argument(
        "--export-folder",
        help="with --backend onnx: the --output folder of tools/export_model.py --format onnx "
        "--output-kind logits",
    )


def check_backend(args) -> None:
    """--backend / --export-folder / --clip-alone: the combinations that mean something."""
    backend, folder = getattr(args, "backend", "pytorch"), getattr(args, "export_folder", None)
    if backend == "onnx" and not folder:
        raise UserInputError(
            "--backend onnx needs --export-folder: the --output folder of tools/export_model.py "
            "--format onnx --output-kind logits."
        )
    if folder and backend != "onnx":
        raise UserInputError("--export-folder is read only with --backend onnx: add it.")
    if backend == "onnx" and getattr(args, "clip_alone", False):
        raise UserInputError(
            "--clip-alone cannot run with --backend onnx: CLIP alone is not exported (drop one)."
        )


def build_predictor(cfg, args, vocabulary=None):
    """OpenVocabularyPredictor of `cfg`, or with --backend onnx the exported student under
    onnxruntime (OnnxPredictor, resized as `cfg` says); config values the model refuses while
    it is built (e.g. MODEL.CLIPZSS.INFERENCE checks, ValueError) are user errors naming the
    config."""
    if getattr(args, "backend", "pytorch") == "onnx":
        from .onnx_backend import OnnxPredictor

        predictor = OnnxPredictor.from_config(args.export_folder, cfg)
        if vocabulary is not None:
            predictor.set_vocabulary(vocabulary)
        return predictor
    from .predictor import OpenVocabularyPredictor  # the model stack, only for commands using it

    name = config_name(args)
    try:
        return OpenVocabularyPredictor(cfg, vocabulary, config_name=name)
    except ValueError as e:
        if isinstance(e, USER_ERRORS):
            raise
        opts_name = getattr(args, "opts_name", TRAILING_OPTS)
        raise UserInputError(f"Invalid config ({name} / {opts_name}): {e}") from None


# -- vocabulary -----------------------------------------------------------------------------------
def add_vocabulary_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """One of --vocab, --vocab-file, --vocab-dataset (`required`, or none for the config's)."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--vocab", help='comma-separated classes, "|" for synonyms: "cat,sofa|couch"'
    )
    group.add_argument("--vocab-file", help="text file with one class per line")
    group.add_argument("--vocab-dataset", help="use the classes of a registered dataset")


def vocabulary_from_args(args) -> Vocabulary | None:
    """The vocabulary the flags name (a dataset's with its colours); None when none is given."""
    if args.vocab is not None:
        if not args.vocab.strip():
            raise UserInputError('--vocab is empty: give class names, e.g. --vocab "cat,sofa".')
        return Vocabulary.of(parse_vocabulary(args.vocab))
    if args.vocab_file is not None:
        return Vocabulary.of(read_vocabulary_file(args.vocab_file))
    if args.vocab_dataset is not None:
        return dataset_vocabulary(args.vocab_dataset)
    return None
