import logging
import os

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipzss_d2.modeling import clip_loading
from clipzss_d2.modeling.clip_loading import CLIPWeightsUnavailableError, create_clip_model
from clipzss_d2.modeling.text_classifier import TEMPLATE_SETS, VILD_TEMPLATES, TextClassifier
from clipzss_d2.vocabulary import VocabularyError
from tests.helpers import TINY_CLIP

CLASSES = ["cat", "sofa", "tv monitor", "grass"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A random tiny CLIP saved like a real open_clip checkpoint (state_dict file)."""
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def make(tiny_weights, **kw):
    kw.setdefault("templates", "vild")
    kw.setdefault("activation", "gelu")  # how open_clip.create_model(TINY_CLIP) was built
    return TextClassifier(TINY_CLIP, tiny_weights, **kw)


def test_template_sets_have_published_sizes():
    assert len(TEMPLATE_SETS["single"]) == 1
    assert len(TEMPLATE_SETS["vild"]) == 14
    assert len(TEMPLATE_SETS["imagenet"]) == 80
    assert all("{}" in t for ts in TEMPLATE_SETS.values() for t in ts)


def test_shapes_and_normalisation(tiny_weights):
    emb = make(tiny_weights)(CLASSES)
    assert emb.shape == (4, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("templates", ["single", "vild", "imagenet"])
def test_matches_open_clip_zero_shot_classifier(tiny_weights, templates):
    clf = make(tiny_weights, templates=templates)
    ours = clf(CLASSES)
    model = create_clip_model(TINY_CLIP, tiny_weights, activation="gelu")
    reference = open_clip.build_zero_shot_classifier(
        model,
        open_clip.get_tokenizer(TINY_CLIP),
        CLASSES,
        list(TEMPLATE_SETS[templates]),
        num_classes_per_batch=2,
    ).T
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_cache_miss_loads_the_text_tower_only(tiny_weights, tmp_path, caplog, monkeypatch):
    """On a cache miss the classifier loads and holds CLIP's text tower, never its image tower,
    and encodes exactly as open_clip's full model with those weights."""
    reference = open_clip.create_model(TINY_CLIP).eval()
    reference.load_state_dict(torch.load(tiny_weights))
    text_numel = sum(p.numel() for n, p in reference.named_parameters() if "visual" not in n)
    image_numel_at_load = []  # image-tower parameters of each model weights are loaded into
    load = torch.nn.Module.load_state_dict

    def spy(module, *args, **kwargs):
        visual = getattr(module, "visual", None)
        image_numel_at_load.append(sum(p.numel() for p in visual.parameters()) if visual else 0)
        return load(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", spy)
    clf = make(tiny_weights, cache_dir=str(tmp_path))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ours = clf(CLASSES)
    assert image_numel_at_load == [0]
    assert clf.clip_loaded and clf._clip.visual is None
    assert sum(p.numel() for p in clf._clip.parameters()) == text_numel
    assert "initialized randomly" not in caplog.text  # the weights were loaded
    expected = open_clip.build_zero_shot_classifier(
        reference, open_clip.get_tokenizer(TINY_CLIP), CLASSES, list(VILD_TEMPLATES)
    ).T
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # the disk cache is keyed as before, and a fresh classifier reads it without CLIP
    assert clf.cache_key(CLASSES) == {
        "format": "1",
        "model": TINY_CLIP,
        "pretrained": tiny_weights,
        "activation": "gelu",
        "templates": list(VILD_TEMPLATES),
        "classes": CLASSES,
    }
    warm = make(tiny_weights, cache_dir=str(tmp_path))
    torch.testing.assert_close(warm(CLASSES), ours)
    assert not warm.clip_loaded


def test_building_clip_draws_nothing_from_the_training_rng(tiny_weights):
    """A cache miss builds the text tower mid-training, a hit does not: building must leave the
    global RNG where it was, or a run would depend on its cache. Random weights ('none') are one
    fixed draw, the same whatever the RNG state when they are first needed."""
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    for pretrained, text_only in ((tiny_weights, True), (tiny_weights, False), ("none", True)):
        create_clip_model(TINY_CLIP, pretrained, activation="gelu", text_only=text_only)
        assert torch.equal(torch.random.get_rng_state(), before), (pretrained, text_only)
    first = create_clip_model(TINY_CLIP, "none", activation="gelu").state_dict()
    torch.manual_seed(7)
    again = create_clip_model(TINY_CLIP, "none", activation="gelu").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_synonyms_are_averaged(tiny_weights):
    clf = make(tiny_weights)
    sofa, couch, both = clf(["sofa", "couch", "sofa|couch"])
    torch.testing.assert_close(both, F.normalize(sofa + couch, dim=0), atol=1e-6, rtol=1e-5)


def test_chunk_size_does_not_change_result(tiny_weights):
    big = make(tiny_weights, chunk_size=1000)(CLASSES)
    small = make(tiny_weights, chunk_size=3)(CLASSES)
    torch.testing.assert_close(big, small, atol=1e-6, rtol=1e-5)


def test_disk_cache_round_trip_needs_no_clip(tiny_weights, tmp_path):
    first = make(tiny_weights, cache_dir=str(tmp_path))
    emb = first(CLASSES)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob(".tmp*"))

    # A fresh process-like classifier whose weights file no longer exists: the cache suffices.
    moved = tiny_weights + ".moved"
    os.rename(tiny_weights, moved)
    try:
        second = make(tiny_weights, cache_dir=str(tmp_path))
        torch.testing.assert_close(second(CLASSES), emb)
        assert not second.clip_loaded
    finally:
        os.rename(moved, tiny_weights)


def test_disk_cache_is_keyed_by_vocabulary_and_templates(tiny_weights, tmp_path):
    make(tiny_weights, cache_dir=str(tmp_path))(CLASSES)
    make(tiny_weights, cache_dir=str(tmp_path))(CLASSES[:2])
    make(tiny_weights, cache_dir=str(tmp_path), templates="single")(CLASSES)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_cache_notices_replaced_weights(tiny_weights, tmp_path):
    path = tmp_path / "w.pt"
    torch.manual_seed(1)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), path)
    old = make(str(path), cache_dir=str(tmp_path / "c"))(CLASSES)
    torch.manual_seed(2)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), path)
    os.utime(path, ns=(1, 1))  # guarantee a different fingerprint even on coarse clocks
    fresh = make(str(path), cache_dir=str(tmp_path / "c"))
    new = fresh(CLASSES)
    assert fresh.clip_loaded
    assert not torch.allclose(old, new)


def test_corrupt_cache_is_recomputed(tiny_weights, tmp_path):
    clf = make(tiny_weights, cache_dir=str(tmp_path))
    emb = clf(CLASSES)
    path = clf.cache_path(CLASSES)
    with open(path, "wb") as f:
        f.write(b"not a safetensors file")
    torch.testing.assert_close(make(tiny_weights, cache_dir=str(tmp_path))(CLASSES), emb)


def test_memory_cache_reuses_per_class(tiny_weights):
    clf = make(tiny_weights)
    a = clf(["cat", "sofa"])
    b = clf(["sofa", "cat", "grass"])
    torch.testing.assert_close(b[0], a[1])
    torch.testing.assert_close(b[1], a[0])


def test_empty_vocabulary_is_refused(tiny_weights):
    with pytest.raises(VocabularyError, match="empty"):
        make(tiny_weights)([])


def test_unknown_template_set_is_refused():
    with pytest.raises(ValueError, match="MODEL.CLIPZSS.TEXT.TEMPLATES"):
        TextClassifier(TINY_CLIP, "none", templates="fancy")


def test_offline_tag_fails_fast_with_config_key(monkeypatch, tmp_path):
    monkeypatch.setattr(clip_loading, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(CLIPWeightsUnavailableError, match="MODEL.CLIPZSS.CLIP.PRETRAINED") as e:
        create_clip_model("ViT-B-16", "openai", cache_dir=str(tmp_path))
    assert "local file path" in str(e.value)


def test_missing_weights_file_and_unknown_tag_are_explained():
    with pytest.raises(CLIPWeightsUnavailableError, match="does not exist"):
        create_clip_model(TINY_CLIP, "/nonexistent/clip.pt")
    with pytest.raises(
        CLIPWeightsUnavailableError, match="neither a file nor a known open_clip tag"
    ):
        create_clip_model("ViT-B-16", "no-such-tag")
    with pytest.raises(ValueError, match="Unknown CLIP architecture"):
        create_clip_model("ViT-Z-99", "none")


def test_a_loaded_cache_is_checked(tiny_weights, tmp_path):
    """Through the config keys (build_text_classifier): a cache of another width is one line
    naming EMBED_DIM; one with NaN or a wrong shape is recomputed, as a corrupt one is."""
    from clipzss_d2.errors import UserInputError
    from clipzss_d2.modeling.text_classifier import build_text_classifier
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg(
        extra_opts=["MODEL.CLIPZSS.CLIP.PRETRAINED", tiny_weights,
                    "MODEL.CLIPZSS.CLIP.ACTIVATION", "gelu",
                    "MODEL.CLIPZSS.TEXT.CACHE_DIR", str(tmp_path)]
    )  # fmt: skip
    width = cfg.MODEL.CLIPZSS.EMBED_DIM
    fresh = build_text_classifier(cfg)(CLASSES)
    writer = build_text_classifier(cfg)
    for planted in (torch.full((4, width), float("nan")), torch.zeros(3, width)):
        writer._save_disk_cache(CLASSES, planted)
        reader = build_text_classifier(cfg)
        torch.testing.assert_close(reader(CLASSES), fresh)
        assert reader.clip_loaded  # recomputed, not read
    writer._save_disk_cache(CLASSES, F.normalize(torch.randn(4, 2 * width), dim=-1))
    with pytest.raises(UserInputError) as error:
        build_text_classifier(cfg)(CLASSES)
    message = str(error.value)
    assert "\n" not in message and f"{2 * width}-wide embeddings" in message
    assert f"MODEL.CLIPZSS.EMBED_DIM is {width}" in message
