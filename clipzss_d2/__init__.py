"""CLIP-ZSS on Detectron2. Importing the package registers its datasets, models and evaluators."""

import warnings

# fvcore scripts a loss with torch.jit at import time; recent torch warns about it on every run.
warnings.filterwarnings(
    "ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning
)

from . import data, miniworld, modeling  # noqa: E402,F401  (registration side effects)
from .config import add_clipzss_config, get_clipzss_cfg  # noqa: E402
from .data.custom import register_zeroshot_sem_seg  # noqa: E402
from .predictor import OpenVocabularyPredictor, SegmentationResult  # noqa: E402

__all__ = [
    "OpenVocabularyPredictor",
    "SegmentationResult",
    "add_clipzss_config",
    "get_clipzss_cfg",
    "register_zeroshot_sem_seg",
]
