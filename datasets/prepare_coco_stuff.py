#!/usr/bin/env python
"""Convert COCO-Stuff 164k label maps for clipzss_d2 (see datasets/README.md).

python datasets/prepare_coco_stuff.py [--root datasets] [--workers 8]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

from clipzss_d2.data.prepare.coco_stuff import prepare_coco_stuff  # noqa: E402
from clipzss_d2.data.prepare.common import add_common_args, run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument(
        "--maps-dir",
        help="folder holding stuffthingmaps_trainval2017's train2017/ and val2017/ "
        "(default: ROOT/coco/stuffthingmaps, else ROOT/coco/stuffthingmaps_trainval2017)",
    )
    args = parser.parse_args(argv)
    return run_cli(
        lambda: prepare_coco_stuff(
            args.root, workers=args.workers, overwrite=args.overwrite, maps_dir=args.maps_dir
        ),
        args.root,
    )


if __name__ == "__main__":
    sys.exit(main())
