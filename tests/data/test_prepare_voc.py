"""VOC 2012 prepare script on the real samples: ids pixel for pixel, refusals, re-runs."""

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipzss_d2.data.prepare import PrepareError, prepare_voc
from tests.data_samples import VOC_SBD_ONLY, VOC_TRAIN, read_png, stage_voc, temp_files
from tests.helpers import ROOT
from tests.published_classes import VOC20

SCRIPT = ROOT / "datasets" / "prepare_voc.py"
VOC_VAL = [
    "2007_000129", "2007_001311", "2007_001457", "2007_001763", "2007_002094", "2007_005107",
    "2007_005844", "2007_006449", "2007_008815", "2007_009346", "2008_000009", "2008_008469",
    "2009_003576", "2009_003703", "2010_001036", "2010_005626", "2010_005788",
]  # fmt: skip
QUIET = {"workers": 1, "log": lambda *a: None}


def expected_voc(original: np.ndarray) -> np.ndarray:
    """Published mapping, value by value: VOC value k names VOC20[k-1]; 0 and 255 are ignored."""
    out = np.full(original.shape, 255, dtype=np.uint8)
    for value in np.unique(original):
        if 1 <= value <= 20:
            out[original == value] = VOC20.index(VOC20[value - 1])
        else:
            assert value in (0, 255), f"unexpected VOC value {value}"
    return out


@pytest.fixture
def voc(shared_data, tmp_path):
    lists = stage_voc(shared_data, tmp_path)
    return tmp_path, lists


def test_train_aug_and_val_match_the_published_ids(voc, shared_data):
    root, lists = voc
    summaries = prepare_voc(
        str(root), aug_list=lists["aug_list"], val_list=lists["val_list"], **QUIET
    )
    assert [(s.written, s.skipped, len(s.rejected)) for s in summaries] == [(9, 0, 0), (17, 0, 0)]
    src = shared_data / "voc" / "VOC2012"
    out = root / "VOC2012" / "annotations_detectron2"
    assert sorted(p.stem for p in (out / "train").iterdir()) == sorted(VOC_TRAIN + VOC_SBD_ONLY)
    assert sorted(p.stem for p in (out / "val").iterdir()) == VOC_VAL
    for split, ids, folder in (
        ("train", VOC_TRAIN + VOC_SBD_ONLY, "SegmentationClassAug"),
        ("val", VOC_VAL, "SegmentationClass"),
    ):
        for i in ids:
            with Image.open(out / split / f"{i}.png") as img:
                assert img.mode == "L"
            original = read_png(src / folder / f"{i}.png")
            np.testing.assert_array_equal(
                read_png(out / split / f"{i}.png"), expected_voc(original)
            )
    # Figures from SOURCES.md: SBD-only 2008_004015 holds {0, 12 dog}, 2008_000008 {0, 13 horse, 15 person}.
    assert set(np.unique(read_png(out / "train" / "2008_004015.png"))) == {255, VOC20.index("dog")}
    assert set(np.unique(read_png(out / "train" / "2008_000008.png"))) == {
        255, VOC20.index("horse"), VOC20.index("person")
    }  # fmt: skip
    assert not temp_files(root)


def test_without_sbd_train_is_the_voc_train_list(shared_data, tmp_path):
    lists = stage_voc(shared_data, tmp_path, with_aug=False)
    summaries = prepare_voc(
        str(tmp_path), train_list=lists["train_list"], val_list=lists["val_list"], **QUIET
    )
    assert [s.written for s in summaries] == [4, 17]
    out = tmp_path / "VOC2012" / "annotations_detectron2" / "train"
    assert sorted(p.stem for p in out.iterdir()) == VOC_TRAIN
    for i in VOC_TRAIN:
        original = read_png(shared_data / "voc" / "VOC2012" / "SegmentationClass" / f"{i}.png")
        np.testing.assert_array_equal(read_png(out / f"{i}.png"), expected_voc(original))


def test_grayscale_segmentation_class_aug_is_accepted(voc, shared_data):
    root, lists = voc
    gray = (
        shared_data
        / "voc"
        / "VOC2012"
        / "SegmentationClassAug_grayscale_reference"
        / "2007_000032.png"
    )
    shutil.copy(gray, root / "VOC2012" / "SegmentationClassAug" / "2007_000032.png")
    original = read_png(gray)
    with Image.open(gray) as img:
        assert img.mode == "L"
    # Its JPEG is not among the samples; a stand-in of the same size is enough for the size check.
    Image.new("RGB", original.shape[::-1]).save(root / "VOC2012" / "JPEGImages" / "2007_000032.jpg")
    (root / "aug.txt").write_text("2007_000032\n")
    # With the sample train list 2007_000032 counts as SBD-only, so its SBD label is read.
    prepare_voc(str(root), **{**lists, "aug_list": str(root / "aug.txt")}, **QUIET)
    out = read_png(root / "VOC2012" / "annotations_detectron2" / "train" / "2007_000032.png")
    np.testing.assert_array_equal(out, expected_voc(original))
    assert (out < 20).any() and (out == 255).any()


def test_mmseg_aug_list_is_completed_with_the_voc_train_list(voc, shared_data):
    root, lists = voc
    sets = root / "VOC2012" / "ImageSets"
    (sets / "SegmentationAug" / "train_aug.txt").unlink()
    # mmseg's voc_aug.py writes SBD minus VOC trainval to ImageSets/Segmentation/aug.txt.
    (sets / "Segmentation" / "aug.txt").write_text("".join(f"{i}\n" for i in VOC_SBD_ONLY))
    # VOC-train ids must come from SegmentationClass: an SBD copy of one of them is not read.
    aug_copy = root / "VOC2012" / "SegmentationClassAug" / "2011_000003.png"
    aug_copy.write_bytes(b"not a png")
    summaries = prepare_voc(
        str(root), train_list=lists["train_list"], val_list=lists["val_list"], **QUIET
    )
    assert [(s.written, len(s.rejected)) for s in summaries] == [(9, 0), (17, 0)]
    out = root / "VOC2012" / "annotations_detectron2" / "train"
    for i in VOC_TRAIN + VOC_SBD_ONLY:
        folder = "SegmentationClass" if i in VOC_TRAIN else "SegmentationClassAug"
        original = read_png(shared_data / "voc" / "VOC2012" / folder / f"{i}.png")
        np.testing.assert_array_equal(read_png(out / f"{i}.png"), expected_voc(original))


def test_rerun_skips_finished_files(voc):
    root, lists = voc
    kwargs = {"aug_list": lists["aug_list"], "val_list": lists["val_list"], **QUIET}
    prepare_voc(str(root), **kwargs)
    out = root / "VOC2012" / "annotations_detectron2"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.png")}
    summaries = prepare_voc(str(root), **kwargs)
    assert [(s.written, s.skipped) for s in summaries] == [(0, 9), (0, 17)]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.png")} == before
    # A deleted output is redone, alone; a killed run's temporary file is cleared away.
    (out / "val" / "2007_000129.png").unlink()
    (out / "val" / ".tmp-2007_000129.png-x1y2.png").write_bytes(b"partial")
    summaries = prepare_voc(str(root), **kwargs)
    assert [(s.written, s.skipped) for s in summaries] == [(0, 9), (1, 16)]
    assert not temp_files(root)


def _val_only(root: Path, ids) -> dict:
    """Convert only these val ids (and one train id), without SBD."""
    (root / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "train.txt").write_text("2008_000019\n")
    return {
        "val_list": str(root / "val.txt"),
        "train_list": str(root / "train.txt"),
        "use_aug": False,
        **QUIET,
    }


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _resize_image(path: Path):
    with Image.open(path) as img:
        img.resize((img.width // 2, img.height // 2)).save(path)


def _out_of_range(path: Path):
    label = read_png(path)
    label[:5, :5] = 21
    Image.fromarray(label).save(path)


def _rgb(path: Path):
    with Image.open(path) as img:
        img.convert("RGB").save(path)


@pytest.mark.parametrize(
    "damage, target, reason",
    [
        (_truncate, "SegmentationClass", "truncated or corrupt"),
        (_resize_image, "JPEGImages", "size mismatch"),
        (_out_of_range, "SegmentationClass", "holds values 21 outside"),
        (_rgb, "SegmentationClass", "mode RGB"),
    ],
)
def test_bad_file_is_rejected_and_the_rest_converted(voc, damage, target, reason):
    root, _ = voc
    bad, good = "2007_001311", "2007_000129"
    ext = ".jpg" if target == "JPEGImages" else ".png"
    damage(root / "VOC2012" / target / f"{bad}{ext}")
    summaries = prepare_voc(str(root), **_val_only(root, [bad, good]))
    val = summaries[1]
    assert val.written == 1 and [k for k, _ in val.rejected] == [bad]
    assert reason in val.rejected[0][1], val.rejected[0][1]
    out = root / "VOC2012" / "annotations_detectron2" / "val"
    assert not (out / f"{bad}.png").exists() and (out / f"{good}.png").exists()
    assert not temp_files(root)


def test_missing_inputs_are_named_before_any_work(voc):
    root, lists = voc
    (root / "VOC2012" / "SegmentationClass" / "2007_000129.png").unlink()
    with pytest.raises(
        PrepareError,
        match=r"1 input file\(s\) for the ids in .*val.txt do not exist:\n.*2007_000129.png",
    ):
        prepare_voc(str(root), **_val_only(root, ["2007_000129", "2007_001311"]))
    assert not (root / "VOC2012" / "annotations_detectron2" / "val").exists()

    with pytest.raises(PrepareError, match="train_aug list .* are also in the val list"):
        prepare_voc(str(root), aug_list=lists["val_list"], val_list=lists["val_list"], **QUIET)

    shutil.rmtree(root / "VOC2012" / "SegmentationClassAug")
    with pytest.raises(PrepareError, match="SBD SegmentationClassAug folder not found"):
        prepare_voc(str(root), use_aug=True, val_list=lists["val_list"], **QUIET)

    shutil.rmtree(root / "VOC2012" / "JPEGImages")
    with pytest.raises(PrepareError, match=r"JPEGImages folder not found: .*VOC2012/JPEGImages"):
        prepare_voc(str(root), **_val_only(root, ["2007_001311"]))


def test_interrupted_write_leaves_no_file(voc, monkeypatch):
    root, _ = voc
    original_save = Image.Image.save

    def crash_midway(self, fp, *args, **kwargs):
        original_save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as f:
            f.truncate(10)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Image.Image, "save", crash_midway)
    with pytest.raises(OSError, match="simulated"):
        prepare_voc(str(root), **_val_only(root, ["2007_000129"]))
    assert not list((root / "VOC2012" / "annotations_detectron2").rglob("*.png"))
    assert not temp_files(root)


def run_script(argv, capsys) -> tuple[int, str, str]:
    """The CLI in this process, as `python datasets/prepare_voc.py ARGV` would run it."""
    import sys

    old = sys.argv
    sys.argv = [str(SCRIPT), *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_with_worker_pool_and_clear_errors(voc, shared_data, tmp_path, capsys):
    root, lists = voc
    argv = ["--root", str(root), "--aug-list", lists["aug_list"], "--val-list", lists["val_list"]]
    code, out, err = run_script([*argv, "--workers", "2"], capsys)
    assert code == 0, err
    assert "VOC 2012 train: 9 written, 0 skipped (already done), 0 rejected" in out
    assert "VOC 2012 val: 17 written" in out
    assert "100%" in err  # the progress bar
    out_dir = root / "VOC2012" / "annotations_detectron2" / "val"
    for i in VOC_VAL:  # the pool's output is the same as the in-process conversion's
        original = read_png(shared_data / "voc" / "VOC2012" / "SegmentationClass" / f"{i}.png")
        np.testing.assert_array_equal(read_png(out_dir / f"{i}.png"), expected_voc(original))
    code, out, err = run_script(argv, capsys)
    assert code == 0 and "0 written, 17 skipped" in out

    _truncate(root / "VOC2012" / "SegmentationClassAug" / "2008_004015.png")
    (root / "VOC2012" / "annotations_detectron2" / "train" / "2008_004015.png").unlink()
    code, out, err = run_script(argv, capsys)
    assert code == 1
    assert "rejected 2008_004015:" in out and "truncated or corrupt" in out
    assert "Traceback" not in out + err

    code, out, err = run_script(["--root", str(tmp_path / "nowhere")], capsys)
    assert code == 2
    assert err.startswith("error: VOC 2012 JPEGImages folder not found")
    assert "Download VOCtrainval_11-May-2012.tar" in err and "Traceback" not in err


def test_cli_leaves_the_users_tmp_entries_alone(voc, capsys):
    """Only a killed run's own temporary file (".tmp-<output>-<random>.png") is cleared; a
    user's ".tmp-notes" file, ".tmp-dir/" folder or other PNG in the output folder survives
    byte for byte, and a folder of that name does not crash the run."""
    root, lists = voc
    out = root / "VOC2012" / "annotations_detectron2" / "val"
    (out / ".tmp-dir").mkdir(parents=True)
    planted = {
        ".tmp-notes": b"notes",
        ".tmp-dir/keep.txt": b"keep me",
        "0001.png": b"a user's png",
        ".tmp-2007_000129.png": b"not an atomic temp name",
        ".tmp-9999_000001.png-abcd1234.png": b"no job writes 9999_000001.png",
    }
    for rel, data in planted.items():
        (out / rel).write_bytes(data)
    ours = out / ".tmp-2007_000129.png-abcd1234.png"
    ours.write_bytes(b"partial")
    argv = ["--root", str(root), "--aug-list", lists["aug_list"], "--val-list", lists["val_list"]]
    code, stdout, err = run_script([*argv, "--workers", "1"], capsys)
    assert code == 0, err
    assert "VOC 2012 val: 17 written" in stdout and "Traceback" not in stdout + err
    assert {rel: (out / rel).read_bytes() for rel in planted} == planted
    assert not ours.exists()
    code, stdout, err = run_script(argv, capsys)  # a re-run, too
    assert code == 0 and "0 written, 17 skipped" in stdout, err
    assert {rel: (out / rel).read_bytes() for rel in planted} == planted
