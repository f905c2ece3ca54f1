"""PASCAL Context -> `VOCdevkit/VOC2010/annotations_detectron2/pc59_{train,val}` (ids 0..58).

Three sources are accepted (the first found is used unless --source says which):
- `mat`: the official `trainval.tar.gz`, `trainval/<id>.mat` with `LabelMap` (uint16, 459-label
  ids, 0 = unlabelled). The 59 classes are the 459-ids in `PCONTEXT59_459_IDS`; their rank is
  the contiguous id; every other value becomes 255.
- `png`: mmseg's `SegmentationClassContext/<id>.png` (0 = background, 1..59 = the classes in the
  same order): 0 -> 255, k -> k-1.
- `detail`: the Detail API's `trainval_merged.json` (or a results-style list with `image_id`,
  `category_id`, COCO-RLE `segmentation`): each mask is painted in file order (a later mask wins
  where masks overlap, since the Detail API defines no order), uncovered pixels are unlabelled.
Train/val are the VOC2010 `ImageSets/Main/{train,val}.txt` lists (4,998 / 5,105 images), or mmseg's
`ImageSets/SegmentationContext` copies of them.
"""

import json
import os
import re
import warnings
from collections.abc import Iterable

import numpy as np

from ..classes import PCONTEXT59_459_IDS, PCONTEXT59_CLASSES
from .common import (
    IGNORE,
    Job,
    LabelRejected,
    PrepareError,
    Summary,
    check_sources_exist,
    read_id_list,
    read_text_lines,
    require_dir,
    require_file,
    run_splits,
)
from .labels import (
    apply_lookup,
    check_same_size,
    convert_png_label,
    image_size,
    lookup_table,
)

SOURCES = ("mat", "png", "detail")
CONTEXT_HINT = (
    "PASCAL Context needs the VOC2010 images (VOCtrainval_03-May-2010.tar, "
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/, extracted to {root}/VOCdevkit) and one "
    "label source: trainval.tar.gz from https://cs.stanford.edu/~roozbeh/pascal-context/ "
    "(its trainval/ folder of 459-class .mat files at {voc}/trainval, labels.txt beside it), or mmseg's SegmentationClassContext "
    "PNGs in {voc}/SegmentationClassContext, or the Detail API's trainval_merged.json at "
    "{voc}/trainval_merged.json (see datasets/README.md)."
)
LIST_HINT = (
    "Context train/val are VOC2010's ImageSets/Main/train.txt and val.txt (4,998 / 5,105 ids) "
    "from VOCtrainval_03-May-2010.tar; pass --train-list / --val-list to use other lists."
)
CONTEXT459_MAX_ID = 459
MAT_LUT = lookup_table({0: IGNORE, **{v: i for i, v in enumerate(PCONTEXT59_459_IDS)}}, 460)
# 459-ids outside the 59 classes are valid input and become ignore.
MAT_LUT[(MAT_LUT < 0) & (np.arange(460) > 0)] = IGNORE
MAT_VALUES = "459-label ids 0 (unlabelled) .. 459"
PNG_LUT = lookup_table({0: IGNORE, IGNORE: IGNORE, **{k: k - 1 for k in range(1, 60)}}, 256)
PNG_VALUES = "SegmentationClassContext values 0 (background) .. 59 (and 255)"


def read_context_mat(job: Job) -> np.ndarray:
    """The `LabelMap` (459-label ids, 0 = unlabelled) of an official trainval/<id>.mat file,
    checked against its image's size; used by the 59- and the 459-class conversions."""
    from scipy.io import loadmat

    try:
        mat = loadmat(job.src, variable_names=["LabelMap"])
    except Exception as e:  # truncated/corrupt: ValueError, OSError; MATLAB v7.3: NotImplemented
        raise LabelRejected(
            f"{job.src} cannot be read as a MATLAB file ({type(e).__name__}: {e}); extract it "
            f"again from trainval.tar.gz"
        ) from None
    if "LabelMap" not in mat:
        raise LabelRejected(
            f"{job.src} has no LabelMap variable; this is not a PASCAL Context trainval .mat file"
        )
    label = np.asarray(mat["LabelMap"])
    check_same_size(label, job.src, job.image)
    return label


def convert_context_mat(job: Job) -> np.ndarray:
    return apply_lookup(read_context_mat(job), MAT_LUT, job.src, MAT_VALUES)


def convert_context_png(job: Job) -> np.ndarray:
    return convert_png_label(job, ("L", "P"), PNG_LUT, PNG_VALUES)


def decode_rle(rle) -> np.ndarray:
    from pycocotools import mask as mask_util

    with warnings.catch_warnings():
        # pycocotools' own numpy-2 copy-keyword deprecation; the decoded mask is unaffected.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        return mask_util.decode(rle)


def paint_detail_masks(job: Job) -> np.ndarray:
    """The Detail API masks of one image painted in file order into a 459-label-id map (0 =
    unlabelled), checked against the image's size; used by the 59- and the 459-class
    conversions."""
    (h, w), annotations = job.payload
    if job.image is not None and (h, w) != image_size(job.image):
        # checked before decoding: an RLE decodes to its declared size, whatever that is
        ih, iw = image_size(job.image)
        raise LabelRejected(
            f"size mismatch: the masks of {job.key} in the Detail JSON declare {w}x{h} but image "
            f"{job.image} is {iw}x{ih} (width x height); the JSON belongs to other images"
        )
    canvas = np.zeros((h, w), dtype=np.uint16)  # 459-id space, 0 = unlabelled
    for category_id, rle in annotations:
        if tuple(int(v) for v in rle["size"]) != (h, w):
            raise LabelRejected(
                f"{job.key}: the RLE masks disagree on the image size ({tuple(rle['size'])} vs "
                f"{(h, w)})"
            )
        try:
            mask = decode_rle(rle)
        except Exception as e:
            raise LabelRejected(
                f"{job.key}: an RLE mask of category {category_id} cannot be decoded "
                f"({type(e).__name__}: {e})"
            ) from None
        if mask.shape != (h, w):
            raise LabelRejected(
                f"{job.key}: the RLE masks disagree on the image size ({mask.shape} vs {(h, w)})"
            )
        canvas[mask.astype(bool)] = category_id
    check_same_size(canvas, f"the masks of {job.key} in the Detail JSON", job.image)
    return canvas


def convert_context_detail(job: Job) -> np.ndarray:
    canvas = paint_detail_masks(job)
    return apply_lookup(canvas, MAT_LUT, f"the masks of {job.key}", "459-label category ids")


def context_image_id(image_id) -> str:
    """Detail API int 2008000002 -> VOC file stem '2008_000002'."""
    s = str(image_id)
    if re.fullmatch(r"\d{10}", s):
        return f"{s[:4]}_{s[4:]}"
    return s


def load_detail_annotations(path: str, hint: str) -> dict[str, tuple[tuple[int, int], list]]:
    """{image stem: ((h, w), [(459-category id, RLE), ...] in file order)}."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise PrepareError(f"{path} cannot be read as JSON ({e}).\n  {hint}") from None
    if isinstance(data, dict):
        if "annos_segmentation" not in data:
            raise PrepareError(
                f"{path} has no 'annos_segmentation' list: it is not the Detail API's "
                f"trainval_merged.json (keys: {', '.join(sorted(data)[:10])}).\n  {hint}"
            )
        data = data["annos_segmentation"]
    per_image: dict[str, tuple[tuple[int, int], list]] = {}
    for n, ann in enumerate(data):
        try:
            stem = context_image_id(ann["image_id"])
            rle = dict(ann["segmentation"])
            size = (int(rle["size"][0]), int(rle["size"][1]))
            category_id = int(ann["category_id"])
        except (KeyError, TypeError, ValueError, IndexError):
            raise PrepareError(
                f"{path}: entry {n} lacks image_id / category_id / an RLE segmentation with "
                f"'size' and 'counts'.\n  {hint}"
            ) from None
        if not 0 <= category_id <= CONTEXT459_MAX_ID:
            raise PrepareError(
                f"{path}: entry {n} (image {stem}) has category_id {category_id}; PASCAL Context "
                f"ids are 0..{CONTEXT459_MAX_ID}.\n  {hint}"
            )
        if min(size) < 1:
            raise PrepareError(
                f"{path}: entry {n} (image {stem}) declares a mask of size {size}.\n  {hint}"
            )
        if isinstance(rle.get("counts"), list):  # uncompressed RLE
            from pycocotools import mask as mask_util

            rle = mask_util.frPyObjects(rle, *size)
        entry = per_image.setdefault(stem, (size, []))
        entry[1].append((category_id, rle))
    return per_image


def find_labels_txt(voc: str, mat_dir: str) -> str | None:
    """labels.txt ships beside trainval/ in trainval.tar.gz."""
    for path in (
        os.path.join(os.path.dirname(os.path.abspath(mat_dir)), "labels.txt"),
        os.path.join(voc, "labels.txt"),
    ):
        if os.path.isfile(path):
            return path
    return None


def check_labels_txt(path: str, expected: Iterable[tuple[int, str]]) -> None:
    """The 459-label list that ships with the .mat files must name the `expected` (459-label
    id, class name) pairs as we do."""
    names = {}
    for line in read_text_lines(path, "The 459-label list"):
        k, sep, v = line.partition(":")
        if sep and k.strip().isdigit():
            names[int(k)] = v.strip()
    wrong = [f"{i}: {names.get(i)!r} (expected {c!r})" for i, c in expected if names.get(i) != c]
    if wrong:
        raise PrepareError(
            f"{path} does not match the PASCAL Context 459-label list this converter assumes: "
            f"{'; '.join(wrong[:5])}. Use the labels.txt of the official trainval.tar.gz."
        )


def context_split_jobs(
    root: str,
    *,
    source: str = "auto",
    mat_dir: str | None = None,
    png_dir: str | None = None,
    detail_json: str | None = None,
    train_list: str | None = None,
    val_list: str | None = None,
):
    """(source, {split: (jobs, output folder, description)}) after checking every input."""
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    hint = CONTEXT_HINT.format(root=root, voc=voc)
    images = require_dir(os.path.join(voc, "JPEGImages"), "VOC2010 JPEGImages folder", hint)
    locations = {
        "mat": mat_dir or os.path.join(voc, "trainval"),
        "png": png_dir or os.path.join(voc, "SegmentationClassContext"),
        "detail": detail_json or os.path.join(voc, "trainval_merged.json"),
    }
    if source == "auto":
        found = [s for s in SOURCES if os.path.exists(locations[s])]
        if not found:
            raise PrepareError(
                "No PASCAL Context labels found; looked for "
                + ", ".join(f"{locations[s]} ({s})" for s in SOURCES)
                + f".\n  {hint}"
            )
        source = found[0]
    elif source not in SOURCES:
        raise PrepareError(f"Unknown --source {source!r}; choose one of {', '.join(SOURCES)}.")
    location = locations[source]

    lists, list_paths = {}, {}
    for split, given in (("train", train_list), ("val", val_list)):
        if given is None:
            context_sets = os.path.join(voc, "ImageSets", "SegmentationContext", f"{split}.txt")
            main_sets = os.path.join(voc, "ImageSets", "Main", f"{split}.txt")
            given = context_sets if os.path.isfile(context_sets) else main_sets
        lists[split] = read_id_list(given, f"PASCAL Context {split} list", LIST_HINT)
        list_paths[split] = given
    overlap = sorted(set(lists["train"]) & set(lists["val"]))
    if overlap:
        raise PrepareError(
            f"{len(overlap)} ids are in both the train and the val list (e.g. "
            f"{', '.join(overlap[:5])}).\n  {LIST_HINT}"
        )

    detail = None
    if source == "mat":
        require_dir(location, "PASCAL Context .mat folder", hint)
        labels_txt = find_labels_txt(voc, location)
        if labels_txt:
            check_labels_txt(labels_txt, zip(PCONTEXT59_459_IDS, PCONTEXT59_CLASSES))
    elif source == "png":
        require_dir(location, "SegmentationClassContext folder", hint)
    else:
        require_file(location, "Detail API JSON", hint)
        detail = load_detail_annotations(location, hint)

    result = {}
    for split, ids in lists.items():
        out_dir = os.path.join(voc, "annotations_detectron2", f"pc59_{split}")
        jobs = []
        for i in ids:
            image = os.path.join(images, i + ".jpg")
            dst = os.path.join(out_dir, i + ".png")
            if source == "detail":
                if i not in detail:
                    raise PrepareError(
                        f"{location} holds no masks for image {i} of the {split} list.\n  {hint}"
                    )
                jobs.append(Job(key=i, image=image, dst=dst, payload=detail[i]))
            else:
                ext = ".mat" if source == "mat" else ".png"
                jobs.append(Job(key=i, src=os.path.join(location, i + ext), image=image, dst=dst))
        check_sources_exist(jobs, hint, f"for the ids in {list_paths[split]}")
        result[split] = (jobs, out_dir, f"{split}: {len(jobs)} images, labels from {location}")
    return source, result


CONVERTERS = {
    "mat": convert_context_mat,
    "png": convert_context_png,
    "detail": convert_context_detail,
}


def prepare_pascal_context(
    root: str, *, workers: int = 1, overwrite: bool = False, log=print, **sources
) -> list[Summary]:
    source, splits = context_split_jobs(root, **sources)
    return run_splits(
        splits,
        CONVERTERS[source],
        name=f"PASCAL Context ({source})",
        title="PASCAL Context-59",
        workers=workers,
        overwrite=overwrite,
        log=log,
    )
