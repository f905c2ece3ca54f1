"""A user's own zero-shot dataset: one call, or one YAML/JSON file named in the config.

    import clipzss_d2
    clipzss_d2.register_zeroshot_sem_seg(
        "pets_train", "pets/images/train", "pets/labels/train",
        classes=["cat", "dog", "rabbit"], unseen=["rabbit"], label_encoding="palette")

or a dataset file (datasets/README.md, "Your own dataset") listed in `DATASETS.CUSTOM`, which
registers `<name>_<split>` for each split. Registration reads nothing from disk; the first load
of a dataset (detectron2's DatasetCatalog.get, before training starts) checks every image/label
pair and every label value and stops with one message listing what is wrong (custom_checks.py).
"""

import json
import os
from collections.abc import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .custom_checks import CustomDatasetError, check_classes, forget_checked, load_checked_pairs
from .datasets import EVALUATOR_TYPE
from .label_io import (
    LabelEncoding,
    LabelEncodingError,
    ignore_value,
    register_label_encoding,
    unregister_label_encoding,
)

__all__ = [
    "CustomDatasetError",
    "read_dataset_file",
    "register_custom_datasets",
    "register_dataset_file",
    "register_zeroshot_sem_seg",
]


def register_zeroshot_sem_seg(
    name: str,
    image_root: str,
    label_root: str,
    classes: Sequence[str],
    unseen: Sequence[str] = (),
    *,
    label_encoding=None,
    prompts=None,
    colors=None,
    image_ext: str | None = None,
    label_ext: str = ".png",
    check_labels: bool = True,
) -> None:
    """Register a zero-shot semantic segmentation dataset of images + label files.

    classes: class names; index = class id after decoding (see `label_encoding`).
    unseen: names from `classes` held out of training (zero-shot protocol); [] = open vocabulary.
    label_encoding: how the files store the ids (`LabelEncoding`, a dict of its fields, or a
        format name): e.g. {"offset": 1, "void": [0]} for 1-based ids with 0 = unlabelled,
        "palette" for palette PNGs, {"void": [65535]} for 16-bit ids, {"format": "color",
        "colors": [...]} for RGB colour labels. Default: ids 0..N-1, 255 = unlabelled.
    prompts: names given to CLIP (a mapping class -> prompt, or a list); "a|b" = synonyms.
    image_ext: extension of the images (default: any of .jpg .jpeg .png .bmp .tif .webp).
    check_labels: False skips decoding every image and label when the dataset is first loaded
        (sizes and files are still checked from the headers); for very large, already verified
        datasets.
    """
    classes, unseen, prompt_names, colors = check_classes(name, classes, unseen, prompts, colors)
    try:
        encoding = LabelEncoding.create(len(classes), label_encoding)
    except LabelEncodingError as e:
        raise CustomDatasetError(f"Dataset {name}: {e}") from None
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    forget_checked(name)
    unregister_label_encoding(name)
    register_label_encoding(label_root, encoding, name)
    args = (name, image_root, label_root, encoding, classes, image_ext, label_ext, check_labels)
    DatasetCatalog.register(name, lambda: load_checked_pairs(*args))
    MetadataCatalog.get(name).set(
        stuff_classes=classes,
        prompt_names=prompt_names,
        unseen_classes=unseen,
        stuff_colors=colors,
        ignore_label=ignore_value(len(classes)),
        evaluator_type=EVALUATOR_TYPE,
        image_root=image_root,
        sem_seg_root=label_root,
        label_encoding=encoding.to_dict(),
        benchmark="custom",
    )


# ---- dataset files ---------------------------------------------------------------------------

MAX_FILE_BYTES = 1 << 20
FILE_KEYS = {"name", "root", "classes", "classes_file", "unseen", "prompts", "label_encoding",
             "image_ext", "label_ext", "check_labels", "splits"}  # fmt: skip


def read_dataset_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise CustomDatasetError(
            f"Dataset file {path} does not exist (DATASETS.CUSTOM paths are relative to the "
            f"current directory)."
        )
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise CustomDatasetError(
            f"Dataset file {path} is over {MAX_FILE_BYTES // 2**20} MB; a dataset file names "
            f"folders and classes (put long class lists in a classes_file)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            spec = json.loads(text)
        else:
            import yaml

            # anchors and aliases let a few bytes stand for an exponentially large tree
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
                raise CustomDatasetError(
                    f"Dataset file {path} uses YAML aliases (*name); write the values out."
                )
            spec = yaml.safe_load(text)
    except CustomDatasetError:
        raise
    except Exception as e:
        raise CustomDatasetError(
            f"Dataset file {path} cannot be parsed: {' '.join(str(e).split())}"
        ) from None
    if not isinstance(spec, dict):
        raise CustomDatasetError(
            f"Dataset file {path} must hold a mapping (name, classes, splits)."
        )
    unknown = sorted(set(spec) - FILE_KEYS)
    if unknown:
        raise CustomDatasetError(
            f"Dataset file {path}: unknown key(s) {unknown}; allowed: {', '.join(sorted(FILE_KEYS))}."
        )
    for key in ("name", "splits"):
        if key not in spec:
            raise CustomDatasetError(f"Dataset file {path} lacks `{key}`.")
    if ("classes" in spec) == ("classes_file" in spec):
        raise CustomDatasetError(
            f"Dataset file {path} needs exactly one of `classes` (a list) or `classes_file` "
            f"(a text file with one class per line)."
        )
    return spec


def register_dataset_file(path: str) -> list[str]:
    """Register `<name>_<split>` for each split of a dataset file; returns the names."""
    spec = read_dataset_file(path)
    base = os.path.dirname(os.path.abspath(path))
    root = os.path.join(base, os.path.expanduser(str(spec.get("root", "."))))

    def resolve(p: str) -> str:
        return os.path.normpath(os.path.join(root, os.path.expanduser(str(p))))

    if "classes_file" in spec:
        classes_path = resolve(spec["classes_file"])
        if not os.path.isfile(classes_path):
            raise CustomDatasetError(f"Dataset file {path}: classes_file {classes_path} not found.")
        with open(classes_path, encoding="utf-8") as f:
            classes = [line.strip() for line in f if line.strip()]
    else:
        classes = spec["classes"]
    splits = spec["splits"]
    if not isinstance(splits, dict) or not splits:
        raise CustomDatasetError(
            f"Dataset file {path}: `splits` must map split names to {{images: ..., labels: ...}}."
        )
    names = []
    for split, folders in splits.items():
        if not isinstance(folders, dict) or set(folders) != {"images", "labels"}:
            raise CustomDatasetError(
                f"Dataset file {path}: split {split!r} must give exactly `images` and `labels` "
                f"folders."
            )
        name = f"{spec['name']}_{split}"
        if name in DatasetCatalog.list() and MetadataCatalog.get(name).get("benchmark") != "custom":
            raise CustomDatasetError(
                f"Dataset file {path}: {name} is a dataset this project or detectron2 already "
                f"registers; choose another `name`."
            )
        register_zeroshot_sem_seg(
            name,
            resolve(folders["images"]),
            resolve(folders["labels"]),
            classes,
            spec.get("unseen") or [],
            label_encoding=spec.get("label_encoding"),
            prompts=spec.get("prompts"),
            image_ext=spec.get("image_ext"),
            label_ext=spec.get("label_ext", ".png"),
            check_labels=bool(spec.get("check_labels", True)),
        )
        MetadataCatalog.get(name).set(dataset_file=os.path.abspath(path))
        names.append(name)
    return names


def register_custom_datasets(cfg) -> list[str]:
    """Register the dataset files of cfg.DATASETS.CUSTOM and check those the config uses.

    Call after the config is merged, before building the model (train_net's main does). The
    train and test sets among them are loaded (checked) here, so a bad file stops the run before
    training starts rather than at the first evaluation.
    """
    files = list(cfg.DATASETS.get("CUSTOM", []) or [])
    names = []
    for path in files:
        names += register_dataset_file(path)
    used = [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if n in names]
    for name in dict.fromkeys(used):
        DatasetCatalog.get(name)
    return names
