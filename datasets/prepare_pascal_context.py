#!/usr/bin/env python
"""Convert PASCAL Context labels to the 59- or 459-class maps used by clipzss_d2 (see datasets/README.md).

python datasets/prepare_pascal_context.py [--root datasets] [--workers 8] [--source mat]
python datasets/prepare_pascal_context.py --classes 459   # val only, 16-bit PNGs
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

from clipzss_d2.data.prepare.common import add_common_args, run_cli  # noqa: E402
from clipzss_d2.data.prepare.pascal_context import SOURCES, prepare_pascal_context  # noqa: E402
from clipzss_d2.data.prepare.pascal_context459 import prepare_pascal_context459  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument(
        "--classes",
        type=int,
        choices=(59, 459),
        default=59,
        help="59: pc59_{train,val} (zero-shot benchmark); 459: pc459_val (open-vocabulary "
        "evaluation; needs --source mat or detail)",
    )
    parser.add_argument(
        "--source",
        choices=("auto", *SOURCES),
        default="auto",
        help="label source: mat (trainval/*.mat, 459 classes), png (mmseg "
        "SegmentationClassContext), detail (Detail API JSON); auto = the first found, in that order",
    )
    parser.add_argument("--mat-dir", help="default: ROOT/VOCdevkit/VOC2010/trainval")
    parser.add_argument("--png-dir", help="default: ROOT/VOCdevkit/VOC2010/SegmentationClassContext")
    parser.add_argument(
        "--detail-json", help="default: ROOT/VOCdevkit/VOC2010/trainval_merged.json"
    )
    parser.add_argument(
        "--train-list",
        help="default: VOC2010/ImageSets/SegmentationContext/train.txt if present, else "
        "VOC2010/ImageSets/Main/train.txt",
    )
    parser.add_argument("--val-list", help="default: like --train-list, with val.txt")
    args = parser.parse_args(argv)
    prepare = prepare_pascal_context459 if args.classes == 459 else prepare_pascal_context
    return run_cli(
        lambda: prepare(
            args.root,
            workers=args.workers,
            overwrite=args.overwrite,
            source=args.source,
            mat_dir=args.mat_dir,
            png_dir=args.png_dir,
            detail_json=args.detail_json,
            train_list=args.train_list,
            val_list=args.val_list,
        ),
        args.root,
    )


if __name__ == "__main__":
    sys.exit(main())
