"""PASCAL Context prepare script: .mat (459 ids), mmseg PNG and Detail JSON sources agree.

The samples have no .mat files; tests/data_samples.py builds them from the Detail API fixture's
masks (59 classes) over bands of other 459-label ids.
"""

import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from clipzss_d2.data.prepare import PrepareError, prepare_pascal_context
from tests.data_samples import (
    CONTEXT_FILLER_IDS,
    CONTEXT_TRAIN,
    CONTEXT_VAL,
    read_png,
    stage_context,
    temp_files,
)
from tests.helpers import ROOT
from tests.published_classes import PC59, PC59_BY_459_ID

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
QUIET = {"workers": 1, "log": lambda *a: None}


def expected_pc59(label_459: np.ndarray) -> np.ndarray:
    """Published mapping, value by value: a 459-id of the 59 classes -> rank of its name."""
    out = np.full(label_459.shape, 255, dtype=np.uint8)
    for value in np.unique(label_459):
        if int(value) in PC59_BY_459_ID:
            out[label_459 == value] = PC59.index(PC59_BY_459_ID[int(value)])
    return out


def outputs(root) -> dict[str, np.ndarray]:
    out = root / "VOCdevkit" / "VOC2010" / "annotations_detectron2"
    return {p.stem: read_png(p) for p in sorted(out.rglob("*.png"))}


def test_published_mapping_agrees_with_labels_txt(shared_data):
    lines = shared_data / "pascal_context" / "VOC2010" / "labels_459_from_fcn_classes-400.txt"
    names = dict(line.split(": ", 1) for line in lines.read_text().splitlines())
    assert len(names) == 459
    assert {int(k): names[k] for k in map(str, PC59_BY_459_ID)} == PC59_BY_459_ID
    assert sorted(PC59_BY_459_ID) == [k for k, _ in sorted(PC59_BY_459_ID.items())]
    assert [PC59_BY_459_ID[k] for k in sorted(PC59_BY_459_ID)] == PC59 == sorted(PC59)


def test_mat_labels_match_the_published_ids(shared_data, tmp_path):
    maps = stage_context(shared_data, tmp_path)
    summaries = prepare_pascal_context(str(tmp_path), **QUIET)
    assert [(s.written, len(s.rejected)) for s in summaries] == [(2, 0), (2, 0)]
    out = tmp_path / "VOCdevkit" / "VOC2010" / "annotations_detectron2"
    assert sorted(p.stem for p in (out / "pc59_train").iterdir()) == CONTEXT_TRAIN
    assert sorted(p.stem for p in (out / "pc59_val").iterdir()) == CONTEXT_VAL
    for stem, label in maps.items():
        split = "pc59_train" if stem in CONTEXT_TRAIN else "pc59_val"
        got = read_png(out / split / f"{stem}.png")
        # The fixture's non-59 filler ids really occur and become ignore.
        assert set(CONTEXT_FILLER_IDS) & set(np.unique(label).tolist())
        np.testing.assert_array_equal(got, expected_pc59(label))
    # SOURCES.md: 2008_000019 is labelled only as dog among the 59 classes (25 % of the image).
    dog = read_png(out / "pc59_train" / "2008_000019.png")
    assert set(np.unique(dog).tolist()) == {PC59.index("dog"), 255}
    assert 0.2 < np.mean(dog == PC59.index("dog")) < 0.3
    assert not temp_files(tmp_path)

    summaries = prepare_pascal_context(str(tmp_path), **QUIET)
    assert [(s.written, s.skipped) for s in summaries] == [(0, 2), (0, 2)]


def test_png_and_detail_sources_give_the_same_maps(shared_data, tmp_path):
    maps = stage_context(shared_data, tmp_path / "mat")
    prepare_pascal_context(str(tmp_path / "mat"), **QUIET)
    reference = outputs(tmp_path / "mat")
    assert len(reference) == 4

    # mmseg SegmentationClassContext: 0 = background, k + 1 = class k.
    png_root = tmp_path / "png"
    stage_context(shared_data, png_root, source="none")
    png_dir = png_root / "VOCdevkit" / "VOC2010" / "SegmentationClassContext"
    png_dir.mkdir()
    for stem, label in maps.items():
        context60 = expected_pc59(label).astype(np.int16) + 1
        context60[context60 == 256] = 0
        Image.fromarray(context60.astype(np.uint8)).save(png_dir / f"{stem}.png")
    prepare_pascal_context(str(png_root), **QUIET)
    assert {k: v.tolist() for k, v in outputs(png_root).items()} == {
        k: v.tolist() for k, v in reference.items()
    }

    # The Detail API fixture itself (results-style list), and the trainval_merged.json layout.
    fixture = shared_data / "pascal_context" / "detail_api_res" / "inst_seg_correct.json"
    for layout in ("list", "merged"):
        root = tmp_path / layout
        stage_context(shared_data, root, source="none")
        detail = fixture
        if layout == "merged":
            anns = [a for a in json.loads(fixture.read_text()) if a["image_id"] < 2008000030]
            detail = root / "trainval_merged.json"
            detail.write_text(json.dumps({"images": [], "annos_segmentation": anns}))
        summaries = prepare_pascal_context(str(root), detail_json=str(detail), **QUIET)
        assert [s.written for s in summaries] == [2, 2]
        got = outputs(root)
        for stem in reference:
            np.testing.assert_array_equal(got[stem], reference[stem])


def _mat(key="LabelMap", value=None, shape=None):
    def damage(path, label):
        label = label.copy() if shape is None else np.zeros(shape, np.uint16)
        if value is not None:
            label[:2, :2] = value
        savemat(path, {key: label})

    return damage


def _truncate(path, label):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_mat(value=460), "holds values 460 outside the expected 459-label ids"),
        (_mat(key="labels"), "has no LabelMap variable"),
        (_mat(shape=(10, 12)), "size mismatch"),
        (_truncate, "cannot be read as a MATLAB file"),
    ],
)
def test_bad_mat_is_rejected(shared_data, tmp_path, damage, reason):
    maps = stage_context(shared_data, tmp_path)
    bad = "2008_000009"
    damage(tmp_path / "VOCdevkit" / "VOC2010" / "trainval" / f"{bad}.mat", maps[bad])
    summaries = prepare_pascal_context(str(tmp_path), **QUIET)
    assert summaries[0].ok and summaries[1].written == 1
    assert [k for k, _ in summaries[1].rejected] == [bad]
    assert reason in summaries[1].rejected[0][1], summaries[1].rejected[0][1]
    assert not temp_files(tmp_path)


def test_missing_inputs_are_named(shared_data, tmp_path):
    stage_context(shared_data, tmp_path, source="none")
    with pytest.raises(PrepareError, match="No PASCAL Context labels found; looked for .*trainval"):
        prepare_pascal_context(str(tmp_path), **QUIET)

    voc = tmp_path / "VOCdevkit" / "VOC2010"
    (voc / "trainval").mkdir()
    with pytest.raises(
        PrepareError, match=r"2 input file\(s\) for the ids in .*train.txt .*\n.*2008_000008.mat"
    ):
        prepare_pascal_context(str(tmp_path), **QUIET)

    (voc / "labels.txt").write_text("1: accordion\n2: airplane\n")
    with pytest.raises(PrepareError, match="2: 'airplane' \\(expected 'aeroplane'\\)"):
        prepare_pascal_context(str(tmp_path), **QUIET)

    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000008\n")
    with pytest.raises(PrepareError, match="in both the train and the val list"):
        prepare_pascal_context(str(tmp_path), **QUIET)
    assert not (voc / "annotations_detectron2").exists()


# -- a Detail JSON that does not fit its images ---------------------------------------------------
def _detail_json(shared_data, root, edit):
    """The Detail API fixture with `edit(annotation)` applied to the first mask of 2008_000009."""
    fixture = shared_data / "pascal_context" / "detail_api_res" / "inst_seg_correct.json"
    anns = [a for a in json.loads(fixture.read_text()) if a["image_id"] < 2008000030]
    first = next(a for a in anns if a["image_id"] == 2008000009)
    edit(first)
    path = root / "trainval_merged.json"
    path.write_text(json.dumps(anns))
    return str(path)


def test_detail_masks_of_another_size_are_refused_before_decoding(shared_data, tmp_path):
    """The masks' declared size is checked against the image before any RLE is decoded (a
    few bytes of RLE may declare gigabytes)."""
    from pycocotools import mask as mask_util

    stage_context(shared_data, tmp_path, source="none")
    huge = mask_util.encode(np.asfortranarray(np.zeros((5000, 4000), np.uint8)))
    huge["counts"] = huge["counts"].decode()

    path = _detail_json(shared_data, tmp_path, lambda first: None)
    anns = json.loads(open(path).read())
    for a in anns:  # every mask of the image declares 4000 x 5000 (its image: 500 x 375)
        if a["image_id"] == 2008000009:
            a["segmentation"] = huge
    open(path, "w").write(json.dumps(anns))
    summaries = prepare_pascal_context(str(tmp_path), detail_json=path, **QUIET)
    assert [k for k, _ in summaries[1].rejected] == ["2008_000009"]
    assert "declare 4000x5000 but image" in summaries[1].rejected[0][1]


def test_detail_category_ids_beyond_459_are_refused_in_one_line(shared_data, tmp_path):
    import subprocess
    import sys

    stage_context(shared_data, tmp_path, source="none")
    path = _detail_json(shared_data, tmp_path, lambda a: a.update(category_id=70000))
    with pytest.raises(PrepareError, match=r"has category_id 70000; PASCAL Context ids are 0..459"):
        prepare_pascal_context(str(tmp_path), detail_json=path, **QUIET)
    root = ROOT
    proc = subprocess.run(
        [sys.executable, "datasets/prepare_pascal_context.py", "--root", str(tmp_path),
         "--detail-json", path],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "category_id 70000" in proc.stderr
    assert not (tmp_path / "VOCdevkit" / "VOC2010" / "annotations_detectron2").exists()


def test_an_id_list_that_is_not_text_is_one_line(shared_data, tmp_path):
    import subprocess
    import sys

    stage_context(shared_data, tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xff\xfe\x00\x012008_000008\n")
    with pytest.raises(PrepareError, match=r"ids.txt is not UTF-8 text \(byte 0\)"):
        prepare_pascal_context(str(tmp_path), train_list=str(ids), **QUIET)
    proc = subprocess.run(
        [sys.executable, "datasets/prepare_pascal_context.py", "--root", str(tmp_path),
         "--train-list", str(ids)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not UTF-8" in proc.stderr
