"""COCO-style JSON annotations as a zero-shot semantic segmentation dataset: the loader and its
keyed cache of label maps.

A dataset is a JSON file with its image folder (and, for panoptic, its PNG folder), or one
registered in detectron2's catalog with `register_coco_instances`, `register_coco_panoptic` or
`register_coco_panoptic_separated` (its metadata names the files). The first load checks the
file (coco_json.py), then rasterises each image once (coco_rasterise.py) into a cache folder of
plain label PNGs (ids 0..N-1, ignore 255) keyed by a hash of the annotation file, the rules and
the class list, so a changed file or rule never reuses a stale map; the training mapper and the
GZS evaluator then read those PNGs like any prepared dataset, so both see the same maps. Why PNGs
and not on the fly: see datasets/README.md, "Your own dataset".
"""

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .coco_json import (
    ClassPlan,
    check_categories,
    check_instances,
    check_panoptic,
    is_panoptic,
    plan_classes,
    read_annotation_json,
)
from .coco_rasterise import RasterRules, rasterise_instances, rasterise_panoptic
from .custom_checks import MAX_SHOWN, CustomDatasetError, _bullets
from .label_io import ignore_value

logger = logging.getLogger(__name__)

CACHE_VERSION = "1"  # bump when the rasteriser's output changes, so old caches are not reused


# ---- the dataset ----------------------------------------------------------------------------


def default_cache_dir() -> str:
    """$CLIPZSS_CACHE_DIR, else $XDG_CACHE_HOME/clipzss/sem_seg (~/.cache/clipzss/sem_seg)."""
    env = os.getenv("CLIPZSS_CACHE_DIR")
    if env:
        return os.path.expanduser(env)
    base = os.getenv("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "clipzss", "sem_seg")


def _hash_file(h, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def cache_key(path: str, plan: ClassPlan, rules: RasterRules, panoptic_root: str | None) -> str:
    h = hashlib.sha256()
    h.update(f"clipzss-coco-json-v{CACHE_VERSION}\n".encode())
    _hash_file(h, path)
    h.update(json.dumps([rules.to_dict(), plan.classes, sorted(plan.category_to_class.items()),
                         plan.unannotated_value]).encode())  # fmt: skip
    if panoptic_root is not None:  # the PNGs: names, sizes and times (cheap; a copy re-rasterises)
        for dirpath, _, files in sorted(os.walk(panoptic_root)):
            for f in sorted(files):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{os.path.relpath(dirpath, panoptic_root)}/{f}:{st.st_size}:"
                         f"{st.st_mtime_ns}\n".encode())  # fmt: skip
    return h.hexdigest()[:16]


def _safe(text) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))[:80]


def _safe_stem(image_id, index: int) -> str:
    """The cache file name of an image: its position (unique) and its id (readable)."""
    return f"{index:07d}_{_safe(image_id)}"


def _write_png(array: np.ndarray, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)  # atomic: concurrent ranks write the same bytes


@dataclass(frozen=True)
class CocoSource:
    """Where a COCO-style dataset's files are."""

    annotation_json: str
    image_root: str
    panoptic_root: str | None = None  # panoptic PNG folder (panoptic JSON only)


def load_coco_sem_seg(
    name: str,
    source: CocoSource,
    plan_args: tuple,
    rules: RasterRules,
    cache_dir: str,
    check_images: bool = True,
    data: dict | None = None,
) -> tuple[list[dict], str, ClassPlan]:
    """Check annotations and images, rasterise into the cache: (records, cache folder, plan)."""
    path = source.annotation_json
    data = read_annotation_json(path) if data is None else data
    categories = check_categories(path, data)
    plan = plan_classes(path, categories, *plan_args, rules)
    panoptic = is_panoptic(data)
    if panoptic:
        root = source.panoptic_root or os.path.splitext(path)[0]
        if not os.path.isdir(root):
            raise CustomDatasetError(
                f"Dataset {name}: panoptic PNG folder {root} does not exist (panopticapi keeps "
                f"them in a folder named like the JSON; give panoptic_root)."
            )
        images, per_image = check_panoptic(path, data, categories)
    else:
        root = None
        images, per_image = check_instances(path, data, categories)
    if not os.path.isdir(source.image_root):
        raise CustomDatasetError(
            f"Dataset {name}: image folder {source.image_root} does not exist."
        )

    problems, empty = [], []
    entries = []
    for index, (image_id, im) in enumerate(images.items()):
        image_path = os.path.join(source.image_root, im["file_name"])
        try:
            with Image.open(image_path) as img:
                size = img.size
                if check_images:
                    img.load()
        except FileNotFoundError:
            problems.append(f"{image_path}: not found (image id {image_id} of {path})")
            continue
        except Exception as e:
            problems.append(
                f"{image_path}: cannot be read as an image ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:120]}; image id {image_id})"
            )
            continue
        if size != (im["width"], im["height"]):
            rotated = size == (im["height"], im["width"])
            problems.append(
                f"{image_path} is {size[0]}x{size[1]} but {path} says {im['width']}x"
                f"{im['height']} (image id {image_id})"
                + (
                    "; annotated on the EXIF-rotated view? Maps use the stored pixels"
                    if rotated
                    else ""
                )
            )
            continue
        if panoptic:
            ann = per_image.get(image_id)
            if ann is None or not ann["segments_info"]:
                empty.append(im["file_name"])
            if ann is not None and not os.path.isfile(os.path.join(root, ann["file_name"])):
                problems.append(
                    f"{os.path.join(root, ann['file_name'])}: panoptic PNG not found (image id "
                    f"{image_id})"
                )
                continue
        elif not per_image[image_id]:
            empty.append(im["file_name"])
        entries.append((index, image_id, im, image_path))
    if problems:
        raise CustomDatasetError(
            f"Dataset {name}: {len(problems)} of {len(images)} images of {path} are unusable:"
            f"{_bullets(problems)}"
            if len(problems) > 1
            else f"Dataset {name}: {problems[0]}"
        )
    if empty:
        keep = rules.unannotated != "ignore"
        logger.warning(
            f"Dataset {name}: {len(empty)} of {len(images)} images in {path} have no annotation"
            f"{'; their maps are all ' + rules.unannotated if keep else ' and are left out'}: "
            f"{empty[:MAX_SHOWN]}{' ...' if len(empty) > MAX_SHOWN else ''}"
        )
        if not keep:
            drop = set(empty)
            entries = [e for e in entries if e[2]["file_name"] not in drop]
    if not entries:
        raise CustomDatasetError(f"Dataset {name}: no annotated image in {path}.")

    key = cache_key(path, plan, rules, root)
    folder = os.path.join(cache_dir, f"{_safe(name)}-{key}")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise CustomDatasetError(
            f"Dataset {name}: cannot create the label cache folder {folder} ({e.strerror}); "
            f"give cache_dir (or set $CLIPZSS_CACHE_DIR) to a writable folder."
        ) from None
    start, last, made = time.monotonic(), time.monotonic(), 0
    records = []
    for n, (index, image_id, im, image_path) in enumerate(entries):
        label_path = os.path.join(folder, _safe_stem(image_id, index) + ".png")
        if not os.path.isfile(label_path):
            h, w = im["height"], im["width"]
            if panoptic:
                ann = per_image.get(image_id)
                if ann is None:
                    dtype = np.uint8 if ignore_value(len(plan.classes)) == 255 else np.uint16
                    sem = np.full((h, w), plan.unannotated_value, dtype)
                else:
                    png = os.path.join(root, ann["file_name"])
                    sem = rasterise_panoptic(png, ann, h, w, plan, rules)
            else:
                sem = rasterise_instances(per_image[image_id], h, w, plan, rules)
            _write_png(sem, label_path)
            made += 1
        if time.monotonic() - last > 30:
            last = time.monotonic()
            logger.info(f"Dataset {name}: rasterised {n + 1}/{len(entries)} maps ...")
        records.append(
            {
                "file_name": image_path,
                "sem_seg_file_name": label_path,
                "image_id": image_id,
                "height": im["height"],
                "width": im["width"],
            }
        )
    logger.info(
        f"Dataset {name}: {len(records)} images of {path} checked; {made} maps rasterised into "
        f"{folder} ({len(records) - made} reused) in {time.monotonic() - start:.1f}s."
    )
    return records, folder, plan


def source_from_detectron2(source: str) -> CocoSource:
    """The files behind a dataset registered with detectron2's register_coco_* functions."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if source not in DatasetCatalog.list():
        raise CustomDatasetError(
            f"{source} is not registered in detectron2's DatasetCatalog; register it first "
            f"(register_coco_instances / register_coco_panoptic) or check the name."
        )
    meta = MetadataCatalog.get(source)
    image_root = meta.get("image_root")
    if meta.get("panoptic_json") and meta.get("panoptic_root"):
        return CocoSource(meta.panoptic_json, image_root, meta.panoptic_root)
    if meta.get("json_file") and image_root:
        return CocoSource(meta.json_file, image_root)
    raise CustomDatasetError(
        f"{source} is registered, but not as COCO instances or panoptic (its metadata has no "
        f"json_file or panoptic_json/panoptic_root); register it with register_coco_instances "
        f"or register_coco_panoptic, or use register_zeroshot_sem_seg with its files."
    )
