"""A user's own dataset: one call or one dataset file, declared label encodings, clear errors,
the GZS evaluator on a hand-worked case, and train_net.py end to end on a generated dataset."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import clipzss_d2
from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.data import (
    CustomDatasetError,
    get_training_vocabulary,
    read_label_map,
    register_custom_datasets,
    register_dataset_file,
)
from clipzss_d2.errors import UserInputError
from clipzss_d2.evaluation import GZSSSemSegEvaluator
from tests.helpers import ROOT, TINY_MODEL_OPTS

CLASSES = ["sky", "grass", "cow", "sheep"]
UNSEEN = ["sheep"]
COLORS = [(70, 130, 180), (60, 180, 60), (120, 70, 20), (240, 240, 240)]
V = 255  # "not labelled" in the canonical form

# Hand-made ground truth: class ids 0..3 and V; every encoding below stores exactly this.
GT = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 0, 2, 2, V, 0],
        [1, 1, 2, 2, V, 3],
        [1, 1, 1, V, 3, 3],
    ],
    dtype=np.uint8,
)


def encode(gt: np.ndarray, how: str) -> Image.Image:
    """Write `gt` the way a user's files store it (independent of the decoder under test)."""
    ids, void = gt.astype(np.int64), gt == V
    if how == "plain":  # 8-bit ids, 255 void
        return Image.fromarray(gt)
    if how == "palette":  # palette PNG, index = id, 0 void, ids shifted by one (VOC-like)
        img = Image.fromarray(np.where(void, 0, ids + 1).astype(np.uint8), mode="L")
        img = img.convert("P")
        img.putpalette([c for i in range(256) for c in ((i * 37) % 256, (i * 91) % 256, i)])
        return img
    if how == "uint16":  # 16-bit ids, 65535 void
        return Image.fromarray(np.where(void, 65535, ids).astype(np.uint16))
    if how == "coco":  # 1-based ids (COCO-style offset), 0 = unlabelled
        return Image.fromarray(np.where(void, 0, ids + 1).astype(np.uint8))
    if how == "void254":  # a void value other than 255
        return Image.fromarray(np.where(void, 254, ids).astype(np.uint8))
    if how == "color":  # RGB colours per class, black = void
        rgb = np.zeros(gt.shape + (3,), dtype=np.uint8)
        for i, c in enumerate(COLORS):
            rgb[gt == i] = c
        return Image.fromarray(rgb)
    raise ValueError(how)


ENCODINGS = {
    "plain": None,
    "palette": {"format": "palette", "offset": 1, "void": [0]},
    "uint16": {"void": [65535]},
    "coco": {"offset": 1, "void": [0]},
    "void254": {"void": [254]},
    "color": {"format": "color", "colors": [list(c) for c in COLORS], "void": [[0, 0, 0]]},
}


def make_dataset(root: Path, how: str = "plain", n: int = 2, scale: int = 1) -> tuple[str, str]:
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    gt = np.kron(GT, np.ones((scale, scale), dtype=np.uint8))
    for k in range(n):
        gt_k = np.roll(gt, k, axis=1)
        rgb = np.full(gt_k.shape + (3,), 128, dtype=np.uint8)
        for i, c in enumerate(COLORS):
            rgb[gt_k == i] = c
        Image.fromarray(rgb).save(images / f"img{k}.jpg", quality=95)
        encode(gt_k, how).save(labels / f"img{k}.png")
    return str(images), str(labels)


@pytest.mark.parametrize("how", sorted(ENCODINGS))
def test_declared_encodings_decode_to_the_same_ids(tmp_path, name, how):
    images, labels = make_dataset(tmp_path, how)
    clipzss_d2.register_zeroshot_sem_seg(
        name, images, labels, CLASSES, UNSEEN, label_encoding=ENCODINGS[how]
    )
    records = DatasetCatalog.get(name)
    assert [r["image_id"] for r in records] == ["img0", "img1"]
    for k, r in enumerate(records):
        # the reader the mapper and the evaluator use, given only the file path
        np.testing.assert_array_equal(read_label_map(r["sem_seg_file_name"]), np.roll(GT, k, 1))
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == CLASSES and meta.unseen_classes == UNSEEN
    assert meta.ignore_label == 255 and meta.evaluator_type == "gzss_sem_seg"
    assert get_training_vocabulary([name]) == ["sky", "grass", "cow"]


@pytest.mark.parametrize(
    "how, encoding, message",
    [
        # the class list is one short of the ids in the files (0-based ids, 1-based declared)
        ("plain", {"offset": 1, "void": [0]}, r"values 255, which are neither a class"),
        ("coco", None, r"values 4, which are neither a class \(4 classes stored as values 0..3\)"),
        ("uint16", None, r"values 65535, which are neither"),
        ("color", "palette", r"image mode RGB, but label_encoding says palette PNG"),
        ("palette", "color", r"label_encoding format 'color' needs `colors`"),
    ],
)
def test_class_list_and_label_ids_disagree(tmp_path, name, how, encoding, message):
    images, labels = make_dataset(tmp_path, how)
    with pytest.raises(CustomDatasetError, match=message) as e:
        clipzss_d2.register_zeroshot_sem_seg(
            name, images, labels, CLASSES, UNSEEN, label_encoding=encoding
        )
        DatasetCatalog.get(name)
    assert isinstance(e.value, UserInputError)


def test_unseen_names_must_be_classes(tmp_path, name):
    images, labels = make_dataset(tmp_path)
    with pytest.raises(CustomDatasetError, match=r"unseen class\(es\) \['Sheep'\] are not in"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, labels, CLASSES, ["Sheep"])
    with pytest.raises(CustomDatasetError, match="appear twice"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, labels, CLASSES + ["cow"], [])
    with pytest.raises(CustomDatasetError, match="same stored value"):
        clipzss_d2.register_zeroshot_sem_seg(
            name, images, labels, CLASSES, label_encoding={"values": [1, 2, 3, 3]}
        )


def test_size_mismatch_and_missing_files(tmp_path, name):
    images, labels = make_dataset(tmp_path, n=3)
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(Path(labels) / "img1.png")
    os.remove(Path(images) / "img2.jpg")
    clipzss_d2.register_zeroshot_sem_seg(name, images, labels, CLASSES, UNSEEN)
    with pytest.raises(CustomDatasetError, match=r"(?s)1 of 3 label files have no image.*img2.png"):
        DatasetCatalog.get(name)
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(Path(images) / "img2.jpg")
    with pytest.raises(
        CustomDatasetError, match=r"size mismatch: label .*img1.png is 5x4 but image .*6x4"
    ):
        DatasetCatalog.get(name)
    clipzss_d2.register_zeroshot_sem_seg(name, images, str(tmp_path / "nope"), CLASSES)
    with pytest.raises(CustomDatasetError, match=r"label folder .*nope does not exist"):
        DatasetCatalog.get(name)


def write_dataset_file(tmp_path: Path, how: str = "coco", suffix: str = ".yaml", **extra) -> Path:
    for split in ("train", "val"):
        make_dataset(tmp_path / "data" / split, how, n=4 if split == "train" else 2, scale=8)
    spec = {
        "name": "farm",
        "root": "data",
        "classes": CLASSES,
        "unseen": UNSEEN,
        "prompts": {"cow": "cow|cattle"},
        "label_encoding": ENCODINGS[how],
        "splits": {s: {"images": f"{s}/images", "labels": f"{s}/labels"} for s in ("train", "val")},
        **extra,
    }
    path = tmp_path / f"farm{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(spec))
    else:
        import yaml

        path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_dataset_file_named_in_the_config(tmp_path, suffix):
    path = write_dataset_file(tmp_path, suffix=suffix)
    cfg = get_clipzss_cfg()
    cfg.merge_from_list(
        ["DATASETS.CUSTOM", [str(path)], "DATASETS.TRAIN", ("farm_train",), "DATASETS.TEST", ("farm_val",)]
    )  # fmt: skip
    try:
        assert register_custom_datasets(cfg) == ["farm_train", "farm_val"]
        meta = MetadataCatalog.get("farm_val")
        assert meta.prompt_names == ["sky", "grass", "cow|cattle", "sheep"]
        assert meta.image_root == str(tmp_path / "data" / "val" / "images")
        assert len(DatasetCatalog.get("farm_train")) == 4
        assert get_training_vocabulary(["farm_train"]) == ["sky", "grass", "cow|cattle"]
    finally:
        for n in ("farm_train", "farm_val"):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_bad_dataset_file_stops_before_training(tmp_path):
    # 0-based files, but the file declares 1-based ids with 0 = unlabelled
    path = write_dataset_file(tmp_path, "plain", label_encoding=ENCODINGS["coco"])
    cfg = get_clipzss_cfg()
    cfg.merge_from_list(["DATASETS.CUSTOM", [str(path)], "DATASETS.TEST", ("farm_val",)])
    try:
        # the test set is checked at registration time, not at the first evaluation
        with pytest.raises(CustomDatasetError, match=r"Dataset farm_val: 2 of 2 .* unusable"):
            register_custom_datasets(cfg)
    finally:
        for n in ("farm_train", "farm_val"):
            if n in DatasetCatalog.list():
                DatasetCatalog.remove(n)
                MetadataCatalog.remove(n)
    path.write_text(path.read_text() + "unknown_key: 1\n")
    with pytest.raises(CustomDatasetError, match=r"unknown key\(s\) \['unknown_key'\]"):
        register_dataset_file(str(path))
    with pytest.raises(CustomDatasetError, match="does not exist"):
        register_dataset_file(str(tmp_path / "missing.yaml"))


def test_gzs_evaluator_hand_worked_on_encoded_labels(tmp_path, name):
    # 1-based 16-bit ids with 0 = unlabelled; the evaluator must decode them like the mapper.
    images, labels = make_dataset(tmp_path, "uint16", n=1)
    clipzss_d2.register_zeroshot_sem_seg(
        name, images, labels, CLASSES, UNSEEN, label_encoding={"void": [65535]}
    )
    pred = np.array(
        [
            [0, 0, 0, 0, 0, 1],  # one sky pixel predicted grass
            [0, 0, 2, 3, 3, 0],  # one cow pixel predicted sheep; (1,4) is void
            [1, 1, 2, 2, 0, 3],  # (2,4) is void
            [1, 2, 1, 2, 3, 3],  # one grass pixel predicted cow; (3,3) is void
        ]
    )
    # labelled pixels: sky 9, grass 5, cow 4, sheep 3 (3 void pixels ignored)
    #   sky   tp 8, gt 9, pred 8          -> IoU 8/9
    #   grass tp 4, gt 5, pred 4+1 = 5    -> IoU 4/6
    #   cow   tp 3, gt 4, pred 3+1 = 4    -> IoU 3/5
    #   sheep tp 3, gt 3, pred 3+1 = 4    -> IoU 3/4
    evaluator = GZSSSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    [record] = DatasetCatalog.get(name)
    logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 4).permute(2, 0, 1).float()
    evaluator.process([record], [{"sem_seg": logits}])
    res = evaluator.evaluate()["sem_seg"]
    seen = 100 * (8 / 9 + 4 / 6 + 3 / 5) / 3
    assert res["mIoU(seen)"] == pytest.approx(seen)
    assert res["mIoU(unseen)"] == pytest.approx(75.0)
    assert res["hIoU"] == pytest.approx(2 * seen * 75 / (seen + 75))
    assert res["pAcc"] == pytest.approx(100 * 18 / 21)


TRAIN_OPTS = [
    "SOLVER.MAX_ITER", "3",
    "SOLVER.CHECKPOINT_PERIOD", "100",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.IMS_PER_BATCH", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(32,)",
    "INPUT.MAX_SIZE_TRAIN", "64",
    "INPUT.CROP.SIZE", "(32, 32)",
    "INPUT.SIZE_DIVISIBILITY", "32",
    "INPUT.MIN_SIZE_TEST", "32",
    "INPUT.MAX_SIZE_TEST", "64",
    "MODEL.CLIPZSS.PLM.SYNTH_HEADS", "2",
    "TEST.EVAL_PERIOD", "0",
]  # fmt: skip


def run(args, tmp_path):
    opts = [str(o) for o in TINY_MODEL_OPTS] + TRAIN_OPTS + ["OUTPUT_DIR", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, *args, *opts],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, proc.stdout + proc.stderr


def test_train_net_trains_and_evaluates_a_registered_dataset(tmp_path):
    """The README's route: register with one call, then train_net's own main()."""
    for split in ("train", "val"):
        make_dataset(tmp_path / split, "palette", n=4 if split == "train" else 2, scale=8)
    script = tmp_path / "train_farm.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            import clipzss_d2
            for split in ("train", "val"):
                clipzss_d2.register_zeroshot_sem_seg(
                    f"farm_{{split}}", f"{tmp_path}/{{split}}/images",
                    f"{tmp_path}/{{split}}/labels", {CLASSES!r}, {UNSEEN!r},
                    label_encoding={{"format": "palette", "offset": 1, "void": [0]}})
            import train_net
            args = train_net.default_argument_parser().parse_args()
            train_net.launch(train_net.main, args.num_gpus, args=(args,))
            """
        )
    )
    proc, log = run(
        [str(script), "--config-file", "configs/Base-CLIPZSS.yaml",
         "DATASETS.TRAIN", "('farm_train',)", "DATASETS.TEST", "('farm_val',)"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, log[-5000:]
    assert "Training labels of ['farm_train']: 3 seen classes -> ids 0..2" in log
    assert "Generalized zero-shot evaluation of farm_val (3 seen, 1 unseen" in log
    for key in ("mIoU(seen)", "mIoU(unseen)", "hIoU", "Per-class IoU"):
        assert key in log, key
    assert (tmp_path / "out/model_final.pth").exists()


def test_train_net_dataset_file_named_in_the_config(tmp_path):
    path = write_dataset_file(tmp_path, "coco")
    proc, log = run(
        ["train_net.py", "--config-file", "configs/Base-CLIPZSS.yaml",
         "DATASETS.CUSTOM", f"['{path}']",
         "DATASETS.TRAIN", "('farm_train',)", "DATASETS.TEST", "('farm_val',)"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, log[-3000:]
    assert "Generalized zero-shot evaluation of farm_val" in log


# -- dataset files a careless or hostile user writes ---------------------------------------------
def dataset_file(tmp_path, text: str) -> str:
    for split in ("images", "labels"):
        (tmp_path / split).mkdir(exist_ok=True)
    path = tmp_path / "pets.yaml"
    path.write_text(text)
    return str(path)


SPLITS = "splits: {train: {images: images, labels: labels}}\n"


@pytest.mark.parametrize("value,shown", [("no", "False"), ("on", "True"), ("null", "None")])
def test_yaml_booleans_and_null_are_not_class_names(tmp_path, value, shown):
    path = dataset_file(tmp_path, f"name: pets\nclasses: [cat, {value}]\n{SPLITS}")
    with pytest.raises(CustomDatasetError) as error:
        register_dataset_file(path)
    message = str(error.value)
    assert f"`classes` entry 1 is {shown}, not a name" in message and "quote the name" in message
    register_dataset_file(
        dataset_file(tmp_path, f"name: pets\nclasses: [cat, '{value}']\n{SPLITS}")
    )


def test_yaml_aliases_are_refused_at_once(tmp_path):
    """The 'billion laughs' shape: nine nested aliases stand for 10**9 strings."""
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = dataset_file(tmp_path, "\n".join(lines) + "\nname: pets\nclasses: *a9\n" + SPLITS)
    start = time.monotonic()
    with pytest.raises(CustomDatasetError, match=r"uses YAML aliases \(\*name\); write the values"):
        register_dataset_file(path)
    assert time.monotonic() - start < 5


def test_a_dataset_file_cannot_replace_a_built_in_dataset(tmp_path):
    path = dataset_file(
        tmp_path, "name: voc20_zs\nclasses: [cat, dog]\n" + SPLITS.replace("train", "val")
    )
    with pytest.raises(CustomDatasetError, match="voc20_zs_val is a dataset this project or"):
        register_dataset_file(path)
    assert MetadataCatalog.get("voc20_zs_val").get("benchmark") != "custom"  # still the built-in


def test_two_images_with_one_stem_are_refused(tmp_path, name):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "1.jpg")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(labels / "1.png")
    clipzss_d2.register_zeroshot_sem_seg(name, str(images), str(labels), ["cat", "dog"])
    with pytest.raises(CustomDatasetError, match=r"1 image name\(s\) in .* stand for two files"):
        DatasetCatalog.get(name)


def test_a_truncated_image_is_found_before_training_and_named(tmp_path, name):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / "a.jpg")
    data = (images / "a.jpg").read_bytes()
    (images / "a.jpg").write_bytes(data[: len(data) // 2])  # the header survives, pixels do not
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(labels / "a.png")
    clipzss_d2.register_zeroshot_sem_seg(name, str(images), str(labels), ["cat", "dog"])
    with pytest.raises(CustomDatasetError, match=r"a\.jpg: cannot be read as an image \(OSError"):
        DatasetCatalog.get(name)
    from clipzss_d2.data.dataset_mapper import read_image_as_stored

    with pytest.raises(OSError, match=r"a\.jpg cannot be decoded as an image"):
        read_image_as_stored(str(images / "a.jpg"), "BGR")
