#!/usr/bin/env python
"""Make the self-contained model folder from any checkpoint (train_net.py writes one at the end
of training as OUTPUT_DIR/model; this does the same for another checkpoint).

    python tools/make_model_folder.py --config-file configs/voc.yaml --output voc_model/ \\
        MODEL.WEIGHTS output/voc/model_0009999.pth

The folder holds the deployable config, the student's weights only, the CLIP text embeddings of
the config's vocabularies (training classes and each DATASETS.TEST class list: computed with
the CLIP weights of MODEL.CLIPZSS.CLIP, or read from MODEL.CLIPZSS.TEXT.CACHE_DIR) and a model
card; see clipzss_d2/model_folder.py. No evaluation is run: the card says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

import clipzss_d2  # noqa: E402,F401  (registers the model)
from clipzss_d2.checkpoint import load_student_weights  # noqa: E402
from clipzss_d2.data import register_custom_datasets  # noqa: E402
from clipzss_d2.entry import add_config_arguments, load_config, run_main  # noqa: E402
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.model_folder import check_replaceable, write_model_folder  # noqa: E402
from clipzss_d2.modeling.clip_alone import refuse_clip_alone  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a CLIP-ZSS model folder from a checkpoint")
    add_config_arguments(p, trailing_opts=True)
    p.add_argument("--output", help="the folder to write (default: OUTPUT_DIR/model)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --output even if it is not a model folder this project wrote",
    )
    return p


def run(args) -> int:
    cfg = load_config(args)
    refuse_clip_alone(cfg, "a model folder packages a trained student's checkpoint only.")
    if not cfg.MODEL.WEIGHTS:
        raise UserInputError("MODEL.WEIGHTS is empty: name the checkpoint to package.")
    folder = args.output or os.path.join(cfg.OUTPUT_DIR, "model")
    check_replaceable(folder, overwrite=args.overwrite)  # before the model is built
    register_custom_datasets(cfg)  # DATASETS.CUSTOM class lists, for the vocabularies and card
    build_cfg = cfg.clone()  # the student alone, on the CPU; the folder keeps cfg as trained
    build_cfg.MODEL.DEVICE = "cpu"
    build_cfg.MODEL.CLIPZSS.STUDENT_ONLY = True
    build_cfg.freeze()
    model = build_model(build_cfg).eval()
    extra = load_student_weights(model, cfg.MODEL.WEIGHTS, args.config_file)
    iteration = extra.get("iteration")
    folder = write_model_folder(
        cfg,
        model,
        folder,
        iteration=None if iteration is None else int(iteration) + 1,
        source=cfg.MODEL.WEIGHTS,
        overwrite=args.overwrite,
    )
    print(f"Wrote {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(run, get_parser().parse_args(argv), prog="make_model_folder.py")


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "clipzss_d2"):
        setup_logger(name=name)
    sys.exit(main())
