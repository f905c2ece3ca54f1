#!/usr/bin/env python
"""Convert PASCAL VOC 2012 labels for clipzss_d2 (see datasets/README.md).

python datasets/prepare_voc.py [--root datasets] [--workers 8]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

from clipzss_d2.data.prepare.common import add_common_args, run_cli  # noqa: E402
from clipzss_d2.data.prepare.voc import prepare_voc  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument(
        "--aug-dir", help="SBD SegmentationClassAug folder (default: ROOT/VOC2012/...)"
    )
    parser.add_argument(
        "--aug-list",
        help="train_aug id list (default: ROOT/VOC2012/ImageSets/SegmentationAug/train_aug.txt)",
    )
    parser.add_argument(
        "--train-list", help="train id list without SBD (default: ImageSets/Segmentation/train.txt)"
    )
    parser.add_argument("--val-list", help="val id list (default: ImageSets/Segmentation/val.txt)")
    aug = parser.add_mutually_exclusive_group()
    aug.add_argument("--no-aug", action="store_true", help="ignore SBD: train on the 1,464 ids")
    aug.add_argument(
        "--require-aug", action="store_true", help="fail if SBD SegmentationClassAug is missing"
    )
    args = parser.parse_args(argv)
    use_aug = False if args.no_aug else (True if args.require_aug else None)
    return run_cli(
        lambda: prepare_voc(
            args.root,
            workers=args.workers,
            overwrite=args.overwrite,
            aug_dir=args.aug_dir,
            aug_list=args.aug_list,
            train_list=args.train_list,
            val_list=args.val_list,
            use_aug=use_aug,
        ),
        args.root,
    )


if __name__ == "__main__":
    sys.exit(main())
