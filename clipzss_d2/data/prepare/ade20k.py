"""ADE20K-150 -> `ADEChallengeData2016/annotations_detectron2/{training,validation}` (ids 0..149).

Source: the SceneParsing challenge's `ADEChallengeData2016.zip` (`images/` JPEGs, `annotations/`
grayscale PNGs: 0 = "other" (unlabelled), 1..150 = the classes of objectInfo150). 0 -> 255
(ignore), k -> k-1. Validation (2,000 images) is required; training (20,210) is converted when
present (the open-vocabulary protocol only evaluates on ADE20K).
"""

import os

import numpy as np

from .common import IGNORE, Job, Summary, png_label_jobs, require_dir, run_splits
from .labels import convert_png_label, lookup_table

SPLITS = ("validation", "training")
ADE_HINT = (
    "Download ADEChallengeData2016.zip (http://sceneparsing.csail.mit.edu/, "
    "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip) and extract it to "
    "{root}, giving {ade}/images and {ade}/annotations (see datasets/README.md)."
)
ADE_LUT = lookup_table({0: IGNORE, **{k: k - 1 for k in range(1, 151)}}, 256)
ADE_VALUES = "ADE20K values 0 (other) .. 150"


def convert_ade_label(job: Job) -> np.ndarray:
    return convert_png_label(job, ("L",), ADE_LUT, ADE_VALUES)


def ade20k_split_jobs(root: str) -> dict[str, tuple[list[Job], str, str]]:
    """{split: (jobs, output folder, description)} after checking every input exists."""
    ade = os.path.join(root, "ADEChallengeData2016")
    hint = ADE_HINT.format(root=root, ade=ade)
    require_dir(ade, "ADEChallengeData2016 folder", hint)
    result = {}
    for split in SPLITS:
        src_dir = os.path.join(ade, "annotations", split)
        if split == "training" and not os.path.isdir(src_dir):
            continue  # optional: only validation is evaluated
        require_dir(src_dir, f"ADE20K {split} annotation folder", hint)
        images = require_dir(
            os.path.join(ade, "images", split), f"ADE20K {split} image folder", hint
        )
        out_dir = os.path.join(ade, "annotations_detectron2", split)
        jobs = png_label_jobs(src_dir, images, out_dir, hint, "annotations")
        result[split] = (jobs, out_dir, f"{split}: {len(jobs)} annotations in {src_dir}")
    return result


def prepare_ade20k(
    root: str, *, workers: int = 1, overwrite: bool = False, log=print
) -> list[Summary]:
    splits = ade20k_split_jobs(root)
    return run_splits(
        splits,
        convert_ade_label,
        name="ADE20K",
        title="ADE20K-150",
        workers=workers,
        overwrite=overwrite,
        log=log,
    )
