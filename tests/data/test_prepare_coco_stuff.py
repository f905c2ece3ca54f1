"""COCO-Stuff 164k prepare script on the real samples: 171 contiguous ids, refusals, re-runs."""

import shutil

import numpy as np
import pytest
from PIL import Image

from clipzss_d2.data.prepare import PrepareError, prepare_coco_stuff
from tests.data_samples import read_png, stage_coco, temp_files
from tests.published_classes import COCO171, COCO_UNUSED

QUIET = {"workers": 1, "log": lambda *a: None}
VAL_IDS = [
    "000000000139", "000000000785", "000000001268", "000000001490", "000000001503",
    "000000001584", "000000001818", "000000001993",
]  # fmt: skip


def labels_txt(shared_data) -> dict[int, str]:
    """COCO-Stuff's own labels.txt: '1: person' ... '182: wood' (value in the maps = id - 1)."""
    names = {}
    for line in (shared_data / "coco_stuff" / "labels.txt").read_text().splitlines():
        k, v = line.split(":", 1)
        names[int(k)] = v.strip()
    return names


def expected_coco(original: np.ndarray, names: dict[int, str]) -> np.ndarray:
    out = np.full(original.shape, 255, dtype=np.uint8)
    for value in np.unique(original):
        if value == 255:
            continue
        name = names[int(value) + 1]
        assert name not in COCO_UNUSED, f"value {value} ({name}) is never annotated in COCO"
        out[original == value] = COCO171.index(name)
    return out


def test_published_lists_agree_with_labels_txt(shared_data):
    names = labels_txt(shared_data)
    assert names[0] == "unlabeled" and len(names) == 183
    assert [n for k, n in sorted(names.items()) if k and n not in COCO_UNUSED] == COCO171
    assert len(COCO171) == 171


def test_maps_match_the_published_ids(shared_data, tmp_path):
    stage_coco(shared_data, tmp_path)
    summaries = prepare_coco_stuff(str(tmp_path), **QUIET)
    assert [(s.written, s.skipped, len(s.rejected)) for s in summaries] == [(13, 0, 0), (8, 0, 0)]
    names = labels_txt(shared_data)
    src = shared_data / "coco_stuff" / "stuffthingmaps_trainval2017"
    out = tmp_path / "coco" / "stuffthingmaps_detectron2"
    assert sorted(p.stem for p in (out / "val2017").iterdir()) == VAL_IDS
    seen_values = set()
    for split in ("train2017", "val2017"):
        for path in sorted((src / split).iterdir()):
            original = read_png(path)
            seen_values |= set(np.unique(original).tolist())
            with Image.open(out / split / path.name) as img:
                assert img.mode == "L"
            np.testing.assert_array_equal(
                read_png(out / split / path.name), expected_coco(original, names)
            )
    # SOURCES.md: the 21 maps hold values 0..180 (some) and 255; 000000000139 holds person (0),
    # chair (61), potted plant (63), dining table (66), tv (71), ... .
    assert 255 in seen_values and max(seen_values - {255}) <= 180
    val139 = set(np.unique(read_png(out / "val2017" / "000000000139.png")).tolist())
    assert {
        COCO171.index(c) for c in ("person", "chair", "potted plant", "dining table", "tv")
    } <= val139
    assert not temp_files(tmp_path)


def test_rerun_skips_and_other_folder_name_is_found(shared_data, tmp_path):
    stage_coco(shared_data, tmp_path, maps_name="stuffthingmaps_trainval2017")
    prepare_coco_stuff(str(tmp_path), **QUIET)
    out = tmp_path / "coco" / "stuffthingmaps_detectron2"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert len(before) == 21
    summaries = prepare_coco_stuff(str(tmp_path), **QUIET)
    assert [(s.written, s.skipped) for s in summaries] == [(0, 13), (0, 8)]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before


def _set_value(value):
    def damage(path):
        label = read_png(path)
        label[:3, :3] = value
        Image.fromarray(label).save(path)

    return damage


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _crop(path):
    with Image.open(path) as img:
        img.crop((0, 0, img.width - 1, img.height)).save(path)


def _palette_rgb(path):
    with Image.open(path) as img:
        img.convert("RGB").save(path)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_set_value(11), "holds values 11 outside"),  # street sign: never annotated
        (_set_value(182), "1-based map"),
        (_truncate, "truncated or corrupt"),
        (_crop, "size mismatch"),
        (_palette_rgb, "mode RGB"),
    ],
)
def test_bad_map_is_rejected(shared_data, tmp_path, damage, reason):
    coco = stage_coco(shared_data, tmp_path)
    damage(coco / "stuffthingmaps" / "val2017" / "000000000139.png")
    val = prepare_coco_stuff(str(tmp_path), **QUIET)[1]
    assert val.written == 7 and [k for k, _ in val.rejected] == ["000000000139"]
    assert reason in val.rejected[0][1], val.rejected[0][1]
    assert not (coco / "stuffthingmaps_detectron2" / "val2017" / "000000000139.png").exists()
    assert not temp_files(tmp_path)


def test_missing_inputs_are_named(shared_data, tmp_path):
    with pytest.raises(PrepareError, match="neither .*coco/stuffthingmaps nor"):
        prepare_coco_stuff(str(tmp_path), **QUIET)
    coco = stage_coco(shared_data, tmp_path)
    (coco / "val2017" / "000000001490.jpg").unlink()
    with pytest.raises(PrepareError, match=r"1 input file\(s\) .*\n.*val2017/000000001490.jpg"):
        prepare_coco_stuff(str(tmp_path), **QUIET)
    assert not (coco / "stuffthingmaps_detectron2" / "train2017").exists()  # nothing started
    shutil.rmtree(coco / "train2017")
    with pytest.raises(PrepareError, match="COCO train2017 image folder not found"):
        prepare_coco_stuff(str(tmp_path), **QUIET)


def test_worker_pool_gives_the_same_maps(shared_data, tmp_path):
    stage_coco(shared_data, tmp_path / "a")
    stage_coco(shared_data, tmp_path / "b")
    prepare_coco_stuff(str(tmp_path / "a"), **QUIET)
    summaries = prepare_coco_stuff(str(tmp_path / "b"), workers=2, log=lambda *a: None)
    assert [s.written for s in summaries] == [13, 8]
    for path in (tmp_path / "a").rglob("stuffthingmaps_detectron2/*/*.png"):
        other = tmp_path / "b" / path.relative_to(tmp_path / "a")
        assert path.read_bytes() == other.read_bytes()


@pytest.mark.parametrize("entry", ["file", "folder"])
def test_users_tmp_entries_in_the_output_folder_survive(shared_data, tmp_path, entry):
    """prepare_coco_stuff clears only its own killed-run temporary files: a user's ".tmp-notes"
    or ".tmp-dir/" (and a COCO-named file) in the output folder stays byte for byte."""
    stage_coco(shared_data, tmp_path)
    out = tmp_path / "coco" / "stuffthingmaps_detectron2" / "val2017"
    out.mkdir(parents=True)
    planted = {".tmp-notes": b"notes"} if entry == "file" else {".tmp-dir/keep.txt": b"keep"}
    planted["000000581929.jpg"] = b"a COCO image"
    for rel, data in planted.items():
        (out / rel).parent.mkdir(exist_ok=True)
        (out / rel).write_bytes(data)
    ours = out / ".tmp-000000000139.png-x1y2z3w4.png"
    ours.write_bytes(b"partial")
    summaries = prepare_coco_stuff(str(tmp_path), **QUIET)
    assert [(s.written, len(s.rejected)) for s in summaries] == [(13, 0), (8, 0)]
    assert {rel: (out / rel).read_bytes() for rel in planted} == planted
    assert not ours.exists()
