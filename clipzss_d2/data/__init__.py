"""Dataset registration, mappers and prepare helpers.

Importing this package registers the benchmark datasets (names in datasets/README.md) under
$DETECTRON2_DATASETS (default ./datasets); nothing is read from disk until a dataset is used.
"""

from . import classes
from .dataset_mapper import ZeroShotSemSegDatasetMapper, get_training_vocabulary, shared_metadata
from .datasets import DATASETS, DatasetNotPreparedError, register_all_zeroshot, registered_root
from .label_io import read_label_map
from .transforms import ColorAugSSD, PhotometricDistortTransform

register_all_zeroshot()

__all__ = [
    "DATASETS",
    "ColorAugSSD",
    "DatasetNotPreparedError",
    "PhotometricDistortTransform",
    "ZeroShotSemSegDatasetMapper",
    "classes",
    "get_training_vocabulary",
    "read_label_map",
    "register_all_zeroshot",
    "registered_root",
    "shared_metadata",
]
