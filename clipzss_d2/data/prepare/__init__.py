"""Converters from the datasets' original downloads to detectron2 label maps (see datasets/)."""

from .ade20k import prepare_ade20k
from .coco_stuff import prepare_coco_stuff
from .common import LabelRejected, PrepareError, Summary
from .pascal_context import prepare_pascal_context
from .pascal_context459 import prepare_pascal_context459
from .voc import prepare_voc

__all__ = [
    "LabelRejected",
    "PrepareError",
    "Summary",
    "prepare_ade20k",
    "prepare_coco_stuff",
    "prepare_pascal_context",
    "prepare_pascal_context459",
    "prepare_voc",
]
