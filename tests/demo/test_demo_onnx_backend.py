"""demo.py --backend onnx: a student exported by tools/export_model.py (logits, dynamic) runs under
onnxruntime and writes the label maps and class shares the PyTorch student writes for the same
images, a real VOC photo included; the flag combinations that mean nothing are refused in one
line before anything is written."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.helpers import load_script, save_tiny_checkpoint, tiny_cfg

demo = load_script("demo/demo.py", "clipzss_demo_cli_onnx")
export_model = load_script("tools/export_model.py", "clipzss_export_model_onnx_demo")

VOCAB = "person, bicycle, road|street, sky"
PHOTO = "voc/VOC2012/JPEGImages/2007_000129.jpg"  # 334 x 500, resized to 64 x 95


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny student, its config and its dynamic logits export. The tiny CLIP is random
    at every build: export and demo share one text cache, as a real CLIP's runs would agree."""
    folder = tmp_path_factory.mktemp("tiny_onnx_demo")
    cfg = tiny_cfg(
        extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", (), "INPUT.MIN_SIZE_TEST", 64]
    )
    save_tiny_checkpoint(folder, cfg)
    opts = ["--opts", "MODEL.WEIGHTS", str(folder / "model.pth"),
            "MODEL.CLIPZSS.TEXT.CACHE_DIR", str(folder / "text_cache")]  # fmt: skip
    code = export_model.main(
        ["--config-file", str(folder / "config.yaml"), "--vocab", VOCAB, "--format", "onnx",
         "--output-kind", "logits", "--dynamic", "--height", "64", "--width", "64",
         "--output", str(folder / "exported"), *opts]
    )  # fmt: skip
    assert code == 0
    return folder, opts


def run_demo(capsys, *argv):
    code = demo.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_onnx_writes_what_pytorch_writes(tiny, shared_data, tmp_path, capsys):
    folder, opts = tiny
    rng = np.random.default_rng(0)
    small = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(small)
    inputs = ["--input", str(shared_data / PHOTO), str(small), "--vocab", VOCAB]
    common = ["--config-file", str(folder / "config.yaml"), *inputs, "--save-label-map"]
    code, _, err = run_demo(capsys, *common, "--output", str(tmp_path / "pt"), *opts)
    assert code == 0, err
    code, out, err = run_demo(
        capsys, *common, "--output", str(tmp_path / "ort"), "--backend", "onnx",
        "--export-folder", str(folder / "exported"), *opts,
    )  # fmt: skip
    assert code == 0, err
    assert "Wrote results for 2 of 2 images" in out
    for name in ("2007_000129", "small"):
        expected = cv2.imread(str(tmp_path / "pt" / f"{name}_labels.png"), cv2.IMREAD_UNCHANGED)
        got = cv2.imread(str(tmp_path / "ort" / f"{name}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        shares = [json.loads((tmp_path / d / f"{name}.json").read_text()) for d in ("pt", "ort")]
        assert shares[0]["classes"] == shares[1]["classes"]
        assert shares[1]["segmenter"] == "student"
    assert len(np.unique(expected)) > 1  # a map that could differ


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "onnx"], "--backend onnx needs --export-folder"),
        (["--export-folder", "EXPORT"], "--export-folder is read only with --backend onnx"),
        (["--backend", "onnx", "--export-folder", "EXPORT", "--clip-alone"], "CLIP alone is not"),
        (["--backend", "onnx", "--export-folder", "EXPORT", "--vocab", "cat,dog"],
         "exported for a fixed vocabulary"),
        (["--backend", "onnx", "--export-folder", "MISSING"], "cannot be read"),
    ],
)  # fmt: skip
def test_meaningless_combinations_are_refused_before_any_output(
    tiny, tmp_path, capsys, extra, message
):
    folder, opts = tiny
    extra = [
        {"EXPORT": str(folder / "exported"), "MISSING": str(tmp_path / "none")}.get(a, a)
        for a in extra
    ]
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    vocab = [] if "--vocab" in extra else ["--vocab", VOCAB]
    out = tmp_path / "out"
    code, _, err = run_demo(
        capsys, "--config-file", str(folder / "config.yaml"), "--input", str(image),
        "--output", str(out), *vocab, *extra, *opts,
    )  # fmt: skip
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
