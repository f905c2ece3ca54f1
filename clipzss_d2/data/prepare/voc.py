"""PASCAL VOC 2012 -> `VOC2012/annotations_detectron2/{train,val}` (ids 0..19, 255 ignore).

Sources: `SegmentationClass` (palette PNGs) for val and for the 1,464 ids of the official train
list; when SBD's `SegmentationClassAug` (palette or grayscale) is present, train is the 10,582-id
train_aug list (DeepLab's `ImageSets/SegmentationAug/train_aug.txt`, or mmseg's
`ImageSets/Segmentation/aug.txt` + train.txt) and its SBD-only ids take SBD labels.
"""

import os

import numpy as np

from .common import (
    IGNORE,
    Job,
    PrepareError,
    Summary,
    check_sources_exist,
    read_id_list,
    require_dir,
    run_splits,
)
from .labels import convert_png_label, lookup_table

VOC_HINT = (
    "Download VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and "
    "move its VOCdevkit/VOC2012 folder to {voc} (see datasets/README.md)."
)
SBD_HINT = (
    "SegmentationClassAug.zip (SBD labels converted to VOC PNGs, as used by DeepLab) extracts to "
    "a SegmentationClassAug folder: put it at {aug} or pass --aug-dir; the 10,582-id train_aug "
    "list goes to {aug_list} or --aug-list. Pass --no-aug to train on the 1,464 VOC train images."
)
# VOC values: 0 background -> ignore, 1..20 -> 0..19, 255 void (boundaries) -> ignore.
VOC_LUT = lookup_table({0: IGNORE, IGNORE: IGNORE, **{k: k - 1 for k in range(1, 21)}}, 256)
VOC_VALUES = "VOC values 0 (background), 1..20 (classes) and 255 (void)"


def convert_voc_label(job: Job) -> np.ndarray:
    return convert_png_label(job, ("P", "L"), VOC_LUT, VOC_VALUES)


def voc_split_jobs(
    root: str,
    *,
    aug_dir: str | None = None,
    train_list: str | None = None,
    val_list: str | None = None,
    aug_list: str | None = None,
    use_aug: bool | None = None,
) -> dict[str, tuple[list[Job], str, str]]:
    """{split: (jobs, output folder, description)} after checking every input exists.

    use_aug: True = require SBD, False = ignore it, None = use it when its folder exists.
    """
    voc = os.path.join(root, "VOC2012")
    hint = VOC_HINT.format(voc=voc)
    images = require_dir(os.path.join(voc, "JPEGImages"), "VOC 2012 JPEGImages folder", hint)
    seg = require_dir(
        os.path.join(voc, "SegmentationClass"), "VOC 2012 SegmentationClass folder", hint
    )
    sets = os.path.join(voc, "ImageSets", "Segmentation")
    train_list = train_list or os.path.join(sets, "train.txt")
    val_list = val_list or os.path.join(sets, "val.txt")
    aug_dir = aug_dir or os.path.join(voc, "SegmentationClassAug")
    deeplab_list = os.path.join(voc, "ImageSets", "SegmentationAug", "train_aug.txt")
    mmseg_list = os.path.join(sets, "aug.txt")
    sbd_hint = SBD_HINT.format(aug=aug_dir, aug_list=deeplab_list)

    if use_aug is None:
        use_aug = os.path.isdir(aug_dir)
    val_ids = read_id_list(val_list, "VOC val list", hint)
    train_ids = read_id_list(train_list, "VOC train list", hint)
    voc_train = set(train_ids)
    lists = train_list
    if use_aug:
        require_dir(aug_dir, "SBD SegmentationClassAug folder", sbd_hint)
        if aug_list or os.path.isfile(deeplab_list) or not os.path.isfile(mmseg_list):
            # DeepLab's train_aug.txt: VOC train + SBD, without VOC val (10,582 ids).
            aug_list = aug_list or deeplab_list
            aug_ids = read_id_list(aug_list, "VOC train_aug list", sbd_hint)
        else:
            # mmseg's voc_aug.py writes aug.txt = SBD minus VOC trainval; train.txt completes it.
            aug_list = mmseg_list
            aug_ids = read_id_list(aug_list, "mmseg SBD aug list", sbd_hint)
            aug_ids = train_ids + [i for i in aug_ids if i not in voc_train]
        train_ids, lists = aug_ids, aug_list
        leaked = sorted(set(train_ids) & set(val_ids))
        if leaked:
            raise PrepareError(
                f"{len(leaked)} ids of the train_aug list {aug_list} are also in the val list "
                f"{val_list} (e.g. {', '.join(leaked[:5])}): training on them would leak the val "
                f"set. Use the standard 10,582-id train_aug.txt."
            )
        n_sbd = sum(i not in voc_train for i in train_ids)
        train_desc = (
            f"train = train_aug ({len(train_ids)} ids: {len(train_ids) - n_sbd} with VOC "
            f"SegmentationClass labels, {n_sbd} with SBD SegmentationClassAug labels; list {aug_list})"
        )
    else:
        train_desc = f"train = VOC train list ({len(train_ids)} ids; no SBD; list {train_list})"

    out = os.path.join(voc, "annotations_detectron2")
    result = {}
    for split, ids, desc, id_list in (
        ("train", train_ids, train_desc, lists),
        ("val", val_ids, f"val = VOC val list ({len(val_ids)} ids; list {val_list})", val_list),
    ):
        out_dir = os.path.join(out, split)
        # VOC's own labels where they exist (val, and the train ids of the official list);
        # SBD's for the other train_aug ids. For VOC ids the two are the same maps anyway.
        jobs = [
            Job(
                key=i,
                src=os.path.join(seg if split == "val" or i in voc_train else aug_dir, i + ".png"),
                image=os.path.join(images, i + ".jpg"),
                dst=os.path.join(out_dir, i + ".png"),
            )
            for i in ids
        ]
        check_sources_exist(jobs, sbd_hint if use_aug else hint, f"for the ids in {id_list}")
        result[split] = (jobs, out_dir, desc)
    return result


def prepare_voc(
    root: str,
    *,
    workers: int = 1,
    overwrite: bool = False,
    log=print,
    **sources,
) -> list[Summary]:
    splits = voc_split_jobs(root, **sources)  # every check first, then the work
    return run_splits(
        splits,
        convert_voc_label,
        name="VOC 2012",
        title="VOC 2012",
        workers=workers,
        overwrite=overwrite,
        log=log,
    )
