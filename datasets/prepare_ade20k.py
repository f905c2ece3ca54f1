#!/usr/bin/env python
"""Convert ADE20K-150 (ADEChallengeData2016) labels for clipzss_d2 (see datasets/README.md).

python datasets/prepare_ade20k.py [--root datasets] [--workers 8]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package

from clipzss_d2.data.prepare.ade20k import prepare_ade20k  # noqa: E402
from clipzss_d2.data.prepare.common import add_common_args, run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run_cli(
        lambda: prepare_ade20k(args.root, workers=args.workers, overwrite=args.overwrite),
        args.root,
    )


if __name__ == "__main__":
    sys.exit(main())
