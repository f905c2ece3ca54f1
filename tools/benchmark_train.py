#!/usr/bin/env python
"""Training-step cost of CLIP-ZSS versus the supervised baseline, measured in one run.

    python tools/benchmark_train.py --device cpu --batch 2 --crop 256 --iters 2
    python tools/benchmark_train.py --kmeans    # + K-Means vs scikit-learn

The measurement is tools/benchmarking/train.py (its docstring says what it times).
"""

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# fvcore (which detectron2 imports) scripts a loss with torch.jit at import time and recent
# torch warns about it on every run: the script's own filter, so it comes before the imports.
warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)

from benchmarking.train import main  # noqa: E402

if __name__ == "__main__":
    main()
