"""COCO-style JSON as a zero-shot semantic segmentation dataset, against independent references:
genuine COCO val2017 person polygons vs the genuine COCO-Stuff label map of the same image,
COCO-Stuff's own stuff JSON vs pycocotools' annToMask, a panoptic PNG + JSON written by
panopticapi's conventions, the rasterisation rules on hand-worked cases, the checks, the cache,
detectron2-registered datasets, and train_net.py with the GZS evaluator through a dataset file."""

import contextlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_coco_panoptic
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

import clipzss_d2
from clipzss_d2 import get_clipzss_cfg, register_zeroshot_from_detectron2  # the public entry
from clipzss_d2.data import (
    CustomDatasetError,
    read_label_map,
    register_custom_datasets,
    register_dataset_file,
)
from clipzss_d2.data.coco_json import compressed_rle_counts
from clipzss_d2.errors import UserInputError
from tests.data.test_custom_dataset import run
from tests.helpers import ROOT, SHARED_DATA

FIXTURES = ROOT / "tests" / "fixtures"
COCO_STUFF = SHARED_DATA / "coco_stuff"
# Every test here reads genuine COCO files: without the samples the module skips (fails in CI).
pytestmark = pytest.mark.usefixtures("shared_data")
MAPS = COCO_STUFF / "stuffthingmaps_trainval2017"
PERSONS_139 = FIXTURES / "coco_val2017_000000000139_persons.json"
needs_samples = pytest.mark.skipif(not MAPS.is_dir(), reason="../shared/data samples absent")


def coco_stuff_names() -> dict[int, str]:
    """COCO category id -> name, from COCO-Stuff's official labels.txt (`1: person` ...)."""
    out = {}
    for line in (COCO_STUFF / "labels.txt").read_text().splitlines():
        k, v = line.split(":", 1)
        if int(k) > 0:
            out[int(k)] = v.strip()
    return out


def write_json(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def gray_images(folder: Path, sizes: dict[str, tuple[int, int]]) -> str:
    """Stand-in JPEGs of the given (width, height), for annotation files whose photos are absent."""
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (120, 120, 120)).save(folder / file_name)
    return str(folder)


# ---- genuine COCO polygons vs the genuine COCO-Stuff label map -------------------------------


@needs_samples
def test_person_polygons_match_the_genuine_coco_stuff_label_map(tmp_path, name):
    """COCO val2017 image 139: its two genuine person polygons (ids 230831, 233201, from
    detectron2's tests/data/test_coco_evaluation.py, see the fixture's _source) rasterised here
    vs the person pixels (value 0) of the genuine COCO-Stuff map made from the same annotations.

    Tolerance at polygon edges: none. COCO-Stuff's thing pixels were rasterised from these
    polygons with pycocotools' frPyObjects (cocostuffapi's annToMask), the rasteriser used here,
    so every edge pixel must agree. The only differences allowed are pixels the reference gives
    to another object painted over the person: here 82 pixels of dining table (value 66), the
    table in front of the standing person, which this file does not annotate."""
    clipzss_d2.register_zeroshot_sem_seg(
        name, str(COCO_STUFF / "val2017"), str(PERSONS_139), cache_dir=str(tmp_path / "cache")
    )
    (record,) = DatasetCatalog.get(name)
    assert MetadataCatalog.get(name).stuff_classes == ["person"]
    ours = read_label_map(record["sem_seg_file_name"])
    reference = np.asarray(Image.open(MAPS / "val2017" / "000000000139.png"))
    assert ours.shape == reference.shape == (426, 640)
    assert set(np.unique(ours).tolist()) == {0, 255}
    person, ref_person = ours == 0, reference == 0
    assert int(ref_person.sum()) == 3279 and int(person.sum()) == 3361
    assert not (ref_person & ~person).any()  # every reference person pixel is person here
    extra = person & ~ref_person
    assert np.unique(reference[extra]).tolist() == [66]  # ... the rest lies under the table
    assert int(extra.sum()) == 82
    assert (person & ref_person).sum() / (person | ref_person).sum() == pytest.approx(3279 / 3361)


# ---- COCO-Stuff's own stuff JSON (compressed RLE) vs pycocotools annToMask -------------------


def stuff_examples(tmp_path) -> tuple[str, str]:
    src = COCO_STUFF / "annotations" / "stuff_examples.json"
    data = json.loads(src.read_text())
    sizes = {im["file_name"]: (im["width"], im["height"]) for im in data["images"]}
    return gray_images(tmp_path / "images", sizes), str(src)


def pycocotools_maps(path: str) -> tuple[COCO, dict[int, np.ndarray], list[int]]:
    """Per image: the category id (0 = none) of each pixel, painted with annToMask."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    maps = {}
    for image_id, im in coco.imgs.items():
        out = np.zeros((im["height"], im["width"]), np.int64)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            m = coco.annToMask(ann) > 0
            assert not (out[m] > 0).any()  # COCO-Stuff's stuff annotations never overlap
            out[m] = ann["category_id"]
        maps[image_id] = out
    return coco, maps, sorted(coco.cats)


@needs_samples
def test_stuff_json_rle_agrees_with_annToMask_on_every_annotation(tmp_path, name):
    images, path = stuff_examples(tmp_path)
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(tmp_path / "cache"))
    records = DatasetCatalog.get(name)
    coco, maps, cat_ids = pycocotools_maps(path)
    classes = MetadataCatalog.get(name).stuff_classes
    assert classes == [coco.cats[c]["name"] for c in cat_ids] and classes[-1] == "other"
    assert len(records) == 2
    checked = 0
    for r in records:
        ours = read_label_map(r["sem_seg_file_name"]).astype(np.int64)
        ref = maps[r["image_id"]]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[r["image_id"]])):
            m = coco.annToMask(ann) > 0
            assert m.any()
            assert (ours[m] == cat_ids.index(ann["category_id"])).all(), ann["id"]
            checked += 1
        assert (ours[ref == 0] == 255).all()  # not annotated -> ignore
    assert checked == 17


def uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a binary mask, written here from its definition: run lengths
    in column-major order, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def test_compressed_rle_runs_match_their_definition():
    """The check of a compressed RLE string's length (pycocotools does not check it: a short
    string decodes to uninitialised memory) reads the same runs as the definition above."""
    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if t % 2:
            mask[:] = 0
            mask[rng.integers(0, h) :, rng.integers(0, w) :] = 1
        rle = mask_util.encode(np.asfortranarray(mask))
        runs = compressed_rle_counts(rle["counts"].decode())
        assert runs.tolist() == uncompressed_counts(mask)
    big = np.zeros((2000, 3000), np.uint8)
    big[1500:, 2999] = 1  # runs past 2^20: several characters per value
    rle = mask_util.encode(np.asfortranarray(big))
    assert compressed_rle_counts(rle["counts"].decode()).tolist() == uncompressed_counts(big)
    for bad in ("", "zz", "P\x01", "P€"):
        assert compressed_rle_counts(bad) is None


@needs_samples
def test_uncompressed_rle_gives_the_same_maps(tmp_path, name):
    images, path = stuff_examples(tmp_path)
    data = json.loads(Path(path).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    for ann in data["annotations"]:
        counts = uncompressed_counts(coco.annToMask(ann))
        ann["segmentation"] = {"size": ann["segmentation"]["size"], "counts": counts}
    plain = write_json(tmp_path / "uncompressed.json", data)
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(tmp_path / "c"))
    clipzss_d2.register_zeroshot_sem_seg(f"{name}_u", images, plain, cache_dir=str(tmp_path / "c"))
    for a, b in zip(DatasetCatalog.get(name), DatasetCatalog.get(f"{name}_u")):
        np.testing.assert_array_equal(
            read_label_map(a["sem_seg_file_name"]), read_label_map(b["sem_seg_file_name"])
        )


# ---- panoptic PNG + JSON (panopticapi's conventions) -----------------------------------------


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """panopticapi.utils.id2rgb: id = R + 256 G + 256^2 B."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


@needs_samples
def test_panoptic_png_and_json_round_trip_to_the_same_semantic_map(tmp_path, name):
    """The genuine COCO-Stuff map of image 139 written as a panoptic PNG + JSON (one segment per
    class, the person pixels split into two instances, one crowd segment, void = 0) reads back as
    the same map (category id = value + 1, classes = all 182 COCO-Stuff ids)."""
    reference = np.asarray(Image.open(MAPS / "val2017" / "000000000139.png")).astype(np.int64)
    names = coco_stuff_names()
    ids = np.zeros(reference.shape, np.int64)
    segments, rng = [], np.random.default_rng(0)
    cols = np.arange(reference.shape[1])[None, :].repeat(reference.shape[0], 0)
    crowd_value = 61  # chair: written as a crowd region
    for value in np.unique(reference):
        if value == 255:
            continue
        parts = [reference == value]
        if value == 0:  # person: two instances, split at x = 420
            parts = [parts[0] & (cols < 420), parts[0] & (cols >= 420)]
        for part in parts:
            sid = int(rng.integers(1, 1 << 24))
            ids[part] = sid
            segments.append(
                {
                    "id": sid,
                    "category_id": int(value) + 1,
                    "iscrowd": int(value == crowd_value),
                    "area": int(part.sum()),
                    "bbox": [0, 0, 1, 1],
                }  # fmt: skip
            )
    panoptic_root = tmp_path / "panoptic_val2017"
    panoptic_root.mkdir()
    Image.fromarray(id2rgb(ids)).save(panoptic_root / "000000000139.png")
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 426, "width": 640}],
        "annotations": [
            {"image_id": 139, "file_name": "000000000139.png", "segments_info": segments}
        ],
        "categories": [
            {"id": k, "name": v, "isthing": int(k <= 91)} for k, v in sorted(names.items())
        ],
    }
    path = write_json(tmp_path / "panoptic_val2017.json", data)
    images = str(COCO_STUFF / "val2017")
    for crowd, chair in (("class", 61), ("ignore", 255)):
        n = f"{name}_{crowd}"
        clipzss_d2.register_zeroshot_sem_seg(
            n, images, path, rules={"crowd": crowd}, cache_dir=str(tmp_path / "cache")
        )  # panoptic_root: the JSON's path without .json, panopticapi's layout
        assert MetadataCatalog.get(n).stuff_classes == [names[k] for k in sorted(names)]
        (record,) = DatasetCatalog.get(n)
        expected = np.where(reference == crowd_value, chair, reference)
        np.testing.assert_array_equal(read_label_map(record["sem_seg_file_name"]), expected)


# ---- the rasterisation rules, hand-worked --------------------------------------------------


def square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def rules_dataset(tmp_path) -> tuple[str, str]:
    """A 6x4 image: a big "table" square, a small "cup" on it (later in the file is the table),
    a crowd "person" region, and a "lamp" whose category the class list below leaves out."""
    images = gray_images(tmp_path / "images", {"a.png": (6, 4)})
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 6}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 2, "segmentation": square(1, 1, 2, 2)},
            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": square(0, 0, 4, 3)},
            {
                "id": 12,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": square(3, 0, 6, 4),
            },
            {"id": 13, "image_id": 1, "category_id": 4, "segmentation": square(5, 0, 6, 1)},
        ],  # fmt: skip
        "categories": [
            {"id": 1, "name": "table"},
            {"id": 2, "name": "cup", "synonyms": ["mug", "tea_cup"]},
            {"id": 3, "name": "person"},
            {"id": 4, "name": "lamp"},
        ],
    }
    return images, write_json(tmp_path / "rules.json", data)


T, C, P, L, X = 0, 1, 2, 3, 255  # table, cup, person, lamp, ignore (X)


@pytest.mark.parametrize(
    "rules, classes, expected",
    [
        # defaults: smaller wins (cup on table), crowd under objects and ignored, rest ignored
        ({}, None, [[T, T, T, T, X, L], [T, C, T, T, X, X], [T, T, T, T, X, X], [X, X, X, X, X, X]]),
        # file order: the table, later, covers the cup
        ({"overlap": "later"}, None,
         [[T, T, T, T, X, L], [T, T, T, T, X, X], [T, T, T, T, X, X], [X, X, X, X, X, X]]),
        ({"overlap": "earlier", "crowd": "class"}, None,
         [[T, T, T, T, P, L], [T, C, T, T, P, P], [T, T, T, T, P, P], [X, X, X, P, P, P]]),
        ({"crowd": "skip", "unannotated": "background"}, None,
         [[T, T, T, T, 4, L], [T, C, T, T, 4, 4], [T, T, T, T, 4, 4], [4, 4, 4, 4, 4, 4]]),
        # a class list without lamp: ignored by default, or skipped (then the crowd shows)
        ({}, ["table", "cup", "person"],
         [[T, T, T, T, X, X], [T, C, T, T, X, X], [T, T, T, T, X, X], [X, X, X, X, X, X]]),
        ({"unknown_categories": "skip", "crowd": "class"}, ["table", "cup", "person"],
         [[T, T, T, T, P, P], [T, C, T, T, P, P], [T, T, T, T, P, P], [X, X, X, P, P, P]]),
    ],
)  # fmt: skip
def test_rasterisation_rules_hand_worked(tmp_path, name, rules, classes, expected):
    images, path = rules_dataset(tmp_path)
    clipzss_d2.register_zeroshot_sem_seg(
        name, images, path, classes, rules=rules, cache_dir=str(tmp_path / "cache")
    )
    (record,) = DatasetCatalog.get(name)
    np.testing.assert_array_equal(read_label_map(record["sem_seg_file_name"]), expected)


def test_prompts_from_categories_and_unseen_by_name(tmp_path, name):
    images, path = rules_dataset(tmp_path)
    clipzss_d2.register_zeroshot_sem_seg(
        name, images, path, unseen=["cup"], prompts={"table": "table|desk"},
        rules={"unannotated": "background"}, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == ["table", "cup", "person", "lamp", "background"]
    assert meta.prompt_names == ["table|desk", "cup|mug|tea cup", "person", "lamp", "background"]
    assert meta.unseen_classes == ["cup"]
    assert clipzss_d2.data.get_training_vocabulary([name]) == [
        "table|desk", "person", "lamp", "background"
    ]  # fmt: skip
    with pytest.raises(CustomDatasetError, match=r"unseen class\(es\) \['mug'\] are not in"):
        clipzss_d2.register_zeroshot_sem_seg(
            name, images, path, unseen=["mug"], cache_dir=str(tmp_path / "cache")
        )


# ---- checks before training -----------------------------------------------------------------


def broken(tmp_path, change) -> tuple[str, str]:
    images, path = rules_dataset(tmp_path)
    data = json.loads(Path(path).read_text())
    change(data)
    return images, write_json(Path(path), data)


def _set(obj, key, value):
    obj[key] = value


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: _set(d["annotations"][1], "segmentation", square(0, 0, 40, 3)),
         r"rules\.json: annotation id 11: polygon spans x 0\.\.40, y 0\.\.3, outside its image "
         r"\(6x4, image id 1\)"),
        (lambda d: _set(d["annotations"][0], "segmentation", [[1, 2, 3]]),
         r"rules\.json: annotation id 10: a polygon must be a flat list"),
        (lambda d: _set(d["annotations"][0], "segmentation", {"size": [3, 6], "counts": "PP1"}),
         r"rules\.json: annotation id 10: RLE size \[3, 6\] \(height, width\) is not its image's "
         r"\[4, 6\]"),
        (lambda d: _set(d["annotations"][0], "segmentation", {"size": [4, 6], "counts": "PP1"}),
         r"annotation id 10: compressed RLE counts are not a COCO RLE string of height x width "
         r"= 24 pixels"),
        (lambda d: _set(d["annotations"][0], "segmentation", {"size": [4, 6], "counts": ""}),
         r"annotation id 10: compressed RLE counts are not"),
        (lambda d: _set(d["annotations"][0], "segmentation", [1, 1, 2, 1, 2, 2]),
         r"annotation id 10: `segmentation` must be a list of polygons"),
        (lambda d: _set(d["annotations"][0], "segmentation", {"size": [4, 6], "counts": [3, 2]}),
         r"annotation id 10: uncompressed RLE counts must be non-negative integers summing to "
         r"height x width = 24"),
        (lambda d: _set(d["annotations"][2], "category_id", 99),
         r"rules\.json: annotation id 12: category_id 99 is not in `categories`"),
        (lambda d: _set(d["annotations"][3], "image_id", 7),
         r"rules\.json: annotation id 13: image_id 7 is not in `images`"),
        (lambda d: _set(d["annotations"][3], "id", 10),
         r"rules\.json: annotation id 10 appears twice"),
        (lambda d: _set(d["annotations"][3], "segmentation", None),
         r"annotation id 13: `segmentation` must be polygons .* box-only annotation"),
        (lambda d: _set(d["images"][0], "width", 7),
         r"a\.png is 6x4 but .*rules\.json says 7x4 \(image id 1\)"),
        (lambda d: d.update(images=[{"id": 1, "file_name": "a.png", "height": 6, "width": 4}],
                            annotations=d["annotations"][:1]),
         r"a\.png is 6x4 but .*rules\.json says 4x6 \(image id 1\); annotated on the "
         r"EXIF-rotated view\?"),
        (lambda d: _set(d["images"][0], "file_name", "gone.png"),
         r"gone\.png: not found \(image id 1 of .*rules\.json\)"),
    ],
)  # fmt: skip
def test_bad_annotations_are_one_line_errors_naming_file_and_id(tmp_path, name, change, message):
    images, path = broken(tmp_path, change)
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(tmp_path / "c"))
    with pytest.raises(CustomDatasetError, match=message) as error:
        DatasetCatalog.get(name)
    assert isinstance(error.value, UserInputError)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.png"))


def test_several_problems_are_listed_one_per_line(tmp_path, name):
    def change(d):
        d["annotations"][0]["category_id"] = 99
        d["annotations"][1]["image_id"] = 5

    images, path = broken(tmp_path, change)
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(tmp_path / "c"))
    with pytest.raises(CustomDatasetError) as error:
        DatasetCatalog.get(name)
    lines = str(error.value).splitlines()
    assert "annotations cannot be used (2 problems)" in lines[0]
    assert "annotation id 10: category_id 99" in lines[1]
    assert "annotation id 11: image_id 5" in lines[2]


def test_bad_json_and_bad_categories_are_one_line_errors(tmp_path, name):
    images = gray_images(tmp_path / "images", {"a.png": (6, 4)})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CustomDatasetError, match=r"bad\.json cannot be parsed as JSON"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, str(tmp_path / "bad.json"))
    path = write_json(tmp_path / "dup.json", {"images": [], "annotations": [], "categories": [
        {"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}]})  # fmt: skip
    with pytest.raises(CustomDatasetError, match=r"category name\(s\) \['cat'\] appear twice"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, path)
    with pytest.raises(CustomDatasetError, match=r"lacks a `categories` list"):
        clipzss_d2.register_zeroshot_sem_seg(
            name, images, write_json(tmp_path / "x.json", {"images": [], "annotations": []})
        )


def test_images_without_annotations_are_reported(tmp_path, name, caplog):
    images, path = broken(
        tmp_path, lambda d: d["images"].append({"id": 2, "file_name": "b.png", "height": 4, "width": 6})
    )  # fmt: skip
    gray_images(Path(images), {"b.png": (6, 4)})
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING):
        records = DatasetCatalog.get(name)
    assert [r["image_id"] for r in records] == [1]  # all-ignore maps would teach nothing
    assert (
        "1 of 2 images in" in caplog.text and "have no annotation and are left out" in caplog.text
    )
    clipzss_d2.register_zeroshot_sem_seg(
        name, images, path, rules={"unannotated": "background"}, cache_dir=str(tmp_path / "c")
    )
    records = DatasetCatalog.get(name)
    assert [r["image_id"] for r in records] == [1, 2]
    assert (read_label_map(records[1]["sem_seg_file_name"]) == 4).all()


def test_png_only_options_are_refused_for_json(tmp_path, name):
    images, path = rules_dataset(tmp_path)
    with pytest.raises(CustomDatasetError, match="label_encoding, image_ext and label_ext"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, path, label_encoding="palette")
    with pytest.raises(CustomDatasetError, match=r"rules overlap: 'biggest' is unknown"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, path, rules={"overlap": "biggest"})
    with pytest.raises(CustomDatasetError, match=r"give `classes`"):
        clipzss_d2.register_zeroshot_sem_seg(name, images, str(tmp_path))


# ---- the cache ------------------------------------------------------------------------------


def test_cache_is_reused_keyed_and_leaves_user_files_alone(tmp_path, name):
    images, path = rules_dataset(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cache = tmp_path / "cache"
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(cache))
    (first,) = DatasetCatalog.get(name)
    label = Path(first["sem_seg_file_name"])
    assert label.parent.parent == cache and label.parent.name.startswith(name)
    assert MetadataCatalog.get(name).sem_seg_root == str(label.parent)
    stamp = label.stat().st_mtime_ns
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(cache))
    assert DatasetCatalog.get(name)[0]["sem_seg_file_name"] == str(label)
    assert label.stat().st_mtime_ns == stamp  # reused, not rasterised again
    forget = clipzss_d2.data.custom.forget_checked  # as in a new process: checked again, ...
    forget(name)
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(cache))
    assert DatasetCatalog.get(name)[0]["sem_seg_file_name"] == str(label)
    assert label.stat().st_mtime_ns == stamp  # ... and the cached map reused
    # another rule, or an edited file: another key, another folder; the old maps are not reused
    clipzss_d2.register_zeroshot_sem_seg(
        name, images, path, rules={"overlap": "later"}, cache_dir=str(cache)
    )
    other = DatasetCatalog.get(name)[0]["sem_seg_file_name"]
    assert Path(other).parent != label.parent
    data = json.loads(Path(path).read_text())
    data["annotations"].pop(0)
    Path(path).write_text(json.dumps(data))
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(cache))
    edited = DatasetCatalog.get(name)[0]["sem_seg_file_name"]
    assert len({Path(p).parent for p in (label, other, edited)}) == 3
    assert read_label_map(edited)[1, 1] == 0  # the cup is gone: table
    before[Path(path)] = Path(path).read_bytes()
    after = {
        p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and cache not in p.parents
    }
    assert after == before


def test_cache_folder_that_cannot_be_written_is_one_line(tmp_path, name):
    images, path = rules_dataset(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    clipzss_d2.register_zeroshot_sem_seg(name, images, path, cache_dir=str(blocker / "sub"))
    with pytest.raises(CustomDatasetError, match=r"cannot create the label cache folder .*CLIPZSS"):
        DatasetCatalog.get(name)


# ---- datasets registered in detectron2's catalog ---------------------------------------------


@needs_samples
def test_detectron2_registered_instances_and_panoptic(tmp_path, name):
    src = f"{name}_d2src"
    register_coco_instances(src, {}, str(PERSONS_139), str(COCO_STUFF / "val2017"))
    register_zeroshot_from_detectron2(name, src, cache_dir=str(tmp_path / "cache"))
    (record,) = DatasetCatalog.get(name)
    person = read_label_map(record["sem_seg_file_name"]) == 0
    assert int(person.sum()) == 3361
    assert MetadataCatalog.get(name).detectron2_source == src

    # panoptic: the round-trip files of image 139 under detectron2's register_coco_panoptic
    reference = np.asarray(Image.open(MAPS / "val2017" / "000000000139.png"))
    ids = np.where(reference == 255, 0, reference.astype(np.int64) + 1000)
    (tmp_path / "pan").mkdir()
    Image.fromarray(id2rgb(ids)).save(tmp_path / "pan" / "000000000139.png")
    names = coco_stuff_names()
    segments = [{"id": int(v) + 1000, "category_id": int(v) + 1, "iscrowd": 0}
                for v in np.unique(reference) if v != 255]  # fmt: skip
    pan_json = write_json(tmp_path / "pan.json", {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 426, "width": 640}],
        "annotations": [{"image_id": 139, "file_name": "000000000139.png",
                         "segments_info": segments}],
        "categories": [{"id": k, "name": v} for k, v in sorted(names.items())]})  # fmt: skip
    register_coco_panoptic(f"{src}_pan", {}, str(COCO_STUFF / "val2017"), str(tmp_path / "pan"),
                           pan_json, str(PERSONS_139))  # fmt: skip
    register_zeroshot_from_detectron2(
        f"{name}_pan", f"{src}_pan", ["person"], cache_dir=str(tmp_path / "cache")
    )
    (record,) = DatasetCatalog.get(f"{name}_pan")
    np.testing.assert_array_equal(read_label_map(record["sem_seg_file_name"]), reference)
    assert MetadataCatalog.get(f"{name}_pan").unseen_classes == ["person"]
    for k in (src, f"{src}_pan"):
        DatasetCatalog.remove(k)
        MetadataCatalog.remove(k)


@needs_samples
def test_one_config_line_turns_a_detectron2_dataset_zero_shot(tmp_path, monkeypatch):
    """DATASETS.CUSTOM takes the dataset file's mapping itself, so a dataset registered in
    detectron2's catalog becomes a zero-shot dataset with one config line."""
    register_coco_instances("cocoline_src", {}, str(PERSONS_139), str(COCO_STUFF / "val2017"))
    monkeypatch.setenv("CLIPZSS_CACHE_DIR", str(tmp_path / "cache"))
    cfg = get_clipzss_cfg()
    cfg.DATASETS.CUSTOM = [
        "{name: cocoline, rules: {unannotated: background}, unseen: [person],"
        " splits: {val: {detectron2: cocoline_src}}}"
    ]
    cfg.DATASETS.TEST = ("cocoline_val",)
    try:
        assert register_custom_datasets(cfg) == ["cocoline_val"]
        meta = MetadataCatalog.get("cocoline_val")
        assert meta.stuff_classes == ["person", "background"] and meta.unseen_classes == ["person"]
        (record,) = DatasetCatalog.get("cocoline_val")
        assert Path(record["sem_seg_file_name"]).parent.parent == tmp_path / "cache"
        assert int((read_label_map(record["sem_seg_file_name"]) == 0).sum()) == 3361
        cfg.DATASETS.CUSTOM = ["{name: cocoline, splits: {val: {detectron2: cocoline_src}}"]
        with pytest.raises(CustomDatasetError, match=r"DATASETS.CUSTOM entry \{name: cocoline.* "
                           r"cannot be parsed"):  # fmt: skip
            register_custom_datasets(cfg)
    finally:
        for k in [k for k in DatasetCatalog.list() if k.startswith("cocoline")]:
            DatasetCatalog.remove(k)
            MetadataCatalog.remove(k)


def test_unknown_or_non_coco_detectron2_dataset_is_one_line(name):
    with pytest.raises(CustomDatasetError, match=r"no_such_set is not registered"):
        register_zeroshot_from_detectron2(name, "no_such_set")
    with pytest.raises(CustomDatasetError, match=r"registered, but not as COCO instances"):
        register_zeroshot_from_detectron2(name, "voc20_zs_val")


# ---- dataset files and train_net.py end to end ---------------------------------------------


def coco_json_from_samples(split: str, stems: list[str]) -> tuple[list, list, list]:
    """A COCO instances JSON (compressed RLE, one annotation per class and image) made from the
    genuine COCO-Stuff maps of the samples, classes named by labels.txt; the photos are the
    genuine JPEGs, referred to where they are."""
    names = coco_stuff_names()
    images, anns, used = [], [], set()
    for i, stem in enumerate(stems):
        label = np.asarray(Image.open(MAPS / split / f"{stem}.png"))
        images.append({"id": i + 1, "file_name": f"{stem}.jpg",
                       "height": label.shape[0], "width": label.shape[1]})  # fmt: skip
        for value in np.unique(label):
            if value == 255:
                continue
            rle = mask_util.encode(np.asfortranarray((label == value).astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(value) + 1,
                         "iscrowd": 0, "segmentation": {"size": rle["size"],
                                                        "counts": rle["counts"].decode()}})  # fmt: skip
            used.add(int(value) + 1)
    cats = [{"id": k, "name": names[k]} for k in sorted(used)]
    return cats, images, anns


@needs_samples
def test_dataset_file_with_coco_json_and_detectron2_splits(tmp_path):
    cats, images, anns = coco_json_from_samples("val2017", ["000000000139"])
    write_json(tmp_path / "val.json", {"images": images, "annotations": anns, "categories": cats})
    register_coco_instances("cocojson_file_src", {}, str(tmp_path / "val.json"),
                            str(COCO_STUFF / "val2017"))  # fmt: skip
    spec = tmp_path / "pets.yaml"
    spec.write_text(
        "name: cocofile\n"
        "unseen: [person]\n"
        "rules: {overlap: later}\n"
        "cache_dir: cache\n"
        "splits:\n"
        f"  val: {{images: {COCO_STUFF / 'val2017'}, annotations: val.json}}\n"
        "  d2: {detectron2: cocojson_file_src}\n"
    )
    try:
        names = register_dataset_file(str(spec))
        assert names == ["cocofile_val", "cocofile_d2"]
        a, b = (DatasetCatalog.get(n)[0]["sem_seg_file_name"] for n in names)
        assert Path(a).parent.parent == tmp_path / "cache"
        reference = np.asarray(Image.open(MAPS / "val2017" / "000000000139.png"))
        classes = MetadataCatalog.get("cocofile_val").stuff_classes
        ours = read_label_map(a)
        ids = {c["name"]: c["id"] - 1 for c in cats}
        lut = np.full(256, 255)
        lut[: len(classes)] = [ids[c] for c in classes]
        np.testing.assert_array_equal(lut[ours], reference)  # the genuine map, back
        np.testing.assert_array_equal(read_label_map(b), ours)
        assert MetadataCatalog.get("cocofile_d2").raster_rules["overlap"] == "later"
    finally:
        for k in [k for k in DatasetCatalog.list() if k.startswith(("cocofile", "cocojson_file"))]:
            DatasetCatalog.remove(k)
            MetadataCatalog.remove(k)


def test_dataset_file_json_splits_must_agree_on_classes(tmp_path):
    images, path = rules_dataset(tmp_path)
    data = json.loads(Path(path).read_text())
    data["categories"].append({"id": 9, "name": "sofa"})
    write_json(tmp_path / "more.json", data)
    spec = tmp_path / "d.yaml"
    spec.write_text("name: cocoagree\nsplits:\n  train: {images: images, annotations: rules.json}\n"
                    "  val: {images: images, annotations: more.json}\n")  # fmt: skip
    try:
        with pytest.raises(
            CustomDatasetError, match=r"give different class lists .* give `classes`"
        ):
            register_dataset_file(str(spec))
        spec.write_text("name: cocoagree\nclasses: [table]\nlabel_encoding: palette\n"
                        "splits: {train: {images: images, annotations: rules.json}}\n")  # fmt: skip
        with pytest.raises(CustomDatasetError, match=r"`label_encoding` is for label PNG folders"):
            register_dataset_file(str(spec))
        spec.write_text("name: cocoagree\nsplits: {train: {images: images, labels: rules.json, "
                        "annotations: x}}\n")  # fmt: skip
        with pytest.raises(CustomDatasetError, match=r"split 'train' must give `images` and"):
            register_dataset_file(str(spec))
    finally:
        for k in [k for k in DatasetCatalog.list() if k.startswith("cocoagree")]:
            DatasetCatalog.remove(k)
            MetadataCatalog.remove(k)


@needs_samples
@pytest.mark.slow
def test_train_net_trains_and_evaluates_a_coco_json_dataset_file(tmp_path):
    """The user's route: a dataset file naming COCO JSONs (made from the genuine COCO-Stuff
    samples) in DATASETS.CUSTOM, train_net.py trains and the GZS evaluator reports on val."""
    train = ["000000017914", "000000203744", "000000580986"]
    val = ["000000000785", "000000001818"]
    vocabulary = None
    for split, stems in (("train2017", train), ("val2017", val)):
        cats, images, anns = coco_json_from_samples(split, stems)
        vocabulary = cats if vocabulary is None else vocabulary + cats
    cats = sorted({c["id"]: c for c in vocabulary}.values(), key=lambda c: c["id"])
    for split, stems in (("train2017", train), ("val2017", val)):
        _, images, anns = coco_json_from_samples(split, stems)
        data = {"images": images, "annotations": anns, "categories": cats}
        write_json(tmp_path / f"{split}.json", data)
    spec = tmp_path / "samples.yaml"
    spec.write_text(
        "name: samples\nunseen: [person]\ncache_dir: cache\nsplits:\n"
        f"  train: {{images: {COCO_STUFF / 'train2017'}, annotations: train2017.json}}\n"
        f"  val: {{images: {COCO_STUFF / 'val2017'}, annotations: val2017.json}}\n"
    )
    proc, log = run(
        ["train_net.py", "--config-file", "configs/Base-CLIPZSS.yaml",
         "DATASETS.CUSTOM", f"['{spec}']",
         "DATASETS.TRAIN", "('samples_train',)", "DATASETS.TEST", "('samples_val',)"],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, log[-5000:]
    n = len(cats)
    assert f"Generalized zero-shot evaluation of samples_val ({n - 1} seen, 1 unseen" in log
    for key in ("mIoU(seen)", "mIoU(unseen)", "hIoU"):
        assert key in log, key
    assert len(list((tmp_path / "cache").rglob("*.png"))) == len(train) + len(val)
    shutil.rmtree(tmp_path / "cache")
    assert os.listdir(COCO_STUFF / "val2017")  # the samples are untouched (read-only anyway)
