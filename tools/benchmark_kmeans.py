#!/usr/bin/env python
"""Micro-benchmark of PLM's batched multi-scale K-Means (+ mask fusion) against scikit-learn.

    python tools/benchmark_kmeans.py --device cpu

The measurement is tools/benchmarking/kmeans.py (its docstring says what it compares).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarking.kmeans import main  # noqa: E402

if __name__ == "__main__":
    main()
