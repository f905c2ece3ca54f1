"""Converters from the datasets' original downloads to detectron2 label maps (see datasets/)."""

from .coco_stuff import prepare_coco_stuff
from .common import LabelRejected, PrepareError, Summary
from .pascal_context import prepare_pascal_context
from .voc import prepare_voc

__all__ = [
    "LabelRejected",
    "PrepareError",
    "Summary",
    "prepare_coco_stuff",
    "prepare_pascal_context",
    "prepare_voc",
]
