"""demo.py and web_demo.py --clip-alone: CLIP alone's outputs are labelled as such everywhere they
land (the overlay's caption, the JSON file, the page's heading and status), predict what
OpenVocabularyPredictor.clip_alone predicts, and --clip-alone with a model folder is refused."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from clipzss_d2.modeling.open_vocabulary import CLIP_ALONE, STUDENT
from clipzss_d2.predictor import OpenVocabularyPredictor
from tests.helpers import load_script, save_tiny_checkpoint, tiny_cfg

demo = load_script("demo/demo.py", "clipzss_demo_cli_clip_alone")
web_demo = load_script("demo/web_demo.py", "clipzss_web_demo_clip_alone")

VOCAB = "sky, tree|trees, person"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny student checkpoint and its config (the random tiny CLIP of the config)."""
    folder = tmp_path_factory.mktemp("tiny_clip_alone")
    cfg = tiny_cfg(
        extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", (), "INPUT.MIN_SIZE_TEST", 64,
                    "MODEL.CLIPZSS.TEST_VOCABULARY", ["sky", "tree|trees"]]
    )  # fmt: skip
    save_tiny_checkpoint(folder, cfg)
    return folder


def photo(tmp_path, h=48, w=64):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def run_demo(capsys, *argv):
    code = demo.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_outputs_say_clip_alone_and_match_the_predictor(tiny, tmp_path, capsys):
    image = photo(tmp_path)
    config = str(tiny / "config.yaml")
    common = ["--config-file", config, "--input", image, "--vocab", VOCAB, "--save-label-map"]
    # the student, for comparison
    code, _, err = run_demo(
        capsys, *common, "--output", str(tmp_path / "s"), "--opts", "MODEL.WEIGHTS",
        str(tiny / "model.pth"),
    )  # fmt: skip
    assert code == 0, err
    # CLIP alone: MODEL.WEIGHTS names no file, and is not read
    code, out, err = run_demo(
        capsys, *common, "--clip-alone", "--output", str(tmp_path / "c"), "--opts",
        "MODEL.WEIGHTS", str(tmp_path / "no_such_student.pth"),
    )  # fmt: skip
    assert code == 0, err
    assert "segmenting with CLIP alone (no student)" in out and "not a trained student" in out

    student = json.loads((tmp_path / "s" / "in.json").read_text())
    clip = json.loads((tmp_path / "c" / "in.json").read_text())
    assert student["segmenter"] == STUDENT and clip["segmenter"] == CLIP_ALONE

    labels = cv2.imread(str(tmp_path / "c" / "in_labels.png"), cv2.IMREAD_UNCHANGED)
    predictor = OpenVocabularyPredictor.clip_alone(config, vocabulary=VOCAB)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    np.testing.assert_array_equal(labels, predictor(rgb, input_format="RGB").label_map())

    # the same drawing with a caption band above it: the band is white paper with dark text
    plain = cv2.imread(str(tmp_path / "s" / "in.png"))
    captioned = cv2.imread(str(tmp_path / "c" / "in.png"))
    band = captioned.shape[0] - plain.shape[0]
    assert band > 10 and captioned.shape[1] == plain.shape[1]
    top = captioned[:band]
    assert (top == 255).all(axis=-1).mean() > 0.7 and (top < 100).all(axis=-1).any()
    assert not (plain[:band] == 255).all()  # a student's overlay starts with the image


def test_clip_alone_with_a_model_folder_is_refused(tiny, tmp_path, capsys):
    code, _, err = run_demo(
        capsys, "--model-folder", str(tiny), "--clip-alone", "--input", photo(tmp_path),
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--clip-alone cannot be used with --model-folder" in err
    assert not (tmp_path / "out").exists()
    # the page's command: one line, exit 2, before serving
    assert web_demo.main(["--model-folder", str(tiny), "--clip-alone"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--clip-alone cannot be used with --model-folder" in err


def test_web_page_labels_clip_alone(tiny, tmp_path):
    args = ["--config-file", str(tiny / "config.yaml"), "--clip-alone"]
    app = web_demo.load(web_demo.get_parser().parse_args(args))
    assert app.predictor.segmenter == CLIP_ALONE
    overlay, _, status = app.segment(photo(tmp_path), VOCAB)
    assert status.startswith("**CLIP alone (no student)**: Segmented a 64 x 48 image")
    page = app.build()
    heading = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "heading")
    assert "CLIP alone (no student)" in heading.value and "no trained student" in heading.value
    assert "CLIP alone" in page.title

    student = web_demo.load(
        web_demo.get_parser().parse_args(
            ["--config-file", str(tiny / "config.yaml"), "--opts", "MODEL.WEIGHTS",
             str(tiny / "model.pth")]
        )
    )  # fmt: skip
    plain, _, status = student.segment(photo(tmp_path), VOCAB)
    assert status.startswith("Segmented") and "CLIP alone" not in student.build().title
    assert overlay.shape[0] > plain.shape[0]  # the caption band
