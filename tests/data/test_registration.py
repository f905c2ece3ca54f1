"""Registered names load the prepared samples and carry exactly the published classes and splits."""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from clipzss_d2.data import (
    DATASETS,
    DatasetNotPreparedError,
    get_training_vocabulary,
    register_all_zeroshot,
    registered_root,
)
from clipzss_d2.data.classes import ADE150_CLASSES, PCONTEXT459_CLASSES
from clipzss_d2.vocabulary import parse_vocabulary, prompt_names, seen_class_ids, unseen_class_ids
from tests.data_samples import read_png
from tests.published_classes import (
    COCO171,
    COCO171_UNSEEN,
    PC59,
    PC59_UNSEEN_ZS3,
    PC59_UNSEEN_ZSB,
    VOC20,
    VOC20_UNSEEN,
)

# name -> (classes, unseen, number of sample images, image folder, label folder)
EXPECTED = {
    "voc20_zs_train": (VOC20, VOC20_UNSEEN, 9, "VOC2012/JPEGImages", "VOC2012/annotations_detectron2/train"),
    "voc20_zs_val": (VOC20, VOC20_UNSEEN, 17, "VOC2012/JPEGImages", "VOC2012/annotations_detectron2/val"),
    "voc20_ov_val": (VOC20, [], 17, "VOC2012/JPEGImages", "VOC2012/annotations_detectron2/val"),
    "coco_stuff171_zs_train": (COCO171, COCO171_UNSEEN, 13, "coco/train2017", "coco/stuffthingmaps_detectron2/train2017"),
    "coco_stuff171_zs_val": (COCO171, COCO171_UNSEEN, 8, "coco/val2017", "coco/stuffthingmaps_detectron2/val2017"),
    "coco_stuff171_ov_train": (COCO171, [], 13, "coco/train2017", "coco/stuffthingmaps_detectron2/train2017"),
    "coco_stuff171_ov_val": (COCO171, [], 8, "coco/val2017", "coco/stuffthingmaps_detectron2/val2017"),
    "pcontext59_zs_train": (PC59, PC59_UNSEEN_ZS3, 2, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_train"),
    "pcontext59_zs_val": (PC59, PC59_UNSEEN_ZS3, 2, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_val"),
    "pcontext59_zsb_train": (PC59, PC59_UNSEEN_ZSB, 2, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_train"),
    "pcontext59_zsb_val": (PC59, PC59_UNSEEN_ZSB, 2, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_val"),
    "pcontext59_ov_val": (PC59, [], 2, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc59_val"),
    # class lists checked against objectInfo150.csv / labels.txt in the prepare tests
    "pcontext459_ov_val": (list(PCONTEXT459_CLASSES), [], 2, "VOCdevkit/VOC2010/JPEGImages", "VOCdevkit/VOC2010/annotations_detectron2/pc459_val"),
    "ade150_ov_val": (list(ADE150_CLASSES), [], 3, "ADEChallengeData2016/images/validation", "ADEChallengeData2016/annotations_detectron2/validation"),
}  # fmt: skip


def test_exactly_the_documented_names_are_registered():
    assert set(DATASETS) == set(EXPECTED)
    assert set(EXPECTED) <= set(DatasetCatalog.list())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metadata_is_the_published_protocol(name):
    classes, unseen, *_ = EXPECTED[name]
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == classes
    assert meta.unseen_classes == unseen
    assert meta.ignore_label == (65535 if len(classes) > 255 else 255)
    assert meta.evaluator_type == "gzss_sem_seg"
    assert len(meta.stuff_colors) == len(classes) and len(
        set(map(tuple, meta.stuff_colors))
    ) == len(classes)
    names = prompt_names(meta)
    assert len(names) == len(classes)
    assert parse_vocabulary(names) == names  # no blanks, no duplicate display names
    seen = [classes[i] for i in seen_class_ids(meta)]
    assert seen == [c for c in classes if c not in unseen]
    assert [classes[i] for i in unseen_class_ids(meta)] == [c for c in classes if c in unseen]


def test_split_sizes_and_prompt_names():
    sizes = {
        n: (len(MetadataCatalog.get(n).stuff_classes), len(MetadataCatalog.get(n).unseen_classes))
        for n in EXPECTED
    }
    assert sizes["voc20_zs_train"] == (20, 5)
    assert sizes["coco_stuff171_zs_train"] == (171, 15)
    assert sizes["pcontext59_zs_train"] == sizes["pcontext59_zsb_train"] == (59, 10)
    assert sizes["voc20_ov_val"] == (20, 0) and sizes["pcontext59_ov_val"] == (59, 0)
    assert sizes["coco_stuff171_ov_train"] == (171, 0)
    assert sizes["ade150_ov_val"] == (150, 0) and sizes["pcontext459_ov_val"] == (459, 0)
    voc = prompt_names(MetadataCatalog.get("voc20_zs_val"))
    assert voc[VOC20.index("diningtable")] == "dining table"
    assert voc[VOC20.index("tvmonitor")] == "tv monitor|television"
    coco = prompt_names(MetadataCatalog.get("coco_stuff171_zs_val"))
    assert coco[COCO171.index("wall-concrete")] == "concrete wall"
    assert coco[COCO171.index("person")] == "person"


def test_training_vocabulary_is_the_seen_prompts_in_order():
    assert get_training_vocabulary(["voc20_zs_train"]) == [
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "dining table", "dog", "horse", "motorbike", "person",
    ]  # fmt: skip
    zs3 = get_training_vocabulary(["pcontext59_zs_train"])
    assert len(zs3) == 49 and "aeroplane" not in zs3 and "bed" in zs3
    zsb = get_training_vocabulary(["pcontext59_zsb_train"])
    assert len(zsb) == 49 and "bed" not in zsb and "bird" in zsb
    coco = get_training_vocabulary(["coco_stuff171_zs_train"])
    assert len(coco) == 156 and "concrete wall" not in coco and "cow" not in coco
    assert "wall" in coco  # wall-other stays seen


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_loads_the_prepared_samples(prepared_root, name):
    classes, _, count, image_dir, label_dir = EXPECTED[name]
    meta = MetadataCatalog.get(name)
    assert meta.image_root == str(prepared_root / image_dir)
    assert meta.sem_seg_root == str(prepared_root / label_dir)
    records = DatasetCatalog.get(name)
    assert len(records) == count
    for r in records:
        assert r["file_name"] == str(prepared_root / image_dir / f"{r['image_id']}.jpg")
        assert r["sem_seg_file_name"] == str(prepared_root / label_dir / f"{r['image_id']}.png")
        label = read_png(r["sem_seg_file_name"])
        assert set(np.unique(label).tolist()) <= set(range(len(classes))) | {meta.ignore_label}


def test_missing_data_gives_the_prepare_command(tmp_path):
    previous = registered_root()
    try:
        register_all_zeroshot(str(tmp_path / "empty"))  # registration itself reads nothing
        with pytest.raises(DatasetNotPreparedError, match="python datasets/prepare_coco_stuff.py"):
            DatasetCatalog.get("coco_stuff171_zs_val")
        with pytest.raises(
            DatasetNotPreparedError, match=r"label folder .*pc59_val does not exist"
        ):
            DatasetCatalog.get("pcontext59_ov_val")
    finally:
        register_all_zeroshot(previous)
