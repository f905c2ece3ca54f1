"""Checks of a user's own dataset: its class list at registration, its files at first load.

`check_classes` validates the names, unseen split, prompts and colours given at registration.
`load_checked_pairs` pairs every label file with its image and checks sizes and (by default)
every label value once, then keeps the records so that later loads are free; any problem stops
with one message listing what is wrong.
"""

import copy
import logging
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import UserInputError
from ..vocabulary import VocabularyError, parse_vocabulary
from .classes import class_colors
from .label_io import LabelEncoding, LabelEncodingError, read_label_map

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_SHOWN = 10


class CustomDatasetError(UserInputError, ValueError):
    """A user dataset (its call, its dataset file or its files) cannot be used as given."""


_loaded: dict[str, list[dict]] = {}  # name -> checked records, so later loads are free


def forget_checked(name: str) -> None:
    """Drop the kept records of `name` (it is being registered again)."""
    _loaded.pop(name, None)


def checked_records(name: str) -> list[dict] | None:
    """A copy of the records kept after `name` was checked, or None."""
    return copy.deepcopy(_loaded[name]) if name in _loaded else None


def keep_checked(name: str, records: list[dict]) -> list[dict]:
    """Keep the checked records of `name` (later loads are free); returns a copy."""
    _loaded[name] = records
    return copy.deepcopy(records)


def check_classes(name, classes, unseen, prompts, colors):
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise CustomDatasetError(
            f"Dataset {name}: `classes` must be a non-empty list of class names (index = class id)."
        )
    for what, names in (("classes", classes), ("unseen", unseen or [])):
        for i, c in enumerate(names):
            if not isinstance(c, str):
                hint = (
                    " (YAML reads unquoted no, yes, on, off, true, false and null that way: "
                    "quote the name)"
                    if isinstance(c, bool) or c is None
                    else ""
                )
                raise CustomDatasetError(
                    f"Dataset {name}: `{what}` entry {i} is {c!r}, not a name{hint}."
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
    found: dict[str, list[str]] = {}
    for dirpath, _, files in os.walk(image_root):
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in exts and not f.startswith("."):
                rel = os.path.relpath(os.path.join(dirpath, stem), image_root)
                found.setdefault(rel, []).append(os.path.join(dirpath, f))
    shared = sorted(" and ".join(paths) for paths in found.values() if len(paths) > 1)
    if shared:
        raise CustomDatasetError(
            f"{len(shared)} image name(s) in {image_root} stand for two files, so a label "
            f"would pair with either; rename one of each, or set image_ext:{_bullets(shared)}"
        )
    return {rel: paths[0] for rel, paths in found.items()}


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
                if check_labels:  # decoded whole: a truncated file fails here, not in training
                    img.load()
        except Exception as e:
            problems.append(
                f"{image_path}: cannot be read as an image ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:120]})"
            )
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
