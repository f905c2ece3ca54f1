"""ADE20K-150 prepare script on the real ADEChallengeData2016 samples: 0 -> 255, k -> k-1."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipzss_d2.data.classes import ADE150_CLASSES, ADE150_FULL_NAMES
from clipzss_d2.data.prepare import PrepareError, prepare_ade20k
from tests.data_samples import ADE_TRAIN, ADE_VAL, read_png, stage_ade20k, temp_files
from tests.helpers import ROOT

QUIET = {"workers": 1, "log": lambda *a: None}


def test_class_list_is_objectinfo150(shared_data):
    # objectInfo150.csv writes "door, double door" as "door;double;door" (Name column).
    lines = (shared_data / "ade20k/ADEChallengeData2016/objectInfo150.csv").read_text().splitlines()
    assert lines[0].split(",") == ["Idx", "Ratio", "Train", "Val", "Stuff", "Name"]
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(1, 151))
    assert [n.replace(", ", ";").replace(" ", ";") for n in ADE150_FULL_NAMES] == [
        r[5] for r in rows
    ]
    assert ADE150_CLASSES[:5] == ("wall", "building", "sky", "floor", "tree")
    assert ADE150_CLASSES[96] == "escalator" and ADE150_CLASSES[149] == "flag"


def test_maps_are_shifted_with_other_ignored(shared_data, tmp_path):
    ade = stage_ade20k(shared_data, tmp_path)
    summaries = prepare_ade20k(str(tmp_path), **QUIET)
    assert [(s.title, s.written, len(s.rejected)) for s in summaries] == [
        ("ADE20K-150 validation", 3, 0),
        ("ADE20K-150 training", 1, 0),
    ]
    out = ade / "annotations_detectron2"
    for split, ids in (("validation", ADE_VAL), ("training", ADE_TRAIN)):
        assert sorted(p.stem for p in (out / split).iterdir()) == ids
        for i in ids:
            original = read_png(ade / "annotations" / split / f"{i}.png")
            with Image.open(out / split / f"{i}.png") as img:
                assert img.mode == "L"
            converted = read_png(out / split / f"{i}.png")
            assert converted.shape == original.shape
            assert np.all(converted[original == 0] == 255)
            labelled = original > 0
            np.testing.assert_array_equal(converted[labelled], original[labelled] - 1)
    # SOURCES.md: ADE_val_00000003 labels its footbridge escalator (97 -> 96).
    val3 = set(np.unique(read_png(out / "validation" / "ADE_val_00000003.png")).tolist())
    assert ADE150_CLASSES.index("escalator") in val3
    assert not temp_files(tmp_path)
    # a second run skips finished files
    assert [s.skipped for s in prepare_ade20k(str(tmp_path), **QUIET)] == [3, 1]


def test_bad_annotations_are_rejected(shared_data, tmp_path):
    ade = stage_ade20k(shared_data, tmp_path)
    ann = ade / "annotations" / "validation"
    label = read_png(ann / "ADE_val_00000001.png")
    label[:2, :2] = 151  # no such class
    Image.fromarray(label).save(ann / "ADE_val_00000001.png")
    # a genuine annotation of another image: wrong size for this JPEG
    Image.open(shared_data / "ade20k/unpaired_annotations/ADE_train_00000033.png").save(
        ann / "ADE_val_00000002.png"
    )
    Image.fromarray(read_png(ann / "ADE_val_00000003.png")).convert("RGB").save(
        ann / "ADE_val_00000003.png"
    )
    val = prepare_ade20k(str(tmp_path), **QUIET)[0]
    reasons = dict(val.rejected)
    assert val.written == 0 and sorted(reasons) == ADE_VAL
    assert "values 151 outside the expected ADE20K values" in reasons["ADE_val_00000001"]
    assert "size mismatch" in reasons["ADE_val_00000002"]
    assert "mode RGB" in reasons["ADE_val_00000003"]


def test_missing_inputs_are_named(shared_data, tmp_path):
    with pytest.raises(PrepareError, match="ADEChallengeData2016 folder not found"):
        prepare_ade20k(str(tmp_path), **QUIET)
    ade = stage_ade20k(shared_data, tmp_path)
    (ade / "images" / "validation" / "ADE_val_00000002.jpg").unlink()
    with pytest.raises(PrepareError, match=r"1 input file\(s\).*\n.*ADE_val_00000002.jpg"):
        prepare_ade20k(str(tmp_path), **QUIET)


def run_cli(root, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "datasets/prepare_ade20k.py"), "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )


def test_cli_log_is_readable_and_bad_input_exits_2(shared_data, tmp_path):
    proc = run_cli(tmp_path / "nothing")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ADEChallengeData2016 folder")
    assert "Traceback" not in proc.stderr
    stage_ade20k(shared_data, tmp_path)
    proc = run_cli(tmp_path, "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    # stderr is a pipe here, as in a CI log: plain progress lines, no carriage returns
    assert "\r" not in proc.stderr and "ADE20K-150 validation: 3/3 (100%)" in proc.stderr
    assert "ADE20K-150 validation: 3 written, 0 skipped" in proc.stdout
