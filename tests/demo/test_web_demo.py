"""demo/web_demo.py through the function the page's button calls (WebDemo.segment), checked
against OpenVocabularyPredictor called directly; bad input; the start-up command."""

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from clipzss_d2.miniworld import world
from clipzss_d2.miniworld.generate import render_item
from clipzss_d2.predictor import OpenVocabularyPredictor
from tests.helpers import ROOT, TINY_CLIP, load_script, tiny_cfg

WEB_DEMO = ROOT / "demo" / "web_demo.py"
VOCAB = "disc, grass|lawn, water, brick"
NAMES = ["disc", "grass", "water", "brick"]
# Scenes (short side 72-120 px) are resized to a 64 px short side (long side up to ~103 px):
# 32 px windows every 16 px make sliding differ from whole.
MODEL_OPTS = [
    "DATASETS.TRAIN", (), "DATASETS.TEST", (),
    "INPUT.MIN_SIZE_TEST", 64,
    "MODEL.CLIPZSS.TEST_VOCABULARY", ["sky", "tree|trees"],
    "MODEL.CLIPZSS.INFERENCE.SLIDE_CROP", 32,
    "MODEL.CLIPZSS.INFERENCE.SLIDE_STRIDE", 16,
]  # fmt: skip


web_demo = load_script("demo/web_demo.py", "clipzss_web_demo")
# the drawing code the demo reuses (demo/visualization.py), imported the way the demo imports it
from visualization import MIN_DISPLAY_SIDE, class_colors, render  # noqa: E402


def save_tiny_model(folder: Path, extra_opts=()) -> tuple[str, str]:
    """Random tiny student + random tiny CLIP, both saved: every predictor built from them (the
    app's and the references) has the same weights and text embeddings."""
    clip_file = folder / "tiny_clip.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), clip_file)
    clip_opts = [
        "MODEL.CLIPZSS.CLIP.PRETRAINED", str(clip_file),
        "MODEL.CLIPZSS.CLIP.ACTIVATION", "gelu",
    ]  # fmt: skip
    cfg = tiny_cfg(extra_opts=MODEL_OPTS + clip_opts + list(extra_opts))
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model")
    (folder / "config.yaml").write_text(cfg.dump())
    return str(folder / "config.yaml"), str(folder / "model.pth")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("web_tiny"))


def start(*argv):
    """WebDemo as `python demo/web_demo.py ARGV` builds it, without serving."""
    return web_demo.load(web_demo.get_parser().parse_args(list(argv)))


@pytest.fixture(scope="module")
def app(tiny):
    config, weights = tiny
    return start("--config-file", config, "--opts", "MODEL.WEIGHTS", weights)


def reference(tiny, mode):
    config, weights = tiny
    opts = ["MODEL.WEIGHTS", weights, "MODEL.CLIPZSS.INFERENCE.MODE", mode]
    return OpenVocabularyPredictor.from_config_file(config, opts)


def rgb_of(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def expected_rows(labels: np.ndarray, names, unlabelled=None):
    """(class, share %) largest first, then absent classes at 0, counted here with numpy."""
    ids, counts = np.unique(labels, return_counts=True)
    order = sorted(zip(counts.tolist(), ids.tolist()), key=lambda t: -t[0])
    rows = [
        ("unlabelled" if i == unlabelled else names[i], round(100 * c / labels.size, 2))
        for c, i in order
    ]
    found = {name for name, _ in rows}
    return rows + [(name, 0.0) for name in names if name not in found]


def table_rows(table):
    return list(zip(table["class"], table["share (%)"]))


def assert_error(output, *fragments):
    overlay, table, status = output
    assert overlay is None and len(table) == 0
    assert status.startswith("**Error:** ") and "\n" not in status
    assert "Traceback" not in status
    for fragment in fragments:
        assert fragment in status, status


# -- results agree with the predictor called directly ------------------------------------------
def test_page_defaults_and_examples(app):
    assert app.vocabulary == "sky, tree|trees"  # the config's vocabulary
    assert len(app.examples) == 3
    for index, path in enumerate(app.examples):  # the world's test scenes, `make main`'s seed
        assert Path(path).name == f"miniworld_test_{index:06d}.png"
        scene = render_item(0, "test", index, world.WorldParams()).image
        np.testing.assert_array_equal(rgb_of(path), scene)
    assert "32 x 32 px windows every 16 px" in app.describe_modes()
    assert app.build() is not None


@pytest.mark.parametrize("mode, key", [("whole image", "whole"), ("sliding window", "slide")])
def test_segment_matches_the_predictor_called_directly(app, tiny, mode, key):
    image = rgb_of(app.examples[0])
    overlay, table, status = app.segment(app.examples[0], VOCAB, mode)
    expected = reference(tiny, key)(image, vocabulary=VOCAB, input_format="RGB")
    assert table_rows(table) == expected_rows(expected.labels, NAMES)
    colors = class_colors(NAMES)
    assert list(table["colour"]) == [
        "#{:02x}{:02x}{:02x}".format(*colors[NAMES.index(name)]) for name in table["class"]
    ]
    drawn = render(image, expected.labels.astype(np.uint8), NAMES, colors, 255)
    np.testing.assert_array_equal(overlay, drawn)
    height, width = image.shape[:2]
    factor = -(-MIN_DISPLAY_SIDE // min(height, width))  # enlarged for display, then the legend
    assert factor > 1 and overlay.shape[0] >= factor * height and overlay.shape[1] > factor * width
    assert re.fullmatch(
        rf"Segmented a {width} x {height} image over 4 classes \({mode}\) in [0-9.]+ s\.", status
    )


def test_the_mode_switch_changes_the_prediction_and_switches_back(app, tiny):
    image = rgb_of(app.examples[1])
    whole = reference(tiny, "whole")(image, vocabulary=VOCAB, input_format="RGB")
    slide = reference(tiny, "slide")(image, vocabulary=VOCAB, input_format="RGB")
    assert (whole.labels != slide.labels).any()  # else this test could not tell them apart
    model_mode = app.predictor.model.test_time
    for mode, expected in [("sliding window", slide), ("whole image", whole)] * 2:
        table = app.segment(app.examples[1], VOCAB, mode)[1]
        assert table_rows(table) == expected_rows(expected.labels, NAMES), mode
        assert app.predictor.model.test_time is model_mode  # the mode travels with the request


def test_requests_in_other_modes_at_the_same_time(app, tiny):
    """No lock and no shared mode: concurrent requests each get their own mode's result."""
    image = rgb_of(app.examples[1])
    expected = {
        mode: expected_rows(reference(tiny, key)(image, vocabulary=VOCAB, input_format="RGB")
                            .labels, NAMES)
        for mode, key in [("whole image", "whole"), ("sliding window", "slide")]
    }  # fmt: skip
    modes = ["whole image", "sliding window"] * 3
    with ThreadPoolExecutor(max_workers=2) as pool:
        tables = list(pool.map(lambda m: app.segment(app.examples[1], VOCAB, m)[1], modes))
    assert [table_rows(t) for t in tables] == [expected[m] for m in modes]


def test_confidence_threshold_leaves_pixels_unlabelled(app, tiny):
    image = rgb_of(app.examples[2])
    expected = reference(tiny, "whole")(image, vocabulary=VOCAB, input_format="RGB")
    threshold = float(np.median(expected.scores))
    labels = np.where(expected.scores < threshold, 255, expected.labels)
    table = app.segment(app.examples[2], VOCAB, "whole image", threshold)[1]
    assert table_rows(table) == expected_rows(labels, NAMES, unlabelled=255)
    assert "unlabelled" in set(table["class"])


def test_uploaded_photo_of_any_format(app, tiny, tmp_path):
    """A gray JPEG of odd size: read like demo.py reads it, predicted like the predictor does."""
    gray = (np.arange(70 * 50) % 251).astype(np.uint8).reshape(50, 70)
    path = tmp_path / "gray.jpg"
    Image.fromarray(gray).save(path, quality=95)
    image = np.repeat(np.asarray(Image.open(path))[:, :, None], 3, axis=2)
    expected = reference(tiny, "whole")(image, vocabulary="cat,dog", input_format="RGB")
    upload = {"path": str(path), "orig_name": "gray.jpg"}  # what the page's button sends
    overlay, table, status = app.segment(upload, "cat,dog", "whole image")
    assert table_rows(table) == expected_rows(expected.labels, ["cat", "dog"])
    assert status.startswith("Segmented a 70 x 50 image over 2 classes")


# -- bad input: a message on the page ------------------------------------------------------------
def write(path: Path, array=None, data: bytes | None = None) -> str:
    if data is not None:
        path.write_bytes(data)
    else:
        Image.fromarray(array).save(path)
    return str(path)


def test_bad_input_gets_a_one_line_message(app, tmp_path):
    example = app.examples[0]
    assert_error(app.segment(None, VOCAB), "No image")
    assert_error(app.segment(example, "  "), "vocabulary is empty")
    assert_error(app.segment(example, None), "vocabulary is empty")
    assert_error(app.segment(example, "cat,,dog"), "blank")
    assert_error(app.segment(example, "cat, Cat"), "twice")
    assert_error(app.segment(example, VOCAB, "fast"), "Unknown mode")
    assert_error(app.segment(example, VOCAB, "whole image", 1.5), "between 0 and 1")
    junk = write(tmp_path / "junk.png", data=b"this is not an image")
    assert_error(app.segment(junk, VOCAB), "The image cannot be read: not an image file")
    assert_error(app.segment(write(tmp_path / "empty.jpg", data=b""), VOCAB), "empty")
    png = tmp_path / "ok.png"
    write(png, np.zeros((64, 64, 3), np.uint8) + 90)
    cut = write(tmp_path / "cut.png", data=png.read_bytes()[:60])
    assert_error(app.segment(cut, VOCAB), "cannot be read: corrupt or truncated image")
    assert_error(app.segment(str(tmp_path / "gone.png"), VOCAB), "no such file")


@pytest.mark.parametrize(
    "shape, fragment",
    [((4, 300), "300 x 4 pixels"), ((40, 1000), "1000 x 40 pixels"), ((20, 8200), "8200 x 20")],
)
def test_absurd_sizes_are_refused(app, tmp_path, shape, fragment):
    path = write(tmp_path / "odd.png", np.zeros((*shape, 3), np.uint8))
    assert_error(app.segment(path, VOCAB), fragment, "8 to 8192 pixels", "20:1")


def test_vocabulary_missing_from_the_cache_without_clip_weights(tmp_path):
    """A deployment with a text cache and no CLIP weights: cached names work, others are
    refused on the page saying which weights are missing."""
    config, weights = save_tiny_model(
        tmp_path, ["MODEL.CLIPZSS.TEXT.CACHE_DIR", str(tmp_path / "cache")]
    )
    clip_file = tmp_path / "tiny_clip.pt"
    args = ["--config-file", config, "--vocab", "cat,sofa|couch", "--opts", "MODEL.WEIGHTS"]
    start(*args, weights)  # fills the cache with the start-up vocabulary
    os.remove(clip_file)
    app = start(*args, weights)
    assert app.vocabulary == "cat, sofa|couch"
    overlay, table, status = app.segment(app.examples[0], "cat, sofa|couch")
    assert overlay is not None and set(table["class"]) == {"cat", "sofa"}
    assert_error(app.segment(app.examples[0], "cat, dog"), "does not exist")
    assert not app.predictor.model.text_classifier.clip_loaded


# -- the command ----------------------------------------------------------------------------------
def test_without_a_trained_miniworld_model_the_command_says_run_make_main(tmp_path):
    run = subprocess.run(
        [sys.executable, str(WEB_DEMO), "--miniworld-output", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("web_demo.py: error: no miniature-world model at ")
    assert "run `make main` first" in last and "Traceback" not in run.stderr


def test_bad_config_or_weights_exit_2_with_one_line(tiny, tmp_path, capsys):
    config, weights = tiny
    assert web_demo.main(["--config-file", str(tmp_path / "nope.yaml")]) == 2
    assert "--config-file" in capsys.readouterr().err
    missing = str(tmp_path / "missing.pth")
    assert web_demo.main(["--config-file", config, "--opts", "MODEL.WEIGHTS", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("web_demo.py: error: ") and "missing.pth" in err
    assert web_demo.main(["--config-file", config, "--vocab", "a,,b"]) == 2
    assert "blank" in capsys.readouterr().err


def test_default_model_is_the_main_jobs_run(tiny, tmp_path):
    """No --config-file: the run `make main` leaves (<output>/full/seed0), its vocabulary the
    miniature world's classes, sliding windows sized for its scenes at the test size."""
    config, weights = tiny
    run = tmp_path / "miniworld" / "full" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(Path(config).read_text())
    (run / "model_final.pth").write_bytes(Path(weights).read_bytes())
    app = start("--miniworld-output", str(tmp_path / "miniworld"))
    assert app.vocabulary == ", ".join(world.CLASSES)
    assert "64 x 64 px windows every 32 px" in app.describe_modes()
    expected = OpenVocabularyPredictor.from_config_file(config, ["MODEL.WEIGHTS", weights])
    table = app.segment(app.examples[0], app.vocabulary)[1]
    image = rgb_of(app.examples[0])
    labels = expected(image, vocabulary=app.vocabulary, input_format="RGB").labels
    assert table_rows(table) == expected_rows(labels, list(world.CLASSES))


def test_a_model_folder_alone_serves_the_page(tiny, tmp_path):
    """`--model-folder` (what train_net.py leaves): same prediction as the predictor built from
    the original config and weights."""
    from clipzss_d2.model_folder import write_model_folder

    config, weights = tiny
    source = reference(tiny, "whole")
    folder = write_model_folder(source.cfg, source.model, str(tmp_path / "model"))
    app = start("--model-folder", folder)
    image = rgb_of(app.examples[0])
    overlay, table, status = app.segment(app.examples[0], VOCAB, "whole image")
    expected = source(image, vocabulary=VOCAB, input_format="RGB")
    assert table_rows(table) == expected_rows(expected.labels, NAMES)
    height, width = image.shape[:2]
    assert status.startswith(f"Segmented a {width} x {height} image over 4 classes")


# -- every request's work is bounded on the server ------------------------------------------------
def test_the_web_api_answers_any_json_in_one_line(app):
    """The page's function takes what a client posts (preprocess=False): wrong types included."""
    example = app.examples[0]
    assert_error(app.segment(123, VOCAB), "image must be a file path or an upload, not a int")
    assert_error(app.segment([example], VOCAB), "not a list")
    assert_error(app.segment({"path": 5}, VOCAB), "not a int")
    assert_error(app.segment(example, 42), "vocabulary must be text, not a int")
    assert_error(app.segment(example, ["disc", "grass"]), "vocabulary must be text, not a list")
    assert_error(app.segment(example, VOCAB, 1), "mode must be text")
    assert_error(app.segment(example, VOCAB, "whole image", "abc"), "must be a number, not a str")
    assert_error(app.segment(example, VOCAB, "whole image", True), "must be a number, not a bool")
    assert_error(app.segment(example, VOCAB, "whole image", {"x": 1}), "not a dict")


def test_vocabulary_and_image_bounds(app, tmp_path):
    example = app.examples[0]
    names = ", ".join(f"c{i}" for i in range(web_demo.MAX_CLASSES + 1))
    assert_error(app.segment(example, names), "1,001 classes", "at most 1,000")
    assert_error(app.segment(example, "sky, " + "x" * 201), "201 characters long")
    assert_error(app.segment(example, "a" * 1_000_000), "1,000,000 characters long")
    # 215 KB of PNG that decodes to 8192 x 8192 pixels
    big = write(tmp_path / "big.png", np.zeros((4100, 4100, 3), np.uint8))
    assert os.path.getsize(big) < 300_000
    assert_error(app.segment(big, VOCAB), "4100 x 4100 pixels (16.8 MP)", "at most 16.8 MP")
    wide = write(tmp_path / "wide.png", np.zeros((2000, 4000, 3), np.uint8))
    many = ", ".join(f"c{i}" for i in range(300))
    assert_error(app.segment(wide, many), "4000 x 2000 image over 300 classes")


def test_request_vocabularies_write_no_cache_file_and_memory_is_bounded(tmp_path, monkeypatch):
    """20 requests with 20 new vocabularies: no file added to the model's text cache, and the
    embeddings kept in memory stay within the classifier's bound."""
    cache = tmp_path / "cache"
    config, weights = save_tiny_model(tmp_path, ["MODEL.CLIPZSS.TEXT.CACHE_DIR", str(cache)])
    app = start("--config-file", config, "--vocab", "cat,sofa", "--opts", "MODEL.WEIGHTS", weights)
    written = sorted(cache.iterdir())  # the start-up vocabulary's cache (the command's own)
    classifier = app.predictor.model.text_classifier
    monkeypatch.setattr(classifier, "MEMORY_CACHE_SIZE", 30)
    for request in range(20):
        vocabulary = ", ".join(f"thing {request} {i}" for i in range(5))
        overlay, _, status = app.segment(app.examples[0], vocabulary)
        assert overlay is not None, status
    assert sorted(cache.iterdir()) == written
    assert len(classifier._memory) == 30


def test_running_out_of_memory_is_a_message_on_the_page(app, monkeypatch):
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.70 GiB")

    monkeypatch.setattr(app.predictor.model, "forward", exhausted)
    assert_error(app.segment(app.examples[0], VOCAB), "Out of memory for this request")
