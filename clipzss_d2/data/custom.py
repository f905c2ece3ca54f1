"""A user's own zero-shot dataset: one call, or one YAML/JSON file named in the config.

    import clipzss_d2
    clipzss_d2.register_zeroshot_sem_seg(
        "pets_train", "pets/images/train", "pets/labels/train",
        classes=["cat", "dog", "rabbit"], unseen=["rabbit"], label_encoding="palette")

or a dataset file (datasets/README.md, "Your own dataset") listed in `DATASETS.CUSTOM`, which
registers `<name>_<split>` for each split. Registration reads nothing from disk; the first load
of a dataset (detectron2's DatasetCatalog.get, before training starts) checks every image/label
pair and every label value and stops with one message listing what is wrong.
"""

import copy
import json
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ..errors import UserInputError
from ..vocabulary import VocabularyError, parse_vocabulary
from .classes import class_colors
from .label_io import (
    LabelEncoding,
    LabelEncodingError,
    ignore_value,
    read_label_map,
    register_label_encoding,
    unregister_label_encoding,
)

logger = logging.getLogger(__name__)

EVALUATOR_TYPE = "gzss_sem_seg"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_SHOWN = 10


class CustomDatasetError(UserInputError, ValueError):
    """A user dataset (its call, its dataset file or its files) cannot be used as given."""


_loaded: dict[str, list[dict]] = {}  # name -> checked records, so later loads are free


def _check_classes(name, classes, unseen, prompts, colors):
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise CustomDatasetError(
            f"Dataset {name}: `classes` must be a non-empty list of class names (index = class id)."
        )
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise CustomDatasetError(f"Dataset {name}: class name(s) {dup} appear twice in `classes`.")
    unseen = [str(u) for u in (unseen or [])]
    missing = [u for u in unseen if u not in classes]
    if missing:
        raise CustomDatasetError(
            f"Dataset {name}: unseen class(es) {missing} are not in the class list; spell them "
            f"exactly as in `classes` ({', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''})."
        )
    if len(unseen) == len(classes):
        raise CustomDatasetError(
            f"Dataset {name}: every class is unseen; leave at least one seen class to train on."
        )
    if prompts is None:
        prompt_list = list(classes)
    elif isinstance(prompts, dict):
        unknown = [k for k in prompts if k not in classes]
        if unknown:
            raise CustomDatasetError(
                f"Dataset {name}: `prompts` names {unknown}, which are not in the class list."
            )
        prompt_list = [str(prompts.get(c, c)) for c in classes]
    else:
        prompt_list = [str(p) for p in prompts]
        if len(prompt_list) != len(classes):
            raise CustomDatasetError(
                f"Dataset {name}: {len(prompt_list)} prompts for {len(classes)} classes; give one "
                f"per class or a mapping class -> prompt."
            )
    try:
        parse_vocabulary(prompt_list)
    except VocabularyError as e:
        raise CustomDatasetError(f"Dataset {name}: prompt names: {e}") from None
    if colors is None:
        colors = class_colors(len(classes))
    elif len(colors) != len(classes):
        raise CustomDatasetError(
            f"Dataset {name}: {len(colors)} colours for {len(classes)} classes."
        )
    return classes, unseen, prompt_list, [tuple(int(v) for v in c) for c in colors]


def _index_images(image_root: str, image_ext: str | None) -> dict[str, str]:
    """{path relative to image_root without extension: full path}."""
    exts = (image_ext.lower(),) if image_ext else IMAGE_EXTS
    found = {}
    for dirpath, _, files in os.walk(image_root):
        for f in files:
            stem, ext = os.path.splitext(f)
            if ext.lower() in exts and not f.startswith("."):
                rel = os.path.relpath(os.path.join(dirpath, stem), image_root)
                found.setdefault(rel, os.path.join(dirpath, f))
    return found


def _list_labels(label_root: str, label_ext: str) -> dict[str, str]:
    found = {}
    for dirpath, _, files in os.walk(label_root):
        for f in files:
            if f.lower().endswith(label_ext.lower()) and not f.startswith("."):
                rel = os.path.relpath(os.path.join(dirpath, f[: -len(label_ext)]), label_root)
                found[rel] = os.path.join(dirpath, f)
    return found


def _bullets(items: list[str]) -> str:
    shown = "\n  ".join(items[:MAX_SHOWN])
    more = f"\n  ... and {len(items) - MAX_SHOWN} more" if len(items) > MAX_SHOWN else ""
    return f"\n  {shown}{more}"


def load_checked_pairs(
    name: str,
    image_root: str,
    label_root: str,
    encoding: LabelEncoding,
    classes: list[str],
    image_ext: str | None = None,
    label_ext: str = ".png",
    check_labels: bool = True,
) -> list[dict]:
    """Records of every label file with its image, after checking files, sizes and values."""
    if name in _loaded:
        return copy.deepcopy(_loaded[name])
    for what, folder in (("image", image_root), ("label", label_root)):
        if not os.path.isdir(folder):
            raise CustomDatasetError(
                f"Dataset {name}: {what} folder {folder} does not exist; fix the path given at "
                f"registration (relative paths in a dataset file are relative to that file)."
            )
    labels = _list_labels(label_root, label_ext)
    if not labels:
        raise CustomDatasetError(
            f"Dataset {name}: no {label_ext} label file in {label_root}; check label_root and "
            f"label_ext."
        )
    images = _index_images(image_root, image_ext)
    missing = sorted(labels[k] for k in labels if k not in images)
    if missing:
        raise CustomDatasetError(
            f"Dataset {name}: {len(missing)} of {len(labels)} label files have no image of the "
            f"same name in {image_root}; add the images, remove those labels or set image_ext:"
            f"{_bullets(missing)}"
        )
    unlabelled = len(images) - len(labels)
    if unlabelled > 0:
        logger.warning(
            f"Dataset {name}: {unlabelled} images in {image_root} have no label; unused."
        )

    problems, present = [], np.zeros(65536, dtype=bool)
    start, last = time.monotonic(), time.monotonic()
    keys = sorted(labels)
    for n, key in enumerate(keys):
        label_path, image_path = labels[key], images[key]
        try:
            with Image.open(image_path) as img:
                iw, ih = img.size
        except Exception as e:
            problems.append(f"{image_path}: cannot be read as an image ({type(e).__name__})")
            continue
        try:
            if check_labels:
                label = read_label_map(label_path, encoding=encoding)
                lh, lw = label.shape[:2]
                present[np.unique(label)] = True
            else:
                with Image.open(label_path) as lab:
                    lw, lh = lab.size
        except LabelEncodingError as e:
            problems.append(str(e))
            continue
        except Exception as e:
            problems.append(
                f"{label_path}: cannot be read as a label PNG ({type(e).__name__}: {e})"
            )
            continue
        if (lh, lw) != (ih, iw):
            problems.append(
                f"size mismatch: label {label_path} is {lw}x{lh} but image {image_path} is "
                f"{iw}x{ih} (width x height)"
            )
        if time.monotonic() - last > 30:  # plain log lines: readable in files and CI logs
            last = time.monotonic()
            logger.info(f"Dataset {name}: checked {n + 1}/{len(keys)} label files ...")
    if problems:
        raise CustomDatasetError(
            f"Dataset {name}: {len(problems)} of {len(keys)} image/label pairs are unusable; fix "
            f"the files, or the classes / label_encoding if every file is listed:"
            f"{_bullets(problems)}"
        )
    if check_labels:
        never = [c for i, c in enumerate(classes) if not present[i]]
        if never:
            logger.warning(
                f"Dataset {name}: class(es) {never[:MAX_SHOWN]} occur in no label file "
                f"({len(never)} of {len(classes)}); if that is unexpected, check the class order "
                f"and label_encoding offset."
            )
        logger.info(
            f"Dataset {name}: {len(keys)} image/label pairs checked in "
            f"{time.monotonic() - start:.1f}s."
        )
    records = [
        {"file_name": images[k], "sem_seg_file_name": labels[k], "image_id": k} for k in keys
    ]
    _loaded[name] = records
    return copy.deepcopy(records)


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
    check_labels: False skips decoding every label when the dataset is first loaded (sizes and
        files are still checked from the headers); for very large, already verified datasets.
    """
    classes, unseen, prompt_names, colors = _check_classes(name, classes, unseen, prompts, colors)
    try:
        encoding = LabelEncoding.create(len(classes), label_encoding)
    except LabelEncodingError as e:
        raise CustomDatasetError(f"Dataset {name}: {e}") from None
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    _loaded.pop(name, None)
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

FILE_KEYS = {"name", "root", "classes", "classes_file", "unseen", "prompts", "label_encoding",
             "image_ext", "label_ext", "check_labels", "splits"}  # fmt: skip


def read_dataset_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise CustomDatasetError(
            f"Dataset file {path} does not exist (DATASETS.CUSTOM paths are relative to the "
            f"current directory)."
        )
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".json"):
                spec = json.load(f)
            else:
                import yaml

                spec = yaml.safe_load(f)
    except Exception as e:
        raise CustomDatasetError(f"Dataset file {path} cannot be parsed: {e}") from None
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
