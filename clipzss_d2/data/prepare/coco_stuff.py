"""COCO-Stuff 164k -> `coco/stuffthingmaps_detectron2/{train2017,val2017}` (ids 0..170).

Source: `stuffthingmaps_trainval2017.zip` (grayscale PNGs, value = COCO category id - 1, 255 =
unlabelled). The 11 thing ids COCO never annotated are dropped, the other 171 become contiguous
in COCO-Stuff id order.
"""

import os

import numpy as np

from ..classes import COCO_STUFF171_VALUES, COCO_STUFF_182, COCO_STUFF_UNUSED_VALUES
from .common import IGNORE, Job, PrepareError, Summary, png_label_jobs, require_dir, run_splits
from .labels import convert_png_label, lookup_table

SPLITS = ("train2017", "val2017")
COCO_HINT = (
    "Download train2017.zip and val2017.zip (https://cocodataset.org/#download) and extract them "
    "to {coco}; download stuffthingmaps_trainval2017.zip "
    "(https://github.com/nightrome/cocostuff#downloads) and extract it to {coco}/stuffthingmaps "
    "(see datasets/README.md)."
)
COCO_STUFF_LUT = lookup_table(
    {IGNORE: IGNORE, **{v: i for i, v in enumerate(COCO_STUFF171_VALUES)}}, 256
)
COCO_VALUES = (
    "COCO-Stuff values 0..181 and 255 (unlabelled), without the 11 thing ids COCO never "
    "annotated (" + ", ".join(f"{v} {COCO_STUFF_182[v]}" for v in COCO_STUFF_UNUSED_VALUES) + ")"
)
COCO_VALUE_HINT = (
    "; values of never-annotated ids or 182 suggest a 1-based map (painted from category ids): "
    "use the stuffthingmaps_trainval2017 PNGs"
)


def convert_coco_stuff_label(job: Job) -> np.ndarray:
    return convert_png_label(job, ("L",), COCO_STUFF_LUT, COCO_VALUES, COCO_VALUE_HINT)


def find_maps_dir(coco: str, maps_dir: str | None, hint: str) -> str:
    if maps_dir:
        return require_dir(maps_dir, "COCO-Stuff stuffthingmaps folder", hint)
    for name in ("stuffthingmaps", "stuffthingmaps_trainval2017"):
        path = os.path.join(coco, name)
        if os.path.isdir(path):
            return path
    raise PrepareError(
        f"COCO-Stuff label maps not found: neither {coco}/stuffthingmaps nor "
        f"{coco}/stuffthingmaps_trainval2017 exists.\n  {hint}"
    )


def coco_stuff_split_jobs(root: str, *, maps_dir: str | None = None):
    """{split: (jobs, output folder, description)} after checking every input exists."""
    coco = os.path.join(root, "coco")
    hint = COCO_HINT.format(coco=coco)
    maps = find_maps_dir(coco, maps_dir, hint)
    result = {}
    for split in SPLITS:
        images = require_dir(os.path.join(coco, split), f"COCO {split} image folder", hint)
        src_dir = require_dir(os.path.join(maps, split), f"COCO-Stuff {split} label folder", hint)
        out_dir = os.path.join(coco, "stuffthingmaps_detectron2", split)
        jobs = png_label_jobs(src_dir, images, out_dir, hint, "label maps")
        result[split] = (jobs, out_dir, f"{split}: {len(jobs)} label maps in {src_dir}")
    return result


def prepare_coco_stuff(
    root: str, *, workers: int = 1, overwrite: bool = False, log=print, **sources
) -> list[Summary]:
    splits = coco_stuff_split_jobs(root, **sources)
    return run_splits(
        splits,
        convert_coco_stuff_label,
        name="COCO-Stuff",
        title="COCO-Stuff",
        workers=workers,
        overwrite=overwrite,
        log=log,
    )
