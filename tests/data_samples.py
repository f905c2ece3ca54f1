"""Copies of the real dataset samples (../shared/data) laid out as the prepare scripts expect.

PASCAL Context ships no .mat files in the samples, so `stage_context` builds them from the
Detail API fixture (COCO RLE masks of the 59 classes, in the 459-label id space) and fills the
pixels no mask covers with ids of other 459-label classes, as the real LabelMaps have.
"""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

VOC_TRAIN = ["2008_000019", "2011_000003", "2011_000006", "2011_000025"]
VOC_SBD_ONLY = ["2008_000008", "2008_000026", "2008_004015", "2008_007006", "2009_003982"]
CONTEXT_TRAIN = ["2008_000008", "2008_000019"]
CONTEXT_VAL = ["2008_000009", "2008_000026"]
# 459-label ids outside the 59 classes (accordion, ..., wool) and 0 = unlabelled.
CONTEXT_FILLER_IDS = (0, 1, 100, 300, 459)


def write_list(path: Path, ids) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def stage_voc(shared: Path, root: Path, with_aug: bool = True) -> dict:
    """root/VOC2012 with sample lists; returns the list paths for prepare_voc."""
    src = shared / "voc" / "VOC2012"
    dst = root / "VOC2012"
    ignore = [] if with_aug else ["SegmentationClassAug"]
    shutil.copytree(
        src, dst, ignore=lambda d, names: [n for n in names if n in ignore or "grayscale" in n]
    )
    sets = dst / "ImageSets"
    return {
        "train_list": str(sets / "Segmentation" / "sample_train.txt"),
        "val_list": str(sets / "Segmentation" / "sample_val.txt"),
        "aug_list": str(
            write_list(sets / "SegmentationAug" / "sample_aug.txt", VOC_TRAIN + VOC_SBD_ONLY)
        ),
    }


def stage_coco(shared: Path, root: Path, maps_name: str = "stuffthingmaps") -> Path:
    src = shared / "coco_stuff"
    coco = root / "coco"
    for split in ("train2017", "val2017"):
        shutil.copytree(src / split, coco / split)
        shutil.copytree(src / "stuffthingmaps_trainval2017" / split, coco / maps_name / split)
    return coco


def context_annotations(shared: Path, ids) -> dict:
    """{stem: [(459-id, RLE), ...]} from the Detail API fixture, in file order."""
    data = json.loads(
        (shared / "pascal_context" / "detail_api_res" / "inst_seg_correct.json").read_text()
    )
    wanted = {int(i.replace("_", "")): i for i in ids}
    out = {i: [] for i in ids}
    for ann in data:
        if ann["image_id"] in wanted:
            out[wanted[ann["image_id"]]].append((ann["category_id"], ann["segmentation"]))
    return out


def context_label_maps(shared: Path, ids) -> dict[str, np.ndarray]:
    """459-id LabelMaps (uint16): filler bands of non-59 ids, then the fixture's masks."""
    from pycocotools import mask as mask_util

    maps = {}
    for stem, anns in context_annotations(shared, ids).items():
        h, w = anns[0][1]["size"]
        rows = np.arange(h)[:, None] * len(CONTEXT_FILLER_IDS) // h
        label = np.broadcast_to(np.asarray(CONTEXT_FILLER_IDS, np.uint16)[rows], (h, w)).copy()
        for category_id, rle in anns:
            with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword deprecation
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                mask = mask_util.decode(rle)
            label[mask.astype(bool)] = category_id
        maps[stem] = label
    return maps


def stage_context(shared: Path, root: Path, source: str = "mat") -> dict[str, np.ndarray]:
    """root/VOCdevkit/VOC2010 with JPEGs, Main lists and labels from `source`."""
    from scipy.io import savemat

    src = shared / "pascal_context" / "VOC2010"
    voc = root / "VOCdevkit" / "VOC2010"
    shutil.copytree(src / "JPEGImages", voc / "JPEGImages")
    write_list(voc / "ImageSets" / "Main" / "train.txt", CONTEXT_TRAIN)
    write_list(voc / "ImageSets" / "Main" / "val.txt", CONTEXT_VAL)
    maps = context_label_maps(shared, CONTEXT_TRAIN + CONTEXT_VAL)
    if source == "mat":
        (voc / "trainval").mkdir()
        shutil.copy(src / "labels_459_from_fcn_classes-400.txt", voc / "labels.txt")
        for stem, label in maps.items():
            savemat(voc / "trainval" / f"{stem}.mat", {"LabelMap": label})
    return maps


def prepare_all_samples(shared: Path, root: Path) -> None:
    """Every benchmark's samples prepared under root (for registration and mapper tests)."""
    from clipzss_d2.data.prepare import (
        prepare_ade20k,
        prepare_coco_stuff,
        prepare_pascal_context,
        prepare_pascal_context459,
        prepare_voc,
    )

    quiet = {"workers": 1, "log": lambda *a: None}
    lists = stage_voc(shared, root)
    stage_coco(shared, root)
    stage_context(shared, root)
    stage_ade20k(shared, root)
    summaries = (
        prepare_voc(str(root), aug_list=lists["aug_list"], val_list=lists["val_list"], **quiet)
        + prepare_coco_stuff(str(root), **quiet)
        + prepare_pascal_context(str(root), **quiet)
        + prepare_pascal_context459(str(root), **quiet)
        + prepare_ade20k(str(root), **quiet)
    )
    assert all(s.ok for s in summaries), [s.report() for s in summaries]


def read_png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


ADE_VAL = ["ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003"]
ADE_TRAIN = ["ADE_train_00000036"]


def stage_ade20k(shared: Path, root: Path) -> Path:
    """root/ADEChallengeData2016 with the real image/annotation pairs (no unpaired labels)."""
    ade = root / "ADEChallengeData2016"
    shutil.copytree(shared / "ade20k" / "ADEChallengeData2016", ade)
    return ade
