"""PASCAL Context-459 prepare on the real samples: 459-label ids k -> k-1, 0 -> 65535, 16-bit."""

import numpy as np
import pytest
from PIL import Image

from clipzss_d2.data.classes import PCONTEXT59_CLASSES, PCONTEXT459_CLASSES
from clipzss_d2.data.prepare import PrepareError, prepare_pascal_context459
from tests.data_samples import CONTEXT_VAL, stage_context, temp_files

QUIET = {"workers": 1, "log": lambda *a: None}


def test_class_list_is_labels_txt(shared_data):
    lines = (shared_data / "pascal_context/VOC2010/labels_459_from_fcn_classes-400.txt").read_text()
    names = [line.split(":", 1)[1].strip() for line in lines.splitlines() if line.strip()]
    assert list(PCONTEXT459_CLASSES) == names and len(names) == 459
    assert set(PCONTEXT59_CLASSES) <= set(PCONTEXT459_CLASSES)


def test_val_maps_keep_all_459_classes(shared_data, tmp_path):
    maps = stage_context(shared_data, tmp_path)  # 459-id LabelMaps written as trainval/*.mat
    [val] = prepare_pascal_context459(str(tmp_path), **QUIET)
    assert (val.written, val.rejected) == (2, [])
    out = tmp_path / "VOCdevkit/VOC2010/annotations_detectron2/pc459_val"
    assert sorted(p.stem for p in out.iterdir()) == CONTEXT_VAL
    present = set()
    for stem in CONTEXT_VAL:
        with Image.open(out / f"{stem}.png") as img:
            assert img.mode == "I;16"
            got = np.asarray(img)
        src = maps[stem].astype(np.int64)
        assert got.shape == src.shape
        assert np.all(got[src == 0] == 65535)
        np.testing.assert_array_equal(got[src > 0], src[src > 0] - 1)
        present |= set(np.unique(got).tolist())
    # classes outside the 59 survive (the staged maps fill uncovered pixels with 459-ids 1
    # accordion, 100, 300 and 459 wool, and 0 = unlabelled)
    pc59 = {PCONTEXT459_CLASSES.index(c) for c in PCONTEXT59_CLASSES}
    assert present - pc59 - {65535} and 65535 in present
    assert PCONTEXT459_CLASSES[0] == "accordion" and PCONTEXT459_CLASSES[458] == "wool"
    # 2008_000009's fixture masks are 59-class ids: e.g. 'person' (459-id 284) -> 283
    assert PCONTEXT459_CLASSES[283] == "person"
    assert not temp_files(tmp_path)


def test_png_source_cannot_give_459_classes(shared_data, tmp_path):
    stage_context(shared_data, tmp_path)
    with pytest.raises(PrepareError, match="only the 59 classes"):
        prepare_pascal_context459(str(tmp_path), source="png", **QUIET)


def test_missing_sources_are_named(shared_data, tmp_path):
    with pytest.raises(PrepareError, match=r"No 459-class PASCAL Context labels found"):
        prepare_pascal_context459(str(tmp_path), **QUIET)


def test_wrong_labels_txt_is_refused(shared_data, tmp_path):
    stage_context(shared_data, tmp_path)
    labels = tmp_path / "VOCdevkit/VOC2010/labels.txt"
    labels.write_text(labels.read_text().replace("1: accordion", "1: accordeon"))
    with pytest.raises(PrepareError, match="accordeon"):
        prepare_pascal_context459(str(tmp_path), **QUIET)
