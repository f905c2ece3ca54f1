"""Every shipped YAML loads and builds a model (tiny widths, random CLIP: no downloads)."""

import pytest
from detectron2.modeling import build_model

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.modeling import CLIPZSS
from tests.helpers import CONFIGS, TINY_MODEL_OPTS

CONFIG_FILES = sorted(p for p in CONFIGS.rglob("*.yaml"))


def test_configs_are_found():
    names = {p.name for p in CONFIG_FILES}
    assert {"Base-CLIPZSS.yaml", "voc.yaml", "coco_stuff.yaml", "pascal_context.yaml"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_and_builds(path):
    cfg = get_clipzss_cfg()
    if path.parent == CONFIGS / "miniworld" / "students":  # run_miniworld.py --student FILE
        cfg.merge_from_file(str(CONFIGS / "miniworld" / "full.yaml"))  # deltas: no _BASE_
    cfg.merge_from_file(str(path))
    published = (tuple(cfg.DATASETS.TRAIN), tuple(cfg.DATASETS.TEST), cfg.SOLVER.MAX_ITER)
    keep = cfg.MODEL.BACKBONE.NAME  # tiny widths for ResNets only; other backbones as configured
    if keep == "build_resnet_deeplab_backbone":
        cfg.merge_from_list(TINY_MODEL_OPTS)
    else:
        # ImageNet weights named for training (a hub tag) are not fetched in tests
        offline = ["MODEL.TIMM.PRETRAINED", "", "MODEL.SWIN.PRETRAINED", ""]
        cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *offline])
    model = build_model(cfg)
    assert isinstance(model, CLIPZSS)
    assert (tuple(cfg.DATASETS.TRAIN), tuple(cfg.DATASETS.TEST), cfg.SOLVER.MAX_ITER) == published
    if cfg.DATASETS.TRAIN:
        assert model.train_vocabulary, "training vocabulary comes from the train dataset"


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _load(*parts):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(str(CONFIGS.joinpath(*parts)))
    return _flat(cfg)


@pytest.mark.parametrize("dataset", ["voc", "coco_stuff", "pascal_context"])
def test_light_student_dataset_configs_change_only_the_student(dataset):
    """students/<dataset>-segformer-b0.yaml = <dataset>.yaml with students/segformer-b0.yaml's
    network, its ImageNet weights named for training, and an output folder of its own."""
    base, student = _load("Base-CLIPZSS.yaml"), _load("students", "segformer-b0.yaml")
    expected = _load(f"{dataset}.yaml")
    expected.update({k: v for k, v in student.items() if v != base[k]})  # the network keys
    expected["MODEL.TIMM.PRETRAINED"] = "pvt_v2_b0.in1k"
    expected["OUTPUT_DIR"] = f"output/{dataset}-segformer-b0"
    assert _load("students", f"{dataset}-segformer-b0.yaml") == expected


@pytest.mark.parametrize(
    "name,iters,train,test",
    [
        ("voc.yaml", 20000, "voc20_zs_train", "voc20_zs_val"),
        ("coco_stuff.yaml", 80000, "coco_stuff171_zs_train", "coco_stuff171_zs_val"),
        ("pascal_context.yaml", 40000, "pcontext59_zs_train", "pcontext59_zs_val"),
    ],
)
def test_published_schedules(name, iters, train, test):
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    assert cfg.SOLVER.MAX_ITER == iters and cfg.SOLVER.IMS_PER_BATCH == 16
    assert tuple(cfg.INPUT.CROP.SIZE) == (512, 512) and cfg.SOLVER.OPTIMIZER == "ADAMW"
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    assert cfg.DATASETS.TRAIN == (train,) and cfg.DATASETS.TEST == (test,)


STUDENT_DIR = CONFIGS / "students"
NETWORK = ("MODEL.BACKBONE.", "MODEL.TIMM.", "MODEL.SWIN.", "MODEL.CLIPZSS.MLP_HEAD.")
NETWORK_KEYS = ("MODEL.CLIPZSS.HEAD_NAME", "MODEL.WEIGHTS")
DATASET_STUDENTS = sorted(
    p.name
    for p in STUDENT_DIR.glob("*-*.yaml")
    if (STUDENT_DIR / p.name.split("-", 1)[1]).is_file()
)


def _network(flat):
    # the ImageNet file to train from is a training choice of the dataset file, not the network
    return {
        k: v
        for k, v in flat.items()
        if (k.startswith(NETWORK) or k in NETWORK_KEYS) and k != "MODEL.TIMM.PRETRAINED"
    }


def test_dataset_student_configs_are_found():
    assert {f"{d}-segformer-b0.yaml" for d in ("voc", "coco_stuff", "pascal_context")} <= set(
        DATASET_STUDENTS
    )


@pytest.mark.parametrize("name", DATASET_STUDENTS)
def test_dataset_student_config_has_its_student_files_network(name):
    """students/<dataset>-<student>.yaml builds exactly students/<student>.yaml's network (it
    takes it through _BASE_, so the network lines live in one file)."""
    student = name.split("-", 1)[1]
    merged = _network(_load("students", name))
    assert merged == _network(_load("students", student))
    assert any(k.startswith("MODEL.CLIPZSS.MLP_HEAD.") for k in merged)


def test_segformer_b1_differs_from_b0_only_in_its_encoder():
    b0, b1 = _load("students", "segformer-b0.yaml"), _load("students", "segformer-b1.yaml")
    assert {k for k in b0 if b0[k] != b1[k]} == {"MODEL.TIMM.NAME"}
    assert b1["MODEL.TIMM.NAME"] == "pvt_v2_b1"
