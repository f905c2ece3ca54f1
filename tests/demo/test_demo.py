"""demo/demo.py on real photos and on every kind of bad input (in-process main(argv), plus two
real subprocess runs for the exit codes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import (
    ROOT,
    TOY_CLASSES,
    load_script,
    register_toy_dataset,
    save_tiny_checkpoint,
    tiny_cfg,
)

DEMO = ROOT / "demo" / "demo.py"
PHOTO = "voc/VOC2012/JPEGImages/2007_000129.jpg"  # 334 x 500
CONFIG_VOCABULARY = ["sky", "tree|trees", "person"]  # used when no --vocab* flag is given


demo = load_script("demo/demo.py", "clipzss_demo_cli")
# image reading, imported the way demo.py imports it (its folder is on sys.path once it is loaded)
from image_io import read_image_rgb  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny student checkpoint and its config as a YAML file (no dataset needed)."""
    folder = tmp_path_factory.mktemp("tiny_model")
    cfg = tiny_cfg(
        extra_opts=[
            "DATASETS.TRAIN",
            (),
            "DATASETS.TEST",
            (),
            "INPUT.MIN_SIZE_TEST",
            64,
            "MODEL.CLIPZSS.TEST_VOCABULARY",
            CONFIG_VOCABULARY,
        ]
    )
    save_tiny_checkpoint(folder, cfg)
    other = cfg.clone()
    other.MODEL.CLIPZSS.EMBED_DIM = 16
    (folder / "other_config.yaml").write_text(other.dump())
    return folder


def args_for(tiny, *extra, weights=None, config="config.yaml"):
    weights = weights or str(tiny / "model.pth")
    return ["--config-file", str(tiny / config), *extra, "--opts", "MODEL.WEIGHTS", weights]


def run_demo(tiny, capsys, *extra, **kw):
    code = demo.main(args_for(tiny, *extra, **kw))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".tmp")]


def write_image(path: Path, array: np.ndarray, **save_kw) -> str:
    Image.fromarray(array).save(path, **save_kw)
    return str(path)


def rgb(h=40, w=56, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- the happy path on a real photo ---------------------------------------------------------------
def test_real_photo_with_typed_vocabulary(tiny, capsys, shared_data, tmp_path):
    photo = shared_data / PHOTO
    out = tmp_path / "out"
    code, stdout, err = run_demo(
        tiny,
        capsys,
        "--input",
        str(photo),
        "--output",
        str(out),
        "--vocab",
        "person, bicycle, road|street, sky",
        "--save-label-map",
    )
    assert code == 0, err
    assert "Wrote results for 1 of 1 images" in stdout
    overlay = cv2.imread(str(out / "2007_000129.png"))
    labels = cv2.imread(str(out / "2007_000129_labels.png"), cv2.IMREAD_UNCHANGED)
    summary = json.loads((out / "2007_000129.json").read_text())
    assert labels.shape == (500, 334) and labels.dtype == np.uint8 and labels.max() < 4
    assert overlay.shape[0] == 500 and overlay.shape[1] > 334  # image + legend panel
    # the overlay keeps the photo visible under the colours
    photo_bgr = cv2.imread(str(photo))
    assert np.corrcoef(photo_bgr[..., 1].ravel(), overlay[:, :334, 1].ravel())[0, 1] > 0.5
    assert summary["vocabulary"] == ["person", "bicycle", "road|street", "sky"]
    assert (summary["height"], summary["width"]) == (500, 334)
    ids, counts = np.unique(labels, return_counts=True)
    names = ["person", "bicycle", "road", "sky"]
    expected = {names[i]: round(c / labels.size, 6) for i, c in zip(ids, counts)}
    assert summary["classes"] == expected
    assert oct((out / "2007_000129.png").stat().st_mode & 0o777) != oct(0o600)
    assert no_temp_files(out)


def test_single_output_file_name(tiny, capsys, tmp_path):
    image = write_image(tmp_path / "in.jpg", rgb())
    code, _, err = run_demo(
        tiny,
        capsys,
        "--input",
        image,
        "--output",
        str(tmp_path / "res" / "seg.png"),
        "--vocab",
        "a,b",
    )
    assert code == 0, err
    assert (tmp_path / "res" / "seg.png").is_file() and (tmp_path / "res" / "seg.json").is_file()
    code, _, err = run_demo(
        tiny, capsys, "--input", image, image + "x", "--output", str(tmp_path / "x.png")
    )
    assert code == 2 and "names one image file but 2 inputs" in err


# -- bad inputs -----------------------------------------------------------------------------------
def test_bad_inputs_are_reported_and_good_ones_still_processed(tiny, capsys, tmp_path):
    good = write_image(tmp_path / "good.png", rgb())
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(os.urandom(2000))
    full = tmp_path / "full.jpg"
    write_image(full, rgb(120, 160), quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    folder = tmp_path / "a_folder"
    folder.mkdir()
    out = tmp_path / "out"
    inputs = [good, str(tmp_path / "missing.jpg"), str(empty), str(corrupt), str(truncated)]
    inputs += [str(folder), str(tmp_path / "nothing" / "*.png")]
    code, stdout, err = run_demo(tiny, capsys, "--input", *inputs, "--output", str(out))
    assert code == 1
    assert "Wrote results for 1 of 6 images" in stdout
    assert "6 input(s) could not be processed" in err
    assert "missing.jpg: no such file" in err
    assert "empty.jpg: the file is empty (0 bytes)" in err
    assert "corrupt.jpg: not an image file" in err
    assert "truncated.jpg: corrupt or truncated image" in err
    assert "a_folder: is a folder" in err
    assert "*.png: the pattern matches no file" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.png"]


def test_gray_rgba_palette_and_16_bit_images_are_converted(tiny, capsys, tmp_path):
    gray16 = (np.arange(40 * 56, dtype=np.uint16).reshape(40, 56) * 29).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.stack([gray16] * 3, axis=2))
    write_image(tmp_path / "gray.png", rgb()[..., 0])
    write_image(tmp_path / "rgba.png", np.concatenate([rgb(), rgb()[..., :1]], axis=2))
    Image.fromarray(rgb()).convert("P").save(tmp_path / "palette.png")
    out = tmp_path / "out"
    code, _, err = run_demo(tiny, capsys, "--input", str(tmp_path / "*.png"), "--output", str(out))
    assert code == 0, err
    assert len(list(out.glob("*.json"))) == 5
    summary = json.loads((out / "gray16.json").read_text())
    assert summary["vocabulary"] == CONFIG_VOCABULARY  # no --vocab: the config's vocabulary

    converted = read_image_rgb(str(tmp_path / "gray16.png"))
    assert converted.shape == (40, 56, 3) and converted.dtype == np.uint8
    expected = np.rint(gray16 / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(converted[..., 0], expected)  # rescaled, not clipped at 255
    assert read_image_rgb(str(tmp_path / "rgba.png")).shape == (40, 56, 3)


def test_exif_orientation_is_honoured(tiny, capsys, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 wide x 40 high, displayed rotated by 90 degrees
    path = write_image(tmp_path / "rotated.jpg", rgb(40, 80), exif=exif)
    assert read_image_rgb(path).shape == (80, 40, 3)
    code, _, err = run_demo(
        tiny, capsys, "--input", path, "--output", str(tmp_path), "--save-label-map"
    )
    assert code == 0, err
    labels = cv2.imread(str(tmp_path / "rotated_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (80, 40)


@pytest.mark.parametrize(
    "vocab_args, message",
    [
        (["--vocab", ""], "--vocab is empty"),
        (["--vocab", "cat,,dog"], "item 2 is blank"),
        (["--vocab", "cat, dog, Cat"], "'Cat' appears twice"),
        (["--vocab", "cat,dog,"], "item 3 is blank"),
        (["--vocab-file", "/nonexistent/classes.txt"], "no such file"),
        (["--vocab-dataset", "no_such_dataset"], "not a registered dataset"),
    ],
)
def test_bad_vocabularies_stop_before_any_output(tiny, capsys, tmp_path, vocab_args, message):
    image = write_image(tmp_path / "in.png", rgb())
    out = tmp_path / "out"
    code, _, err = run_demo(tiny, capsys, "--input", image, "--output", str(out), *vocab_args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_vocabulary_file_and_dataset_vocabulary(tiny, capsys, tmp_path):
    image = write_image(tmp_path / "in.png", rgb())
    vocab_file = tmp_path / "classes.txt"
    vocab_file.write_text("# my classes\ncat\n\nsofa|couch\n  tv monitor  \n", encoding="utf-8")
    code, _, err = run_demo(
        tiny,
        capsys,
        "--input",
        image,
        "--output",
        str(tmp_path / "f"),
        "--vocab-file",
        str(vocab_file),
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "f" / "in.json").read_text())
    assert summary["vocabulary"] == ["cat", "sofa|couch", "tv monitor"]
    assert set(summary["classes"]) <= {"cat", "sofa", "tv monitor"}

    vocab_file.write_text("cat\nsofa\ncat\n")
    code, _, err = run_demo(
        tiny,
        capsys,
        "--input",
        image,
        "--output",
        str(tmp_path / "g"),
        "--vocab-file",
        str(vocab_file),
    )
    assert code == 2 and "classes.txt" in err and "appears twice" in err

    dataset = register_toy_dataset()  # metadata only: no files on disk
    code, _, err = run_demo(
        tiny, capsys, "--input", image, "--output", str(tmp_path / "d"), "--vocab-dataset", dataset
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "in.json").read_text())
    assert summary["vocabulary"] == TOY_CLASSES


def test_a_thousand_class_vocabulary(tiny, capsys, tmp_path):
    image = write_image(tmp_path / "in.png", rgb(48, 64))
    out = tmp_path / "out"  # not tmp_path: the overlay in.png would replace the input
    vocab = ",".join(f"thing number {i}" for i in range(1000))
    code, _, err = run_demo(
        tiny,
        capsys,
        "--input",
        image,
        "--output",
        str(out),
        "--vocab",
        vocab,
        "--save-label-map",
    )
    assert code == 0, err
    labels = cv2.imread(str(out / "in_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16 and labels.shape == (48, 64) and labels.max() < 1000
    summary = json.loads((out / "in.json").read_text())
    assert len(summary["vocabulary"]) == 1000 and summary["unlabelled_id"] == 65535


def test_confidence_threshold_leaves_pixels_unlabelled(tiny, capsys, tmp_path):
    image = write_image(tmp_path / "in.png", rgb())
    out = tmp_path / "out"  # not tmp_path: the overlay in.png would replace the input
    code, _, err = run_demo(
        tiny,
        capsys,
        "--input",
        image,
        "--output",
        str(out),
        "--vocab",
        "a,b,c,d,e",
        "--confidence-threshold",
        "0.99",
        "--save-label-map",
    )
    assert code == 0, err
    labels = cv2.imread(str(out / "in_labels.png"), cv2.IMREAD_UNCHANGED)
    assert (labels == 255).all()  # random weights: no class is 99% sure
    assert json.loads((out / "in.json").read_text())["classes"] == {"unlabelled": 1.0}
    code, _, err = run_demo(
        tiny, capsys, "--input", image, "--output", str(out), "--confidence-threshold", "2"
    )
    assert code == 2 and "between 0 and 1" in err


def test_weights_problems_are_explained(tiny, capsys, tmp_path):
    image = write_image(tmp_path / "in.png", rgb())
    out = tmp_path / "out"
    code, _, err = run_demo(
        tiny, capsys, "--input", image, "--output", str(out), weights=str(tmp_path / "none.pth")
    )
    assert code == 2 and "MODEL.WEIGHTS" in err and "does not exist" in err
    code, _, err = run_demo(
        tiny, capsys, "--input", image, "--output", str(out), config="other_config.yaml"
    )
    assert code == 2 and "other_config.yaml" in err and "shapes" in err
    code, _, err = run_demo(
        tiny, capsys, "--input", image, "--output", str(out), config="nope.yaml"
    )
    assert code == 2 and "nope.yaml: no such file" in err
    assert not out.exists()


# -- a real process: the exit code a shell sees ----------------------------------------------------
def test_subprocess_exit_code(tiny, tmp_path, shared_data):
    """One real run (each costs a torch import); the other codes are checked through main()."""
    photo = str(shared_data / PHOTO)
    out = tmp_path / "out"
    argv = args_for(
        tiny,
        "--input",
        photo,
        str(tmp_path / "gone.jpg"),
        "--output",
        str(out),
        "--vocab",
        "dog,person",
    )
    run = subprocess.run(
        [sys.executable, str(DEMO), *argv], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 1, run.stderr
    assert "gone.jpg: no such file" in run.stderr and "Traceback" not in run.stderr
    assert (out / "2007_000129.png").is_file() and (out / "2007_000129.json").is_file()
