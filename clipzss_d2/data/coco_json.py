"""COCO-style JSON annotations as a zero-shot semantic segmentation dataset.

Three kinds of annotation file are read (the kind is told by the file's content):
- instances: `annotations[]` with `segmentation` as polygons, uncompressed RLE (`counts` a list)
  or compressed RLE (`counts` a string) -- what CVAT, Label Studio, Roboflow, labelme converters
  and makesense export, and COCO-Stuff's stuff JSON;
- panoptic: `annotations[]` with `file_name` (a PNG whose RGB encodes segment ids as
  R + 256 G + 256^2 B, 0 = unlabelled) and `segments_info` (panopticapi's convention);
- a dataset registered in detectron2's catalog with `register_coco_instances`,
  `register_coco_panoptic` or `register_coco_panoptic_separated` (its metadata names the files).

The class list comes from `categories` (sorted by id; `name`, with optional `synonyms` or
`prompt`), or from a given list matched by category name. How instances become one semantic map
is `RasterRules`. Maps are rasterised once per image, at the first load of the dataset, into a
cache folder of plain label PNGs (ids 0..N-1, ignore 255) keyed by a hash of the annotation
file, the rules and the class list, so a changed file or rule never reuses a stale map; the
training mapper and the GZS evaluator then read those PNGs like any prepared dataset, so both
see the same maps. Why PNGs and not on the fly: see datasets/README.md, "Your own dataset".
"""

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .custom_checks import MAX_SHOWN, CustomDatasetError, _bullets
from .label_io import ignore_value

logger = logging.getLogger(__name__)

CACHE_VERSION = "1"  # bump when the rasteriser's output changes, so old caches are not reused
OVERLAP = ("smaller", "later", "earlier")
CROWD = ("ignore", "class", "skip")
UNKNOWN = ("ignore", "skip", "error")


@dataclass(frozen=True)
class RasterRules:
    """How the annotations of one image become one semantic map.

    overlap: which object a pixel covered by several gets: "smaller" (default: the object with
        fewer pixels, so a cup on a table or a person on a bed stays visible), "later" (the
        later annotation in the file, i.e. painting in file order) or "earlier".
    crowd: `iscrowd: 1` regions: "ignore" (default: their pixels are ignored in training and
        evaluation, as COCO's crowd regions are not exact), "class" (painted as their category)
        or "skip" (dropped, as if not annotated). Crowd regions lie under every other object.
    unannotated: pixels no annotation covers: "ignore" (default) or a class name (e.g.
        "background"; appended to the class list if the list does not hold it).
    unknown_categories: annotations whose category is not in the class list (when a class list
        is given): "ignore" (default: their pixels are ignored), "skip" (dropped, as if not
        annotated) or "error".
    """

    overlap: str = "smaller"
    crowd: str = "ignore"
    unannotated: str = "ignore"
    unknown_categories: str = "ignore"

    @classmethod
    def create(cls, spec=None) -> "RasterRules":
        if spec is None:
            return cls()
        if isinstance(spec, RasterRules):
            return spec
        if not isinstance(spec, dict):
            raise CustomDatasetError(
                f"rules must be a mapping of overlap/crowd/unannotated/unknown_categories, not "
                f"{type(spec).__name__}."
            )
        unknown = sorted(set(spec) - set(cls.__dataclass_fields__))
        if unknown:
            raise CustomDatasetError(
                f"rules has unknown key(s) {unknown}; use overlap, crowd, unannotated, "
                f"unknown_categories."
            )
        rules = cls(**{k: str(v) for k, v in spec.items()})
        for key, allowed in (
            ("overlap", OVERLAP),
            ("crowd", CROWD),
            ("unknown_categories", UNKNOWN),
        ):
            if getattr(rules, key) not in allowed:
                raise CustomDatasetError(
                    f"rules {key}: {getattr(rules, key)!r} is unknown; use one of "
                    f"{', '.join(allowed)}."
                )
        if not rules.unannotated:
            raise CustomDatasetError('rules unannotated: give "ignore" or a class name.')
        return rules

    def to_dict(self) -> dict:
        return asdict(self)


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


# ---- rasterising ----------------------------------------------------------------------------


def _rle(seg, h: int, w: int) -> dict:
    from pycocotools import mask as mask_util

    if isinstance(seg, list):  # polygons: one RLE per part, merged
        return mask_util.merge(mask_util.frPyObjects(seg, h, w))
    if isinstance(seg["counts"], list):  # uncompressed RLE
        return mask_util.frPyObjects(seg, h, w)
    return {"size": seg["size"], "counts": seg["counts"].encode("ascii")}


def rasterise_instances(
    annotations: list[dict], h: int, w: int, plan: ClassPlan, rules: RasterRules
) -> np.ndarray:
    """One semantic map (class ids, the ignore value, or the unannotated value) of an image."""
    from pycocotools import mask as mask_util

    ignore = ignore_value(len(plan.classes))
    dtype = np.uint8 if ignore == 255 else np.uint16
    out = np.full((h, w), plan.unannotated_value, dtype=dtype)
    crowd, objects = [], []
    for order, ann in enumerate(annotations):
        cls = plan.category_to_class[ann["category_id"]]
        if cls < 0:
            if rules.unknown_categories == "skip":
                continue
            cls = ignore
        is_crowd = bool(ann.get("iscrowd", 0))
        if is_crowd:
            if rules.crowd == "skip":
                continue
            if rules.crowd == "ignore":
                cls = ignore
        (crowd if is_crowd else objects).append((order, cls, _rle(ann["segmentation"], h, w)))
    if objects:
        areas = mask_util.area([r for _, _, r in objects])
        if rules.overlap == "smaller":  # paint the largest first, the smallest last (on top)
            keys = [(-int(a), order) for a, (order, _, _) in zip(areas, objects)]
        elif rules.overlap == "earlier":
            keys = [(-order,) for order, _, _ in objects]
        else:
            keys = [(order,) for order, _, _ in objects]
        objects = [o for _, o in sorted(zip(keys, objects), key=lambda t: t[0])]
    for _, cls, rle in crowd + objects:  # crowd regions lie under every object
        # one mask at a time: all at once would take H x W x N bytes (GBs for large photos)
        out[mask_util.decode(rle) > 0] = cls
    return out


def rasterise_panoptic(
    png_path: str, ann: dict, h: int, w: int, plan: ClassPlan, rules: RasterRules
) -> np.ndarray:
    ignore = ignore_value(len(plan.classes))
    with Image.open(png_path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint32)
    if rgb.shape[:2] != (h, w):
        raise CustomDatasetError(
            f"{png_path} is {rgb.shape[1]}x{rgb.shape[0]} but its image is {w}x{h} (image id "
            f"{ann['image_id']})"
        )
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    value = {0: plan.unannotated_value}
    for s in ann["segments_info"]:
        cls = plan.category_to_class[s["category_id"]]
        if cls < 0:
            cls = plan.unannotated_value if rules.unknown_categories == "skip" else ignore
        if s.get("iscrowd", 0):
            cls = {"ignore": ignore, "skip": plan.unannotated_value}.get(rules.crowd, cls)
        value[s["id"]] = cls
    uniq, inverse = np.unique(ids, return_inverse=True)
    unknown = [int(u) for u in uniq if int(u) not in value]
    if unknown:
        raise CustomDatasetError(
            f"{png_path} holds segment id(s) {unknown[:5]} that its `segments_info` does not "
            f"list (image id {ann['image_id']})"
        )
    dtype = np.uint8 if ignore == 255 else np.uint16
    return np.array([value[int(u)] for u in uniq], dtype=dtype)[inverse.reshape(ids.shape)]


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
