#!/usr/bin/env python
"""Evaluate one trained model on every open-vocabulary set in one run and print one table.

The open-vocabulary protocol trains once (configs/open_vocab/coco_stuff171.yaml: COCO-Stuff,
all 171 classes) and evaluates without re-training on other datasets, each over its own class
list. The student is built once and each dataset is evaluated exactly as `train_net.py
--eval-only` evaluates it (clipzss_d2.evaluation.route); mIoU / pAcc are collected into one
markdown table (also written as JSON).

    python tools/eval_open_vocab.py --config-file configs/open_vocab/coco_stuff171.yaml \\
        MODEL.WEIGHTS output/open_vocab_coco_stuff171/model_final.pth
    python tools/eval_open_vocab.py --config-file ... --datasets ade150_ov_val,voc20_ov_val \\
        --output output/ov_eval MODEL.WEIGHTS ...

Every dataset is checked before any inference starts: a missing one stops the run with the
prepare command to run (exit status 2). Progress goes to the log as plain lines every few
seconds, so a file or a CI log stays readable.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import warnings
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.evaluation import inference_on_dataset  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from tabulate import tabulate  # noqa: E402

import clipzss_d2  # noqa: E402,F401  (registers the datasets and the model)
from clipzss_d2.data import OPEN_VOCAB_EVAL, register_custom_datasets  # noqa: E402
from clipzss_d2.entry import add_config_arguments, load_config, run_main  # noqa: E402
from clipzss_d2.errors import UserInputError  # noqa: E402
from clipzss_d2.evaluation import (  # noqa: E402
    build_eval_student,
    build_gzss_evaluator,
    build_gzss_test_loader,
)
from clipzss_d2.evaluation.gzss_evaluation import V06  # noqa: E402
from clipzss_d2.utils.io import atomic_write_text  # noqa: E402

logger = logging.getLogger("clipzss_d2.eval_open_vocab")
RESULTS_FILE = "open_vocab_results.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser, trailing_opts=True)
    parser.add_argument(
        "--datasets",
        default=",".join(OPEN_VOCAB_EVAL),
        help="comma-separated registered names (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        help="folder for per-dataset results and the table (default: OUTPUT_DIR/open_vocab_eval)",
    )
    return parser.parse_args(argv)


def check_datasets(names: list[str]) -> dict[str, int]:
    """{name: number of images}; every dataset loaded (and its folders checked) up front."""
    counts, problems = {}, []
    for name in names:
        if name not in DatasetCatalog.list():
            problems.append(f"{name} is not a registered dataset")
            continue
        if MetadataCatalog.get(name).get("evaluator_type") != "gzss_sem_seg":
            problems.append(f"{name} is not a clipzss_d2 semantic segmentation dataset")
            continue
        try:
            counts[name] = len(DatasetCatalog.get(name))
        except UserInputError as e:
            problems.append(str(e))
    if problems:
        raise UserInputError(
            "cannot evaluate every requested dataset (prepare them, or drop them with "
            "--datasets):\n  " + "\n  ".join(problems)
        )
    return counts


def evaluate_all(cfg, names: list[str], output: str) -> OrderedDict:
    """Each set through the route of `train_net.py --eval-only` (student only, safe checkpointer,
    the set's vocabulary in each input); only the table is this tool's own."""
    counts = check_datasets(names)
    model = build_eval_student(cfg)
    results = OrderedDict()
    for name in names:
        meta = MetadataCatalog.get(name)
        logger.info(f"Evaluating {name}: {counts[name]} images, {len(meta.stuff_classes)} classes")
        res = inference_on_dataset(
            model,
            build_gzss_test_loader(cfg, name),
            build_gzss_evaluator(cfg, name, os.path.join(output, name), distributed=False),
        )["sem_seg"]
        results[name] = {
            "classes": len(meta.stuff_classes),
            "images": counts[name],
            "mIoU": res["mIoU"],
            "pAcc": res["pAcc"],
            **({f"mIoU{V06}": res[f"mIoU{V06}"]} if f"mIoU{V06}" in res else {}),
        }
    return results


def format_table(results: OrderedDict) -> str:
    v06 = any(f"mIoU{V06}" in r for r in results.values())
    headers = ["dataset", "classes", "images", "mIoU", "pAcc"] + (["mIoU (d2 v0.6)"] if v06 else [])
    rows = [
        [name, r["classes"], r["images"], r["mIoU"], r["pAcc"]]
        + ([r.get(f"mIoU{V06}")] if v06 else [])
        for name, r in results.items()
    ]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f")


def main(argv=None) -> int:
    return run_main(run, parse_args(argv))


def run(args) -> int:
    cfg = load_config(args)
    cfg.freeze()
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "open_vocab_eval")
    setup_logger(name="clipzss_d2")
    setup_logger(name="detectron2", abbrev_name="d2")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    if not names:
        raise UserInputError(f"--datasets {args.datasets!r} names no dataset.")
    register_custom_datasets(cfg)
    results = evaluate_all(cfg, names, output)
    table = format_table(results)
    clean = {n: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
             for n, r in results.items()}  # fmt: skip
    atomic_write_text(
        os.path.join(output, RESULTS_FILE),
        json.dumps({"weights": cfg.MODEL.WEIGHTS, "results": clean}, indent=1),
    )
    print(f"\nOpen-vocabulary evaluation of {cfg.MODEL.WEIGHTS or 'random weights'} "
          f"(mIoU over the classes present in each set's ground truth, %):\n{table}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
