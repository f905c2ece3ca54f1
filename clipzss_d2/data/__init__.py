"""Dataset registration, mappers and prepare helpers.

Importing this package registers the benchmark datasets (names in datasets/README.md) under
$DETECTRON2_DATASETS (default ./datasets); nothing is read from disk until a dataset is used.
"""

from . import classes
from .custom import (
    CustomDatasetError,
    register_custom_datasets,
    register_dataset_file,
    register_zeroshot_from_detectron2,
    register_zeroshot_sem_seg,
)
from .dataset_mapper import ZeroShotSemSegDatasetMapper, get_training_vocabulary, shared_metadata
from .datasets import (
    DATASETS,
    OPEN_VOCAB_EVAL,
    DatasetNotPreparedError,
    register_all_zeroshot,
    registered_root,
)
from .label_io import LabelEncoding, LabelEncodingError, read_label_map
from .transforms import ColorAugSSD, PhotometricDistortTransform

register_all_zeroshot()

__all__ = [
    "DATASETS",
    "OPEN_VOCAB_EVAL",
    "ColorAugSSD",
    "CustomDatasetError",
    "DatasetNotPreparedError",
    "LabelEncoding",
    "LabelEncodingError",
    "PhotometricDistortTransform",
    "ZeroShotSemSegDatasetMapper",
    "classes",
    "get_training_vocabulary",
    "read_label_map",
    "register_all_zeroshot",
    "register_custom_datasets",
    "register_dataset_file",
    "register_zeroshot_from_detectron2",
    "register_zeroshot_sem_seg",
    "registered_root",
    "shared_metadata",
]
