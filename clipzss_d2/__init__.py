"""CLIP-ZSS on Detectron2. Importing the package registers its datasets, models and evaluators."""

from . import data, modeling  # noqa: F401  (registration side effects)
from .config import add_clipzss_config

__all__ = ["add_clipzss_config"]
