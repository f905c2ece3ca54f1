"""clipzss_d2.onnx_backend: the exported logits graph under onnxruntime gives the predictor's
labels (and scores to rounding), for images at the test size, resized ones and batches."""

import numpy as np
import pytest
import torch

from clipzss_d2.errors import UserInputError
from clipzss_d2.export import ExportOptions, export_student
from clipzss_d2.onnx_backend import OnnxPredictor
from clipzss_d2.predictor import OpenVocabularyPredictor
from clipzss_d2.vocabulary import parse_vocabulary
from tests.helpers import save_tiny_checkpoint, tiny_cfg

VOCAB = "cat,dog,sofa|couch,grass"
SMALL = ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_backend")
    base = ["DATASETS.TRAIN", (), "DATASETS.TEST", (), *SMALL]
    save_tiny_checkpoint(folder, tiny_cfg(extra_opts=base))
    # the tiny CLIP is random at every build: export and predictor share the text cache
    opts = base + ["MODEL.WEIGHTS", str(folder / "model.pth")]
    opts += ["MODEL.CLIPZSS.TEXT.CACHE_DIR", str(folder / "text_cache")]
    cfg = tiny_cfg(extra_opts=opts)
    out = folder / "logits"
    options = ExportOptions(
        formats=("onnx",), height=64, width=64, dynamic=True, output_kind="logits"
    )
    _, problems = export_student(cfg, parse_vocabulary(VOCAB), str(out), options)
    assert problems == []
    return cfg, out


def images(*sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.mark.parametrize(
    "sizes",
    [[(64, 64)], [(50, 70)], [(64, 80), (64, 80), (40, 40)]],  # test size, resized, mixed batch
)
def test_labels_equal_the_predictors(exported, sizes):
    cfg, folder = exported
    predictor = OpenVocabularyPredictor(cfg, VOCAB)
    backend = OnnxPredictor.from_config(str(folder), cfg)
    assert backend.vocabulary == predictor.vocabulary
    batch = images(*sizes)
    expected = predictor.predict_batch(batch)
    got = backend.predict_batch(batch)
    for g, e, (h, w) in zip(got, expected, sizes):
        assert g.labels.shape == (h, w) and g.scores.shape == (h, w)
        np.testing.assert_array_equal(g.labels, e.labels)
        np.testing.assert_allclose(g.scores, e.scores, atol=1e-4)
        assert g.class_names == e.class_names
    rgb = backend(batch[0][:, :, ::-1].copy(), input_format="RGB")
    np.testing.assert_array_equal(rgb.labels, got[0].labels)


def test_another_vocabulary_and_a_labels_export_are_refused(exported, tmp_path):
    cfg, folder = exported
    backend = OnnxPredictor(str(folder), 64, 128)
    backend(images((64, 64))[0], vocabulary=VOCAB)  # its own vocabulary is fine
    with pytest.raises(UserInputError, match="fixed vocabulary"):
        backend(images((64, 64))[0], vocabulary="cat,dog")
    torch.manual_seed(0)
    options = ExportOptions(formats=("onnx",), height=32, width=32, output_kind="labels")
    export_student(cfg, parse_vocabulary(VOCAB), str(tmp_path), options)
    with pytest.raises(UserInputError, match="--output-kind logits"):
        OnnxPredictor(str(tmp_path))
