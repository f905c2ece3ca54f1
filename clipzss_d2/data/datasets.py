"""Registration of the zero-shot (zs) and open-vocabulary (ov) benchmark datasets.

Seen/unseen is metadata on one full-label split: every name of a benchmark reads the same label
files, and the training mapper turns unseen pixels into ignore on the fly. Nothing is read from
disk here; the loader checks the folders when a dataset is first used.

The open-vocabulary protocol (train on COCO-Stuff's 171 classes, evaluate on other datasets
without re-training) uses `coco_stuff171_ov_train` and the `*_ov_val` names. Context-459's ids
reach 458, so its prepared maps are 16-bit PNGs with ignore 65535.
"""

import functools
import os
from dataclasses import dataclass

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import UserInputError
from ..utils.io import datasets_root as default_root
from . import classes as C

EVALUATOR_TYPE = "gzss_sem_seg"
IGNORE_LABEL = 255


class DatasetNotPreparedError(UserInputError, FileNotFoundError):
    """A registered dataset's files are not where the prepare script writes them."""


@dataclass(frozen=True)
class Benchmark:
    classes: tuple[str, ...]
    prompts: dict[str, str]
    image_dir: str  # relative to the dataset root
    label_dir: str  # relative to the dataset root, "{split}" filled in
    splits: dict[str, str]  # our split name -> folder split name
    prepare: str  # the command that writes label_dir
    ignore_label: int = IGNORE_LABEL


BENCHMARKS = {
    "voc20": Benchmark(
        C.VOC20_CLASSES,
        C.VOC20_PROMPTS,
        "VOC2012/JPEGImages",
        "VOC2012/annotations_detectron2/{split}",
        {"train": "train", "val": "val"},
        "python datasets/prepare_voc.py",
    ),
    "coco_stuff171": Benchmark(
        C.COCO_STUFF171_CLASSES,
        C.COCO_STUFF171_PROMPTS,
        "coco/{split}",
        "coco/stuffthingmaps_detectron2/{split}",
        {"train": "train2017", "val": "val2017"},
        "python datasets/prepare_coco_stuff.py",
    ),
    "pcontext59": Benchmark(
        C.PCONTEXT59_CLASSES,
        C.PCONTEXT59_PROMPTS,
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc59_{split}",
        {"train": "train", "val": "val"},
        "python datasets/prepare_pascal_context.py",
    ),
    "ade150": Benchmark(
        C.ADE150_CLASSES,
        C.ADE150_PROMPTS,
        "ADEChallengeData2016/images/{split}",
        "ADEChallengeData2016/annotations_detectron2/{split}",
        {"train": "training", "val": "validation"},
        "python datasets/prepare_ade20k.py",
    ),
    "pcontext459": Benchmark(
        C.PCONTEXT459_CLASSES,
        C.PCONTEXT459_PROMPTS,
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc459_{split}",
        {"val": "val"},
        "python datasets/prepare_pascal_context.py --classes 459",
        ignore_label=65535,
    ),
}

# name -> (benchmark, split, unseen class names)
DATASETS = {
    "voc20_zs_train": ("voc20", "train", C.VOC20_UNSEEN),
    "voc20_zs_val": ("voc20", "val", C.VOC20_UNSEEN),
    "voc20_ov_val": ("voc20", "val", ()),
    "coco_stuff171_zs_train": ("coco_stuff171", "train", C.COCO_STUFF171_UNSEEN),
    "coco_stuff171_zs_val": ("coco_stuff171", "val", C.COCO_STUFF171_UNSEEN),
    "coco_stuff171_ov_train": ("coco_stuff171", "train", ()),
    "coco_stuff171_ov_val": ("coco_stuff171", "val", ()),
    "pcontext59_zs_train": ("pcontext59", "train", C.PCONTEXT59_UNSEEN_ZS3),
    "pcontext59_zs_val": ("pcontext59", "val", C.PCONTEXT59_UNSEEN_ZS3),
    "pcontext59_zsb_train": ("pcontext59", "train", C.PCONTEXT59_UNSEEN_ZSB),
    "pcontext59_zsb_val": ("pcontext59", "val", C.PCONTEXT59_UNSEEN_ZSB),
    "pcontext59_ov_val": ("pcontext59", "val", ()),
    "pcontext459_ov_val": ("pcontext459", "val", ()),
    "ade150_ov_val": ("ade150", "val", ()),
}
# The cross-dataset open-vocabulary evaluation sets, in the order of the field's tables.
OPEN_VOCAB_EVAL = (
    "ade150_ov_val",
    "pcontext459_ov_val",
    "pcontext59_ov_val",
    "voc20_ov_val",
)


def load_sem_seg_pairs(
    name: str, image_root: str, sem_seg_root: str, prepare: str, image_ext: str = ".jpg"
) -> list[dict]:
    """One dict per label PNG in `sem_seg_root`, with its image from `image_root`."""
    hint = (
        f"Run `{prepare}` (see datasets/README.md) with the same dataset root, or point "
        f"$DETECTRON2_DATASETS at the folder that holds the prepared data "
        f"(now {os.getenv('DETECTRON2_DATASETS', 'unset, so ./datasets')})."
    )
    if not os.path.isdir(sem_seg_root):
        raise DatasetNotPreparedError(
            f"Dataset {name}: label folder {sem_seg_root} does not exist. {hint}"
        )
    if not os.path.isdir(image_root):
        raise DatasetNotPreparedError(
            f"Dataset {name}: image folder {image_root} does not exist. {hint}"
        )
    labels = sorted(
        f for f in os.listdir(sem_seg_root) if f.endswith(".png") and not f.startswith(".")
    )
    if not labels:
        raise DatasetNotPreparedError(f"Dataset {name}: no label PNG in {sem_seg_root}. {hint}")
    records, missing = [], []
    for f in labels:
        stem = f[: -len(".png")]
        image = os.path.join(image_root, stem + image_ext)
        if not os.path.isfile(image):
            missing.append(image)
            continue
        records.append(
            {
                "file_name": image,
                "sem_seg_file_name": os.path.join(sem_seg_root, f),
                "image_id": stem,
            }
        )
    if missing:
        raise DatasetNotPreparedError(
            f"Dataset {name}: {len(missing)} of {len(labels)} labels in {sem_seg_root} have no "
            f"image (e.g. {missing[0]}). Extract the images of this split to {image_root}."
        )
    return records


def register_zeroshot_dataset(name: str, root: str) -> None:
    benchmark_key, split, unseen = DATASETS[name]
    b = BENCHMARKS[benchmark_key]
    folder_split = b.splits[split]
    image_root = os.path.join(root, b.image_dir.format(split=folder_split))
    sem_seg_root = os.path.join(root, b.label_dir.format(split=folder_split))
    DatasetCatalog.register(
        name,
        functools.partial(load_sem_seg_pairs, name, image_root, sem_seg_root, b.prepare),
    )
    MetadataCatalog.get(name).set(
        stuff_classes=list(b.classes),
        prompt_names=C.prompt_list(b.classes, b.prompts),
        unseen_classes=list(unseen),
        stuff_colors=C.class_colors(len(b.classes)),
        ignore_label=b.ignore_label,
        evaluator_type=EVALUATOR_TYPE,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        benchmark=benchmark_key,
    )


_registered_root: str | None = None


def registered_root() -> str | None:
    """The root the datasets are registered under now."""
    return _registered_root


def register_all_zeroshot(root: str | None = None) -> None:
    """(Re-)register every dataset under `root` (default: $DETECTRON2_DATASETS or ./datasets)."""
    global _registered_root
    root = default_root() if root is None else root
    _registered_root = root
    for name in DATASETS:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_zeroshot_dataset(name, root)
