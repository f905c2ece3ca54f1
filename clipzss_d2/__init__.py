"""CLIP-ZSS on Detectron2. Importing the package registers its datasets, models and evaluators.

That is all it does: it leaves the process's warnings filters alone (the entry scripts own theirs)
and imports no training code of the miniature world (its CLIP trainer loads on first use).
"""

import warnings

# Registration imports detectron2, whose first import of fvcore scripts a loss with torch.jit, and
# recent torch warns about that. Quiet for this import only: the process's warnings filters are
# left as they were (scripts that import detectron2 first set their own), and
# `python -m clipzss_d2.miniworld`, which cannot run code before this file, prints no warning.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r".*torch\.jit\.script.*deprecated", FutureWarning)
    from . import data, miniworld, modeling  # noqa: F401  (registration side effects)

from .config import add_clipzss_config, get_clipzss_cfg
from .data.custom import register_zeroshot_from_detectron2, register_zeroshot_sem_seg
from .predictor import OpenVocabularyPredictor, SegmentationResult

__all__ = [
    "OpenVocabularyPredictor",
    "SegmentationResult",
    "add_clipzss_config",
    "get_clipzss_cfg",
    "register_zeroshot_from_detectron2",
    "register_zeroshot_sem_seg",
]
