"""Reading and checking COCO-style JSON annotations: everything that can stop a dataset before
training starts.

Two kinds of annotation file are read (the kind is told by the file's content):
- instances: `annotations[]` with `segmentation` as polygons, uncompressed RLE (`counts` a list)
  or compressed RLE (`counts` a string) -- what CVAT, Label Studio, Roboflow, labelme converters
  and makesense export, and COCO-Stuff's stuff JSON;
- panoptic: `annotations[]` with `file_name` (a PNG whose RGB encodes segment ids as
  R + 256 G + 256^2 B, 0 = unlabelled) and `segments_info` (panopticapi's convention).

The class list comes from `categories` (sorted by id; `name`, with optional `synonyms` or
`prompt`), or from a given list matched by category name (`plan_classes`). Every image,
annotation and segment is checked here and all problems are raised as one message, so a bad file
stops at the first load with everything that is wrong, not halfway through rasterising. Turning
annotations into maps: coco_rasterise.py; the cache and the loader: coco_sem_seg.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .custom_checks import MAX_SHOWN, CustomDatasetError, _bullets
from .label_io import ignore_value

if TYPE_CHECKING:  # annotations only: coco_rasterise imports this module
    from .coco_rasterise import RasterRules

logger = logging.getLogger(__name__)


# ---- reading the annotation file ------------------------------------------------------------


def read_annotation_json(path: str, what: str = "Annotation file") -> dict:
    """A COCO-style JSON file as a dict (plain json: no code runs), with a one-line error."""
    if not os.path.isfile(path):
        raise CustomDatasetError(f"{what} {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except Exception as e:
        raise CustomDatasetError(
            f"{what} {path} cannot be parsed as JSON: {' '.join(str(e).split())[:200]}"
        ) from None
    if not isinstance(data, dict):
        raise CustomDatasetError(f"{what} {path} must hold a JSON object with images/annotations.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CustomDatasetError(f"{what} {path} lacks a `{key}` list (COCO format).")
    return data


def is_panoptic(data: dict) -> bool:
    anns = data["annotations"]
    return bool(anns) and isinstance(anns[0], dict) and "segments_info" in anns[0]


def category_prompt(cat: dict) -> str:
    """The CLIP names of a category: `prompt`, else `name` joined with its `synonyms` by "|"."""
    if isinstance(cat.get("prompt"), str) and cat["prompt"].strip():
        return cat["prompt"].strip()
    names = [str(cat["name"])]
    for s in cat.get("synonyms") or []:
        s = str(s).replace("_", " ").strip()
        if s and s not in names and s != names[0].replace("_", " "):
            names.append(s)
    return "|".join(names)


def check_categories(path: str, data: dict) -> list[dict]:
    """The categories sorted by id, after checking ids and names."""
    cats, problems = [], []
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            problems.append(f"{path}: categories[{i}] needs an integer `id` and a `name`")
            continue
        if not isinstance(c["name"], str) or not c["name"].strip():
            problems.append(f"{path}: category id {c['id']} has name {c['name']!r}, not a name")
            continue
        cats.append(c)
    ids = [c["id"] for c in cats]
    dup_ids = sorted({i for i in ids if ids.count(i) > 1})
    if dup_ids:
        problems.append(f"{path}: category id(s) {dup_ids} appear twice in `categories`")
    names = [c["name"] for c in cats]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(
            f"{path}: category name(s) {dup} appear twice in `categories`; classes are named by "
            f"category name"
        )
    if not cats and not problems:
        problems.append(f"{path}: `categories` is empty")
    _raise(problems, f"{path}: the categories cannot be used")
    return sorted(cats, key=lambda c: c["id"])


def _raise(problems: list[str], head: str) -> None:
    if len(problems) == 1:
        raise CustomDatasetError(problems[0])
    if problems:
        raise CustomDatasetError(f"{head} ({len(problems)} problems):{_bullets(problems)}")


# ---- the class list -------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassPlan:
    classes: list[str]
    prompts: list[str] | None  # from the categories, when the class list is
    category_to_class: dict[int, int]  # category id -> class id (-1: not in the class list)
    unannotated_value: int  # class id, or the ignore value


def plan_classes(
    path: str,
    categories: list[dict],
    classes: Sequence[str] | None,
    rules: RasterRules,
) -> ClassPlan:
    """Class list and category -> class mapping (classes given: matched by category name)."""
    if classes is None:
        classes = [c["name"] for c in categories]
        prompts = [category_prompt(c) for c in categories]
    else:
        classes, prompts = [str(c) for c in classes], None
    if rules.unannotated != "ignore" and rules.unannotated not in classes:
        classes = classes + [rules.unannotated]
        if prompts is not None:
            prompts = prompts + [rules.unannotated]
    index = {c: i for i, c in enumerate(classes)}
    mapping = {c["id"]: index.get(c["name"], -1) for c in categories}
    absent = [c["name"] for c in categories if mapping[c["id"]] < 0]
    if absent and rules.unknown_categories == "error":
        raise CustomDatasetError(
            f"{path}: categories {absent[:MAX_SHOWN]} are not in the class list; add them, or "
            f"set rules unknown_categories to ignore / skip."
        )
    if absent:
        logger.warning(
            f"{path}: {len(absent)} categories are not in the class list, their annotations are "
            f"{'ignored' if rules.unknown_categories == 'ignore' else 'skipped'}: "
            f"{absent[:MAX_SHOWN]}{' ...' if len(absent) > MAX_SHOWN else ''}"
        )
    unannotated = (
        ignore_value(len(classes)) if rules.unannotated == "ignore" else index[rules.unannotated]
    )
    return ClassPlan(classes, prompts, mapping, unannotated)


# ---- checking the annotations ---------------------------------------------------------------


def _check_images(path: str, data: dict) -> tuple[dict, list[str]]:
    images, problems = {}, []
    for i, im in enumerate(data["images"]):
        ok = isinstance(im, dict) and "id" in im and isinstance(im.get("file_name"), str)
        ok = ok and all(isinstance(im.get(k), int) and im[k] > 0 for k in ("height", "width"))
        if not ok:
            problems.append(
                f"{path}: images[{i}] needs `id`, `file_name` and positive integer `height` and "
                f"`width`"
            )
            continue
        if im["id"] in images:
            problems.append(f"{path}: image id {im['id']} appears twice in `images`")
            continue
        images[im["id"]] = im
    return images, problems


def compressed_rle_counts(counts: str) -> np.ndarray | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString, vectorised),
    or None if the string is not one. pycocotools itself does not check that the runs add up to
    height x width: short strings decode to uninitialised memory."""
    try:
        c = np.frombuffer(counts.encode("latin-1"), dtype=np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        return None
    if c.size == 0 or c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return None
    last = (c & 0x20) == 0  # the last character of each value
    group = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])
    k = np.arange(c.size) - starts[group]
    if k.max() > 10:  # beyond 64-bit values
        return None
    x = np.zeros(int(last.sum()), dtype=np.int64)
    np.add.at(x, group, (c & 0x1F) << (5 * k))
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) > 0
    x[negative] -= np.int64(1) << (5 * (k[ends][negative] + 1))
    runs = x.copy()  # from the third value on, each is a difference to the value two before
    runs[2::2] = np.cumsum(x[2::2])
    runs[3::2] = x[1] + np.cumsum(x[3::2]) if x.size > 3 else runs[3::2]
    return runs


def _check_polygons(path, ann, h, w) -> str | None:
    seg = ann["segmentation"]
    if not seg:
        return f"{path}: annotation id {ann['id']}: empty `segmentation`"
    if not all(isinstance(poly, list) for poly in seg):
        return (
            f"{path}: annotation id {ann['id']}: `segmentation` must be a list of polygons "
            f"[[x1, y1, x2, y2, ...], ...] (a flat list of numbers needs one more pair of "
            f"brackets)"
        )
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return (
                f"{path}: annotation id {ann['id']}: a polygon must be a flat list of at least "
                f"3 x,y pairs [x1, y1, x2, y2, ...]"
            )
        try:
            xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            return f"{path}: annotation id {ann['id']}: polygon coordinates must be numbers"
        if not np.isfinite(xy).all():
            return f"{path}: annotation id {ann['id']}: polygon has non-finite coordinates"
        # 1 pixel of slack: exporters round edge vertices to x = width or y = height + 0.5
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        if lo[0] < -1 or lo[1] < -1 or hi[0] > w + 1 or hi[1] > h + 1:
            return (
                f"{path}: annotation id {ann['id']}: polygon spans x {lo[0]:g}..{hi[0]:g}, "
                f"y {lo[1]:g}..{hi[1]:g}, outside its image ({w}x{h}, image id "
                f"{ann['image_id']}); are the coordinates relative (0..1) or for another size?"
            )
    return None


def _check_rle(path, ann, h, w) -> str | None:
    seg = ann["segmentation"]
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2) or counts is None:
        return f"{path}: annotation id {ann['id']}: an RLE `segmentation` needs `size` and `counts`"
    if list(size) != [h, w]:
        return (
            f"{path}: annotation id {ann['id']}: RLE size {size} (height, width) is not its "
            f"image's {[h, w]} (image id {ann['image_id']})"
        )
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != h * w:
            return (
                f"{path}: annotation id {ann['id']}: uncompressed RLE counts must be "
                f"non-negative integers summing to height x width = {h * w}"
            )
    elif not isinstance(counts, str):
        return f"{path}: annotation id {ann['id']}: RLE `counts` must be a list or a string"
    else:
        runs = compressed_rle_counts(counts)
        if runs is None or runs.min() < 0 or runs.sum() != h * w:
            return (
                f"{path}: annotation id {ann['id']}: compressed RLE counts are not a COCO RLE "
                f"string of height x width = {h * w} pixels"
            )
    return None


def check_instances(path: str, data: dict, categories: list[dict]) -> tuple[dict, dict]:
    """{image id: image entry}, {image id: [annotations]} after checking every annotation."""
    images, problems = _check_images(path, data)
    cat_ids = {c["id"] for c in categories}
    per_image: dict = {i: [] for i in images}
    ann_ids = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            problems.append(f"{path}: annotations[{k}] has no `id`")
            continue
        aid = ann["id"]
        if aid in ann_ids:
            problems.append(f"{path}: annotation id {aid} appears twice")
            continue
        ann_ids.add(aid)
        if ann.get("image_id") not in images:
            problems.append(
                f"{path}: annotation id {aid}: image_id {ann.get('image_id')!r} is not in `images`"
            )
            continue
        if ann.get("category_id") not in cat_ids:
            problems.append(
                f"{path}: annotation id {aid}: category_id {ann.get('category_id')!r} is not in "
                f"`categories`"
            )
            continue
        im = images[ann["image_id"]]
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            problem = _check_polygons(path, ann, im["height"], im["width"])
        elif isinstance(seg, dict):
            problem = _check_rle(path, ann, im["height"], im["width"])
        else:
            problem = (
                f"{path}: annotation id {aid}: `segmentation` must be polygons (a list) or RLE "
                f"(a dict); a box-only annotation cannot make a semantic map"
            )
        if problem:
            problems.append(problem)
            continue
        if ann.get("iscrowd", 0) not in (0, 1, False, True):
            problems.append(f"{path}: annotation id {aid}: iscrowd must be 0 or 1")
            continue
        per_image[ann["image_id"]].append(ann)
    _raise(problems, f"{path}: annotations cannot be used")
    return images, per_image


def check_panoptic(path: str, data: dict, categories: list[dict]) -> tuple[dict, dict]:
    """{image id: image entry}, {image id: panoptic annotation} after checking the JSON."""
    images, problems = _check_images(path, data)
    cat_ids = {c["id"] for c in categories}
    per_image: dict = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("file_name"), str):
            problems.append(f"{path}: annotations[{k}] needs `image_id`, `file_name` (its PNG)")
            continue
        what = f"{path}: panoptic annotation {ann['file_name']}"
        if ann.get("image_id") not in images:
            problems.append(f"{what}: image_id {ann.get('image_id')!r} is not in `images`")
            continue
        if ann["image_id"] in per_image:
            problems.append(f"{what}: image id {ann['image_id']} has two panoptic annotations")
            continue
        segments = ann.get("segments_info")
        if not isinstance(segments, list):
            problems.append(f"{what}: `segments_info` must be a list")
            continue
        seen: set = set()
        for s in segments:
            sid = s.get("id") if isinstance(s, dict) else None
            if not isinstance(sid, int) or sid <= 0 or sid >= 1 << 24:
                problems.append(f"{what}: segment id {sid!r} must be an integer 1..2^24-1")
            elif sid in seen:
                problems.append(f"{what}: segment id {sid} appears twice")
            elif s.get("category_id") not in cat_ids:
                problems.append(
                    f"{what}: segment id {sid}: category_id {s.get('category_id')!r} is not in "
                    f"`categories`"
                )
            seen.add(sid)
        per_image[ann["image_id"]] = ann
    _raise(problems, f"{path}: panoptic annotations cannot be used")
    return images, per_image
