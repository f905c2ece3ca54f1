"""OpenVocabularyPredictor: vocabulary per call, cache without CLIP, sizes, colour order, weights."""

import dataclasses
import os

import numpy as np
import open_clip
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from clipzss_d2.checkpoint import IncompatibleWeightsError
from clipzss_d2.errors import UserInputError
from clipzss_d2.modeling.clip_loading import CLIPWeightsUnavailableError
from clipzss_d2.predictor import OpenVocabularyPredictor
from clipzss_d2.utils.weights import WeightsUnavailableError
from clipzss_d2.vocabulary import VocabularyError
from tests.helpers import ROOT, TINY_CLIP, TOY_CLASSES, tiny_cfg

SMALL = ["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128]


def cfg_with(*opts):
    return tiny_cfg(extra_opts=list(SMALL) + list(opts))


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return OpenVocabularyPredictor(cfg_with())


def image(h=50, w=70, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_default_vocabulary_comes_from_the_config(predictor):
    assert predictor.vocabulary == TOY_CLASSES
    result = predictor(image())
    assert result.class_names == TOY_CLASSES
    assert result.labels.max() < len(TOY_CLASSES)


def test_vocabulary_per_call_decides_the_output_classes(predictor):
    img = image()
    ab = predictor(img, vocabulary="cat, dog")
    ba = predictor(img, vocabulary=["dog", "cat"])
    assert ab.class_names == ["cat", "dog"] and ba.class_names == ["dog", "cat"]
    assert set(np.unique(ab.labels)) <= {0, 1}
    # Same classes, other order: ids swap pixel for pixel, scores stay.
    np.testing.assert_array_equal(ba.labels, 1 - ab.labels)
    np.testing.assert_allclose(ba.scores, ab.scores, rtol=1e-5)
    one = predictor(img, vocabulary=["cat"])
    assert (one.labels == 0).all() and np.allclose(one.scores, 1.0)
    five = predictor(img, vocabulary="cat,dog,sofa|couch,tv,grass")
    assert five.vocabulary[2] == "sofa|couch" and five.class_names[2] == "sofa"
    assert five.labels.max() < 5 and not np.allclose(five.scores, ab.scores)
    # A per-call vocabulary does not replace the default one.
    assert predictor.vocabulary == TOY_CLASSES


def test_set_vocabulary_changes_the_default(predictor):
    try:
        assert predictor.set_vocabulary("road,sky|clouds") == ["road", "sky|clouds"]
        assert predictor(image()).class_names == ["road", "sky"]
    finally:
        predictor.set_vocabulary(TOY_CLASSES)
    with pytest.raises(VocabularyError, match="appears twice"):
        predictor.set_vocabulary("cat,Cat")
    with pytest.raises(VocabularyError, match="blank"):
        predictor(image(), vocabulary="cat,,dog")


def test_output_is_at_input_size_and_model_sees_the_test_resize(predictor, monkeypatch):
    seen = []
    forward = predictor.model.forward
    monkeypatch.setattr(
        predictor.model, "forward", lambda batch: seen.extend(batch) or forward(batch)
    )
    result = predictor(image(37, 53))
    assert result.labels.shape == result.scores.shape == (37, 53)
    assert result.labels.dtype == np.int64 and result.scores.dtype == np.float32
    assert ((result.scores > 0) & (result.scores <= 1)).all()
    # ResizeShortestEdge(64, max 128), as detectron2's DefaultPredictor does
    assert tuple(seen[0]["image"].shape) == (3, 64, 92)
    # the model answers with labels and scores (not K logit planes) at the input's 37 x 53
    assert (seen[0]["height"], seen[0]["width"], seen[0]["sem_seg_format"]) == (37, 53, "labels")


@pytest.mark.parametrize("channels_last", [True, False])
def test_labels_equal_the_argmax_of_detectron2s_sem_seg(channels_last):
    """The predictor's labels (model asked for labels) against detectron2's route: the model's
    K x H x W `sem_seg` logits at the input size (sem_seg_postprocess), torch.argmax and
    torch.softmax. At the test size (no resize: the row bands of the upsampling) and at another
    (the chunked resize), channels-last logits and not, and with flip + two scales (the model's
    augmented logits, then the same label routes)."""
    p = OpenVocabularyPredictor(cfg_with("MODEL.CLIPZSS.INFERENCE.CHANNELS_LAST", channels_last))
    vocabulary = ",".join(TOY_CLASSES)
    augmented = dataclasses.replace(p.model.test_time, flip=True, scales=(1.0, 0.75))
    for (h, w), mode in (((64, 64), None), ((64, 96), None), ((37, 53), None),
                         ((64, 64), augmented), ((37, 53), augmented)):  # fmt: skip
        img = image(h, w, seed=h + w)
        result = p(img, vocabulary=vocabulary, test_time=mode)
        x = p._prepare(img, "BGR")  # the resized image, its input size in height / width
        if mode is not None:
            x["test_time"] = mode
        with torch.no_grad():
            logits = p.model([dict(x, vocabulary=result.vocabulary)])[0]["sem_seg"]
        assert logits.shape[-2:] == (h, w)
        np.testing.assert_array_equal(result.labels, logits.argmax(0).numpy())
        np.testing.assert_allclose(
            result.scores, logits.softmax(0).max(0).values.numpy(), rtol=1e-5
        )


def test_bgr_and_rgb_inputs_agree_when_declared(predictor):
    bgr = image(40, 60, seed=1)
    a = predictor(bgr)  # BGR is the default, like DefaultPredictor
    b = predictor(np.ascontiguousarray(bgr[:, :, ::-1]), input_format="RGB")
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    wrong = predictor(bgr, input_format="RGB")
    assert not np.allclose(wrong.scores, a.scores)


def test_grayscale_and_alpha_arrays_are_converted(predictor):
    gray = image(30, 40)[:, :, 0]
    np.testing.assert_array_equal(
        predictor(gray).labels, predictor(np.repeat(gray[:, :, None], 3, axis=2)).labels
    )
    bgra = np.concatenate([image(30, 40), np.full((30, 40, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(predictor(bgra).labels, predictor(bgra[:, :, :3]).labels)


def test_bad_arrays_are_explained(predictor):
    with pytest.raises(TypeError, match="uint8"):
        predictor(image().astype(np.float32) / 255)
    with pytest.raises(ValueError, match="H x W x 3"):
        predictor(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        predictor(np.zeros((0, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="input_format"):
        predictor(image(), input_format="HSV")


def test_batch_equals_one_by_one_for_mixed_sizes(predictor):
    images = [image(50, 70, 1), image(33, 90, 2), image(50, 70, 3)]
    batch = predictor.predict_batch(images, vocabulary="a,b,c")
    for img, res in zip(images, batch):
        single = predictor(img, vocabulary="a,b,c")
        np.testing.assert_array_equal(res.labels, single.labels)
        np.testing.assert_allclose(res.scores, single.scores, rtol=1e-4, atol=1e-6)


def test_images_per_forward_splits_a_batch_without_changing_its_results(monkeypatch):
    """INFERENCE.IMAGES_PER_FORWARD caps the images of one forward pass; 0 (the default) gives
    one per pass on a CPU and the whole group of equal-sized images on a GPU."""
    images = [image(50, 70, seed) for seed in range(5)] + [image(33, 90, 9)]
    passes = {}
    for setting in (0, 2, 6):
        torch.manual_seed(0)  # the same random student each time
        p = OpenVocabularyPredictor(cfg_with("MODEL.CLIPZSS.INFERENCE.IMAGES_PER_FORWARD", setting))
        forward = p.model.forward
        sizes = []

        def counting(inputs, forward=forward, sizes=sizes):
            sizes.append(len(inputs))
            return forward(inputs)

        monkeypatch.setattr(p.model, "forward", counting)
        results = p.predict_batch(images, vocabulary="a,b,c")
        passes[setting] = sizes
        if setting == 0:
            reference, automatic = results, p
        for res, ref in zip(results, reference):
            np.testing.assert_array_equal(res.labels, ref.labels)
            np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-4, atol=1e-6)
    assert passes == {0: [1, 1, 1, 1, 1, 1], 2: [2, 2, 1, 1], 6: [5, 1]}
    monkeypatch.setattr(type(automatic.model), "device", property(lambda _: torch.device("cuda")))
    assert automatic._forward_size(5) == 5  # on a GPU, a group of five in one pass
    with pytest.raises(UserInputError, match="IMAGES_PER_FORWARD"):
        OpenVocabularyPredictor(cfg_with("MODEL.CLIPZSS.INFERENCE.IMAGES_PER_FORWARD", -1))


def test_result_helpers_threshold_and_fractions():
    from clipzss_d2.predictor import SegmentationResult

    res = SegmentationResult(
        labels=np.array([[0, 1], [1, 1]]),
        scores=np.array([[0.9, 0.2], [0.8, 0.6]], np.float32),
        vocabulary=["cat", "sofa|couch"],
    )
    np.testing.assert_array_equal(res.label_map(0.5), [[0, 255], [1, 1]])
    assert res.class_fractions(0.5) == {"sofa": 0.5, "cat": 0.25, "unlabelled": 0.25}
    big = SegmentationResult(res.labels + 300, res.scores, [f"c{i}" for i in range(400)])
    assert big.label_map().dtype == np.uint16 and big.label_map(0.5)[0, 1] == 65535


def test_no_vocabulary_anywhere_is_a_clear_error():
    p = OpenVocabularyPredictor(cfg_with("DATASETS.TEST", ()))
    assert p.vocabulary is None
    with pytest.raises(UserInputError, match="No vocabulary"):
        p(image())
    assert p(image(), vocabulary="cat").class_names == ["cat"]


# -- weights ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny student saved the way training saves it, and the logits it gives."""
    torch.manual_seed(1)
    p = OpenVocabularyPredictor(cfg_with())
    folder = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(p.model, save_dir=str(folder)).save("model_final")
    return str(folder / "model_final.pth"), p


def test_trained_weights_are_loaded(checkpoint):
    path, original = checkpoint
    loaded = OpenVocabularyPredictor(cfg_with("MODEL.WEIGHTS", path))
    # same CLIP text embeddings for the comparison (the tiny CLIP is random per build)
    loaded.model.text_classifier = original.model.text_classifier
    img = image(seed=5)
    np.testing.assert_allclose(loaded(img).scores, original(img).scores, rtol=1e-5)


def test_missing_weights_file_is_explained(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        OpenVocabularyPredictor(cfg_with("MODEL.WEIGHTS", str(tmp_path / "nope.pth")))


def test_weights_of_another_config_are_an_error_naming_the_config(checkpoint, tmp_path):
    path, _ = checkpoint
    cfg = cfg_with("MODEL.WEIGHTS", path, "MODEL.CLIPZSS.EMBED_DIM", 16)
    config_file = tmp_path / "other.yaml"
    config_file.write_text(cfg.dump())
    with pytest.raises(IncompatibleWeightsError, match="other.yaml") as e:
        OpenVocabularyPredictor.from_config_file(str(config_file))
    assert "embedding_head.projection.weight" in str(e.value)
    assert "(32, 16, 1, 1) in the checkpoint vs (16, 16, 1, 1)" in str(e.value)


def test_backbone_only_or_corrupt_weights_are_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    state = torch.load(path, weights_only=True)["model"]
    partial = {k: v for k, v in state.items() if k.startswith("backbone.")}
    torch.save({"model": partial}, tmp_path / "backbone.pth")
    with pytest.raises(IncompatibleWeightsError, match="missing.*embedding_head"):
        OpenVocabularyPredictor(cfg_with("MODEL.WEIGHTS", str(tmp_path / "backbone.pth")))
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(IncompatibleWeightsError, match="could not be read"):
        OpenVocabularyPredictor(cfg_with("MODEL.WEIGHTS", str(tmp_path / "junk.pth")))


# -- text embeddings: cache hit needs no CLIP -----------------------------------------------------
def test_cached_vocabulary_needs_no_clip_weights(tmp_path):
    torch.manual_seed(0)
    clip_file = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), clip_file)
    opts = [
        "MODEL.CLIPZSS.CLIP.PRETRAINED",
        str(clip_file),
        "MODEL.CLIPZSS.CLIP.ACTIVATION",
        "gelu",
    ]
    opts += ["MODEL.CLIPZSS.TEXT.CACHE_DIR", str(tmp_path / "cache")]
    torch.manual_seed(3)
    first = OpenVocabularyPredictor(cfg_with(*opts), vocabulary="cat,sofa|couch")
    assert first.model.text_classifier.clip_loaded
    DetectionCheckpointer(first.model, save_dir=str(tmp_path)).save("student")
    img = image(seed=7)
    expected = first(img)

    os.remove(clip_file)  # a deployment without CLIP weights, only the cache
    second = OpenVocabularyPredictor(
        cfg_with(*opts, "MODEL.WEIGHTS", str(tmp_path / "student.pth")),
        vocabulary="cat,sofa|couch",
    )
    got = second(img)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)
    assert not second.model.text_classifier.clip_loaded
    # A vocabulary missing from the cache needs CLIP, and says which weights it looked for.
    with pytest.raises(CLIPWeightsUnavailableError, match="does not exist"):
        second.set_vocabulary("cat,dog")


# -- full-size results without full-size logits --------------------------------------------------
def test_labels_and_scores_by_class_chunks_equal_the_full_resize():
    """_to_result against detectron2's sem_seg_postprocess of all K planes, then argmax and a
    softmax: equal labels (ties across chunk borders included), scores within float rounding."""
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    from clipzss_d2.predictor import _to_result

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 23, 31, generator=g) * 4
    logits[5] = logits[2]  # a tie across the border of 3-class chunks: the earlier class wins
    logits[30, :5] = logits[:, :5].max(0).values + 1  # a late chunk takes some pixels over
    full = sem_seg_postprocess(logits, (23, 31), 97, 130)
    probs = full.softmax(0)
    for budget in (3 * 97 * 130, 7 * 97 * 130, 1 << 30):
        result = _to_result(logits, [f"c{i}" for i in range(37)], (97, 130), budget)
        np.testing.assert_array_equal(result.labels, full.argmax(0).numpy())
        np.testing.assert_allclose(result.scores, probs.max(0).values.numpy(), rtol=1e-5)
    assert (result.labels == 30).any() and not (result.labels == 5).any()


def test_a_large_image_with_many_classes_stays_within_memory(tmp_path):
    """2048 x 2048 px over 171 classes: K full-size logit planes would be 2.9 GB; the predictor
    peaks far lower (peak RSS measured in a fresh process)."""
    import subprocess
    import sys

    script = """
import resource, sys, numpy as np, torch
from tests.helpers import ROOT, tiny_cfg
from clipzss_d2.predictor import OpenVocabularyPredictor
names = [f"class {i}" for i in range(171)]
p = OpenVocabularyPredictor(tiny_cfg(extra_opts=["INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 128, "MODEL.CLIPZSS.TEST_VOCABULARY", names]))
p(np.zeros((64, 64, 3), np.uint8))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
result = p(image)
assert result.labels.shape == (2048, 2048)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    root = ROOT
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="2"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth_mb = int(proc.stdout.split()[-1])
    assert growth_mb < 700, f"peak memory grew by {growth_mb} MB"
