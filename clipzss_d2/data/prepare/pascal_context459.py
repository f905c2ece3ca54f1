"""PASCAL Context-459 -> `VOCdevkit/VOC2010/annotations_detectron2/pc459_val` (ids 0..458).

The full label set of the same sources the 59-class conversion reads: the official
`trainval/<id>.mat` files (`LabelMap`, 459-label ids, 0 = unlabelled) or the Detail API JSON
(masks in the same id space). id k -> k-1, 0 -> 65535 (ignore); the ids reach 458, so the maps
are 16-bit PNGs. Only val is converted: Context-459 is an evaluation set of the open-vocabulary
protocol. mmseg's SegmentationClassContext PNGs hold the 59 classes only and cannot be used.
"""

import os

import numpy as np

from ..classes import PCONTEXT459_CLASSES
from .common import Job, LabelRejected, PrepareError, Summary, run_splits
from .pascal_context import (
    CONTEXT_HINT,
    check_labels_txt,
    context_split_jobs,
    find_labels_txt,
    paint_detail_masks,
    read_context_mat,
)

IGNORE16 = 65535
# 459-label id -> contiguous id (k-1); 0 (unlabelled) -> ignore.
LUT459 = np.concatenate([[IGNORE16], np.arange(459)]).astype(np.int64)


def map_459(label: np.ndarray, what: str) -> np.ndarray:
    if not np.issubdtype(label.dtype, np.integer):
        raise LabelRejected(f"{what} holds {label.dtype} values, expected 459-label ids")
    if label.size and (int(label.min()) < 0 or int(label.max()) > 459):
        bad = np.unique(label[(label < 0) | (label > 459)])[:10].tolist()
        raise LabelRejected(f"{what} holds values {bad} outside the 459-label ids 0..459")
    return LUT459[label.astype(np.int64)].astype(np.uint16)


def convert_context459_mat(job: Job) -> np.ndarray:
    return map_459(read_context_mat(job), job.src)


def convert_context459_detail(job: Job) -> np.ndarray:
    return map_459(paint_detail_masks(job), f"the masks of {job.key}")


def prepare_pascal_context459(
    root: str,
    *,
    workers: int = 1,
    overwrite: bool = False,
    log=print,
    source: str = "auto",
    mat_dir: str | None = None,
    detail_json: str | None = None,
    **lists,
) -> list[Summary]:
    voc = os.path.join(root, "VOCdevkit", "VOC2010")
    if source == "png":
        raise PrepareError(
            "SegmentationClassContext PNGs hold only the 59 classes; Context-459 needs the "
            "trainval/*.mat files (--source mat) or the Detail API JSON (--source detail)."
        )
    if source == "auto":
        mat = mat_dir or os.path.join(voc, "trainval")
        detail = detail_json or os.path.join(voc, "trainval_merged.json")
        if os.path.isdir(mat):
            source = "mat"
        elif os.path.isfile(detail):
            source = "detail"
        else:
            raise PrepareError(
                f"No 459-class PASCAL Context labels found: neither {mat} (trainval/*.mat) nor "
                f"{detail} (Detail API JSON).\n  " + CONTEXT_HINT.format(root=root, voc=voc)
            )
    source, splits = context_split_jobs(
        root, source=source, mat_dir=mat_dir, detail_json=detail_json, **lists
    )
    if source == "mat":
        labels_txt = find_labels_txt(voc, mat_dir or os.path.join(voc, "trainval"))
        if labels_txt:
            check_labels_txt(labels_txt, enumerate(PCONTEXT459_CLASSES, start=1))
    jobs, _, desc = splits["val"]
    out_dir = os.path.join(voc, "annotations_detectron2", "pc459_val")
    jobs = [
        Job(key=j.key, src=j.src, image=j.image, payload=j.payload,
            dst=os.path.join(out_dir, os.path.basename(j.dst)))
        for j in jobs
    ]  # fmt: skip
    convert = convert_context459_mat if source == "mat" else convert_context459_detail
    return run_splits(
        {"val": (jobs, out_dir, desc)},
        convert,
        name=f"PASCAL Context-459 ({source})",
        title="PASCAL Context-459",
        workers=workers,
        overwrite=overwrite,
        log=log,
    )
